"""The prune stage on tiny seeded models: channels removed, heads kept, recovery, refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from edgekit.data import Dataset  # noqa: E402
from edgekit.errors import ConfigError, InputError  # noqa: E402
from edgekit.pipeline import BuildContext, BuildState  # noqa: E402
from edgekit.pruning import sparse  # noqa: E402
from edgekit.recipe import build_recipe  # noqa: E402
from edgekit.stages.prune import PruneStage  # noqa: E402
from edgekit.targets import load_target  # noqa: E402
from tests.tiny_models import tiny_cnn  # noqa: E402


class _Backend:
    """Stands in for a backend: the prune stage reads only its name."""

    def __init__(self, name: str) -> None:
        self.name = name


def _ctx(
    tmp_path: Path, prune: dict[str, Any], backend: str = "executorch", target: str = "android", **layer: Any
) -> BuildContext:
    spec = load_target(target)
    if "options" in layer:
        spec = dataclasses.replace(spec, options={**spec.options, **layer.pop("options")})
    recipe = build_recipe(spec.defaults, {"prune": prune, **layer})
    return BuildContext(recipe=recipe, target=spec, backend=_Backend(backend), workdir=tmp_path)  # type: ignore[arg-type]


def _state(model: Any, labels: bool = True) -> BuildState:
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    evaluation = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        cal_labels = model(torch.from_numpy(calibration)).argmax(1).numpy() if labels else None
        ev_labels = model(torch.from_numpy(evaluation)).argmax(1).numpy() if labels else None
    data = Dataset(
        calibration=calibration, evaluation=evaluation, calibration_labels=cal_labels, evaluation_labels=ev_labels
    )
    example = calibration[:1]
    return BuildState(float_model=model, model=model, example_input=example, data=data)


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _quick(**extra: Any) -> dict[str, Any]:
    return {"ratio": 0.5, "recovery": {"steps": 30, "batch_size": 16, "learning_rate": 1e-2}, **extra}


def test_structured_removes_channels_and_keeps_output_shape(tmp_path: Path) -> None:
    model = tiny_cnn()
    state = _state(model)

    out = PruneStage().run(state, _ctx(tmp_path, _quick()))

    pruned = out.model
    assert _params(pruned) < _params(model)
    assert pruned.features[0].out_channels == 4 and pruned.features[4].out_channels == 8
    x = torch.from_numpy(state.example_input)
    assert pruned(x).shape == model(x).shape
    facts = out.facts["prune"]
    assert facts["parameters"]["after"] < facts["parameters"]["before"]
    assert facts["macs"]["after"] < facts["macs"]["before"]
    assert facts["method"] == "structured" and "features.0" in facts["channels_changed"]


def test_classifier_head_is_kept(tmp_path: Path) -> None:
    out = PruneStage().run(_state(tiny_cnn()), _ctx(tmp_path, _quick()))

    assert out.model.classifier.out_features == 10
    assert out.facts["prune"]["kept_layers"][0] == "classifier"


def test_keep_layers_are_not_pruned(tmp_path: Path) -> None:
    out = PruneStage().run(_state(tiny_cnn()), _ctx(tmp_path, _quick(keep_layers=["features.0"])))

    assert out.model.features[0].out_channels == 8
    assert out.model.features[4].out_channels == 8
    assert "features.0" in out.facts["prune"]["kept_layers"]


def test_unknown_keep_layer_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keep_layers"):
        PruneStage().run(_state(tiny_cnn()), _ctx(tmp_path, _quick(keep_layers=["features.9"])))


def test_recovery_lowers_the_distillation_loss(tmp_path: Path) -> None:
    out = PruneStage().run(_state(tiny_cnn(), labels=False), _ctx(tmp_path, _quick()))

    recovery = out.facts["prune"]["recovery"]
    assert recovery["mode"] == "distill" and recovery["steps"] == 30
    assert recovery["loss_after"] < recovery["loss_before"]
    assert out.facts["prune"]["top1_before_recovery"] is None  # no labels, no accuracy
    assert not out.model.training


def test_finetune_with_labels_reports_accuracy_before_and_after(tmp_path: Path) -> None:
    out = PruneStage().run(
        _state(tiny_cnn()),
        _ctx(tmp_path, _quick(recovery={"mode": "finetune", "steps": 30, "batch_size": 16, "learning_rate": 1e-2})),
    )

    facts = out.facts["prune"]
    assert facts["float_top1"] == 100.0  # labels are the float model's own predictions
    assert facts["top1_before_recovery"] is not None and facts["top1_after_recovery"] is not None
    assert facts["recovery"]["loss_after"] < facts["recovery"]["loss_before"]


def test_finetune_without_labels_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="labelled"):
        PruneStage().run(_state(tiny_cnn(), labels=False), _ctx(tmp_path, _quick(recovery={"mode": "finetune"})))


def test_users_model_and_float_model_are_not_mutated(tmp_path: Path) -> None:
    model = tiny_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = _state(model)

    out = PruneStage().run(state, _ctx(tmp_path, _quick()))

    assert out.float_model is model and out.model is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert out.baseline is state.baseline


@pytest.mark.parametrize("method", ["unstructured", "n:m"])
def test_sparse_methods_on_android_or_rpi_are_refused(tmp_path: Path, method: str) -> None:
    for backend in ("executorch", "onnxruntime"):
        with pytest.raises(ConfigError, match="structured") as err:
            PruneStage().run(_state(tiny_cnn()), _ctx(tmp_path, _quick(method=method), backend=backend))
        assert "would not shrink" in err.value.message


def test_ratio_out_of_range_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ratio"):
        PruneStage().run(_state(tiny_cnn()), _ctx(tmp_path, _quick(ratio=1.0)))


def test_exported_graph_module_asks_for_the_python_class(tmp_path: Path) -> None:
    model = tiny_cnn()
    graph = torch.export.export(model, (torch.zeros(1, 1, 8, 8),)).module()
    state = _state(model).evolve(float_model=graph, model=graph)

    with pytest.raises(InputError, match="Python class") as err:
        PruneStage().run(state, _ctx(tmp_path, _quick()))
    assert "MODULE:FACTORY" in (err.value.hint or "")


def test_unstructured_on_coreml_zeroes_weights_and_holds_them_through_recovery(tmp_path: Path) -> None:
    pytest.importorskip("coremltools")
    model = tiny_cnn()
    # TinyCNN's weights are all under Core ML's 2048-element threshold: sparsify with a lower one.
    ctx = _ctx(
        tmp_path,
        _quick(method="unstructured"),
        backend="coreml",
        target="ios",
        quantize={"scheme": "fp16"},
        options={"weight_threshold": 64},
    )

    out = PruneStage().run(_state(model), ctx)

    conv = out.model.features[4].weight
    assert abs(float((conv == 0).float().mean()) - 0.5) < 0.01
    assert out.model.classifier.weight.ne(0).all()  # the head stays dense
    assert out.facts["prune"]["sparsity"]["per_layer"]["features.4"] == pytest.approx(0.5, abs=0.01)
    assert out.facts["prune"]["recovery"]["loss_after"] < out.facts["prune"]["recovery"]["loss_before"]


def test_n_of_m_masks_zero_n_in_every_group() -> None:
    layer = torch.nn.Linear(8, 3)
    masks = sparse.n_of_m_masks(torch.nn.Sequential(layer), ["0"], n=2, m=4)

    groups = masks["0"].reshape(3, 2, 4)
    assert torch.all(groups.sum(dim=2) == 2)


def test_sparse_int8_on_ios17_is_refused_with_a_hint(tmp_path: Path) -> None:
    pytest.importorskip("coremltools")
    ctx = _ctx(tmp_path, _quick(method="unstructured"), backend="coreml", target="ios")

    with pytest.raises(ConfigError, match="iOS 18") as err:
        PruneStage().run(_state(tiny_cnn()), ctx)
    assert "iOS18" in (err.value.hint or "")


def test_sparse_to_dense_decodes_both_mask_layouts() -> None:
    pytest.importorskip("coremltools")
    from edgekit.backends.coreml.proxy import sparse_to_dense

    dense = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, 3.0]], dtype=np.float32)
    mask = dense != 0
    packed = np.packbits(mask.reshape(-1), bitorder="little")  # iOS16: bytes of bits, LSB first

    assert np.array_equal(sparse_to_dense(dense[mask], mask.astype(np.uint8)), dense)
    assert np.array_equal(sparse_to_dense(dense[mask], packed, np.array(dense.shape, np.uint32)), dense)


def test_sparse_w8_core_ml_package_is_sparse_and_its_proxy_runs(tmp_path: Path) -> None:
    pytest.importorskip("coremltools")
    from collections import Counter

    from edgekit.backends import get_backend
    from edgekit.backends.coreml import proxy as mil
    from edgekit.modelio import run_torch

    backend = get_backend("coreml")
    ctx = _ctx(
        tmp_path,
        _quick(method="unstructured"),
        target="ios",
        quantize={"scheme": "w8"},
        options={"weight_threshold": 64, "minimum_deployment_target": "iOS18"},
    )
    ctx.backend = backend
    state = PruneStage().run(_state(tiny_cnn()), ctx)

    state = backend.quantize(backend.export(state, ctx), ctx)

    ops = Counter(op.op_type for op in mil.load_program(state.artifact).functions["main"].operations)
    assert ops["constexpr_sparse_to_dense"] >= 1 and ops["constexpr_sparse_blockwise_shift_scale"] >= 1
    proxy = backend.runner(state, ctx).run(state.data.evaluation[:8])
    expected = run_torch(state.model, state.data.evaluation[:8])
    assert np.corrcoef(proxy.ravel(), expected.ravel())[0, 1] > 0.99
    facts = state.facts["quantize"]  # sparse int8 weights count as quantized, and as sparse
    assert facts["sparse_weights"] >= 1 and facts["quantized_weights"] >= facts["sparse_weights"]
    assert "constexpr_sparse_to_dense" in facts["constexpr_ops"]
