"""The prune stage on tiny seeded models: channels removed, heads kept, recovery checked on held-out data."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch_pruning  # noqa: F401 - the prune extra: a broken install fails here instead of skipping

from edgekit.api import resolve
from edgekit.backends import get_backend
from edgekit.backends.coreml import proxy
from edgekit.data import Dataset
from edgekit.errors import ConfigError, InputError
from edgekit.pipeline import BuildContext, BuildState, Plan
from edgekit.pruning import sparse
from edgekit.recipe import build_recipe, parse_table
from edgekit.stages.prune import PruneStage
from edgekit.targets import load_target
from tests.tiny_models import TinyCNN, compile_tiny, tiny_cnn, torch_outputs

RECOVERY = {"steps": 30, "batch_size": 16, "learning_rate": 1e-2}
NO_RECOVERY = {"mode": "none"}


def _ctx(tmp_path: Path, target: str = "android", options: dict[str, Any] | None = None, **recipe: Any) -> BuildContext:
    """Return a build context for `target` with its [options] (plus `options`) and recipe sections `recipe`."""
    spec = load_target(target)
    backend = get_backend(spec.backend)
    parsed = parse_table(backend.Options, {**spec.options, **(options or {})}, "options", what="option")
    plan = Plan(target=spec, recipe=build_recipe(spec.defaults, recipe), backend=backend, options=parsed)
    return BuildContext(plan=plan, workdir=tmp_path)


def _prune(**extra: Any) -> dict[str, Any]:
    return {"ratio": 0.5, "recovery": NO_RECOVERY, **extra}


def _state(model: Any, data: Dataset) -> BuildState:
    example = data.calibration["input"][:1]
    return BuildState(
        float_model=model, model=model, example_input=example, example_inputs={"input": example}, data=data
    )


@pytest.fixture(scope="module")
def noise() -> Dataset:
    """Unlabelled random inputs: enough for what pruning does to a model's structure."""
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((128, 1, 8, 8)).astype(np.float32)
    return Dataset(calibration={"input": inputs[:64]}, evaluation={"input": inputs[64:]})


def stripes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return noisy 8x8 stripes and their orientation (0 horizontal, 1 vertical, 2 and 3 diagonal) as labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, count)
    y, x = np.mgrid[0:8, 0:8]
    coordinate = np.stack([y, x, x + y, x - y])[labels]
    phase = rng.uniform(0, 2 * np.pi, (count, 1, 1))
    images = np.sin(2 * np.pi * coordinate / 4 + phase) + rng.standard_normal((count, 8, 8))
    return images[:, None].astype(np.float32), labels.astype(np.int64)


@pytest.fixture(scope="module")
def stripes_task() -> tuple[torch.nn.Module, Dataset]:
    """Return a TinyCNN trained to tell stripe orientations apart, and labelled data it never saw."""
    torch.manual_seed(0)
    model = TinyCNN(classes=4)
    train_x, train_y = (torch.from_numpy(a) for a in stripes(512, seed=100))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(100):
        batch = torch.randint(0, len(train_x), (64,), generator=order)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(train_x[batch]), train_y[batch]).backward()
        optimizer.step()
    (calibration, calibration_labels), (evaluation, evaluation_labels) = stripes(128, seed=1), stripes(256, seed=2)
    data = Dataset(
        calibration={"input": calibration},
        evaluation={"input": evaluation},
        calibration_labels=calibration_labels,
        evaluation_labels=evaluation_labels,
    )
    return model.eval(), data


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _held_out_mse(model: Any, reference: Any, inputs: np.ndarray) -> float:
    return float(np.mean((torch_outputs(model, inputs) - torch_outputs(reference, inputs)) ** 2))


def test_structured_removes_channels_and_keeps_output_shape(tmp_path: Path, noise: Dataset) -> None:
    model = tiny_cnn()
    state = _state(model, noise)

    out = PruneStage().run(state, _ctx(tmp_path, prune=_prune()))

    pruned = out.model
    assert _params(pruned) < _params(model)
    assert pruned.features[0].out_channels == 4 and pruned.features[4].out_channels == 8
    x = torch.from_numpy(state.example_input)
    assert pruned(x).shape == model(x).shape
    facts = out.facts["prune"]
    assert facts["parameters"] == {
        "before": _params(model),
        "after": _params(pruned),
        "ratio": facts["parameters"]["ratio"],
    }
    assert facts["macs"]["after"] < facts["macs"]["before"]
    assert facts["method"] == "structured" and "features.0" in facts["channels_changed"]


def test_classifier_head_is_kept(tmp_path: Path, noise: Dataset) -> None:
    out = PruneStage().run(_state(tiny_cnn(), noise), _ctx(tmp_path, prune=_prune()))

    assert out.model.classifier.out_features == 10
    assert out.facts["prune"]["kept_layers"][0] == "classifier"


def test_keep_layers_are_not_pruned(tmp_path: Path, noise: Dataset) -> None:
    out = PruneStage().run(_state(tiny_cnn(), noise), _ctx(tmp_path, prune=_prune(keep_layers=["features.0"])))

    assert out.model.features[0].out_channels == 8
    assert out.model.features[4].out_channels == 8
    assert "features.0" in out.facts["prune"]["kept_layers"]


def test_unknown_keep_layer_is_a_config_error(tmp_path: Path, noise: Dataset) -> None:
    with pytest.raises(ConfigError, match="keep_layers") as caught:
        PruneStage().run(_state(tiny_cnn(), noise), _ctx(tmp_path, prune=_prune(keep_layers=["features.9"])))

    assert "features.9" in caught.value.message


def test_distillation_brings_held_out_outputs_back_toward_the_float_model(tmp_path: Path, stripes_task) -> None:
    model, labelled = stripes_task
    data = dataclasses.replace(labelled, calibration_labels=None, evaluation_labels=None)

    bare = PruneStage().run(_state(model, data), _ctx(tmp_path, prune=_prune()))
    out = PruneStage().run(_state(model, data), _ctx(tmp_path, prune=_prune(recovery={"mode": "distill", **RECOVERY})))

    # The evaluation inputs are not the calibration inputs recovery trains on.
    before = _held_out_mse(bare.model, model, data.evaluation["input"])
    after = _held_out_mse(out.model, model, data.evaluation["input"])
    assert after < 0.5 * before
    recovery = out.facts["prune"]["recovery"]
    assert recovery["mode"] == "distill" and recovery["steps"] == 30
    assert "no labels used" in recovery["data"]
    assert out.facts["prune"]["top1_before_recovery"] is None  # no labels, no accuracy
    assert not out.model.training


def test_finetune_recovers_held_out_accuracy_on_real_labels(tmp_path: Path, stripes_task) -> None:
    model, data = stripes_task

    out = PruneStage().run(_state(model, data), _ctx(tmp_path, prune=_prune(recovery={"mode": "finetune", **RECOVERY})))

    facts = out.facts["prune"]
    assert facts["recovery"]["mode"] == "finetune" and facts["recovery"]["steps"] == 30
    assert facts["float_top1"] >= 90.0  # the trained model on labels it was not trained on
    assert facts["top1_before_recovery"] < facts["float_top1"] - 20.0  # half the channels gone hurts
    assert facts["top1_after_recovery"] > facts["top1_before_recovery"] + 20.0
    assert facts["top1_after_recovery"] == pytest.approx(
        100.0 * float(np.mean(torch_outputs(out.model, data.evaluation["input"]).argmax(1) == data.evaluation_labels)),
        abs=1e-3,
    )


def test_finetune_without_labels_is_a_config_error(tmp_path: Path, noise: Dataset) -> None:
    with pytest.raises(ConfigError, match="labelled"):
        PruneStage().run(_state(tiny_cnn(), noise), _ctx(tmp_path, prune=_prune(recovery={"mode": "finetune"})))


def test_users_model_and_float_model_are_not_mutated(tmp_path: Path, noise: Dataset) -> None:
    model = tiny_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = _state(model, noise)

    out = PruneStage().run(state, _ctx(tmp_path, prune=_prune(recovery={"mode": "distill", **RECOVERY})))

    assert out.float_model is model and out.model is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert out.baseline is state.baseline


@pytest.mark.parametrize("target", ["android", "rpi"])
@pytest.mark.parametrize("method", ["unstructured", "n:m"])
def test_sparse_methods_are_refused_where_the_runtime_stores_zeros_densely(target: str, method: str) -> None:
    with pytest.raises(ConfigError, match="would not shrink") as caught:
        resolve(target, overrides=("prune.ratio=0.5", f'prune.method="{method}"'))

    assert "structured" in (caught.value.hint or "")


def test_sparse_int8_below_ios18_is_refused_with_a_hint() -> None:
    overrides = ("prune.ratio=0.5", 'prune.method="unstructured"', 'quantize.scheme="w8"')

    with pytest.raises(ConfigError, match="iOS 18") as caught:
        resolve("ios", overrides=overrides)

    assert "iOS18" in (caught.value.hint or "")
    assert resolve("ios18", overrides=overrides).recipe.prune.method.value == "unstructured"


def test_exported_graph_module_asks_for_the_python_class(tmp_path: Path, noise: Dataset) -> None:
    model = tiny_cnn()
    graph = torch.export.export(model, (torch.zeros(1, 1, 8, 8),)).module()
    state = _state(model, noise).evolve(float_model=graph, model=graph)

    with pytest.raises(InputError, match="Python class") as err:
        PruneStage().run(state, _ctx(tmp_path, prune=_prune()))

    assert "MODULE:FACTORY" in (err.value.hint or "")


def test_unstructured_on_coreml_zeroes_weights_and_holds_them_through_recovery(tmp_path: Path, noise: Dataset) -> None:
    model = tiny_cnn()
    # TinyCNN's weights are all under Core ML's 2048-element threshold: sparsify with a lower one.
    options = {"weight_threshold": 64}
    masked = _ctx(tmp_path, "ios", options, prune=_prune(method="unstructured"))
    recovered = _ctx(
        tmp_path, "ios", options, prune=_prune(method="unstructured", recovery={"mode": "distill", **RECOVERY})
    )

    bare = PruneStage().run(_state(model, noise), masked)
    out = PruneStage().run(_state(model, noise), recovered)

    conv, conv_before = out.model.features[4].weight, bare.model.features[4].weight
    assert float((conv == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    assert torch.equal(conv == 0, conv_before == 0)  # the zeros recovery started from are still zeros
    assert not torch.equal(conv, conv_before)  # while the weights left were trained
    assert out.model.classifier.weight.ne(0).all()  # the head stays dense
    facts = out.facts["prune"]
    assert facts["sparsity"]["per_layer"]["features.4"] == pytest.approx(0.5, abs=0.01)
    assert facts["stored_sparse_by"] == "coreml" and facts["recovery"]["steps"] == 30


def test_sparsifying_no_layer_is_a_warning(tmp_path: Path, noise: Dataset) -> None:
    model = tiny_cnn()

    out = PruneStage().run(_state(model, noise), _ctx(tmp_path, "ios", prune=_prune(method="unstructured")))

    assert any("nothing was sparsified" in w for w in out.warnings)  # every weight is under 2048 elements
    assert all(torch.equal(a, b) for a, b in zip(out.model.parameters(), model.parameters(), strict=True))


def test_n_of_m_masks_zero_n_in_every_group() -> None:
    layer = torch.nn.Linear(8, 3)

    masks = sparse.n_of_m_masks(torch.nn.Sequential(layer), ["0"], n=2, m=4)

    groups = masks["0"].reshape(3, 2, 4)
    assert torch.all(groups.sum(dim=2) == 2)


def test_sparse_to_dense_decodes_both_mask_layouts() -> None:
    dense = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, 3.0]], dtype=np.float32)
    mask = dense != 0
    packed = np.packbits(mask.reshape(-1), bitorder="little")  # iOS16: bytes of bits, LSB first

    unpacked = proxy.sparse_to_dense(dense[mask], mask.astype(np.uint8))

    assert np.array_equal(unpacked, dense)
    assert np.array_equal(proxy.sparse_to_dense(dense[mask], packed, np.array(dense.shape, np.uint32)), dense)


def test_the_zeros_the_stage_makes_ship_as_a_sparse_int8_core_ml_package(tmp_path: Path, noise: Dataset) -> None:
    options = {"weight_threshold": 64, "minimum_deployment_target": "iOS18"}
    ctx = _ctx(tmp_path, "ios", options, prune=_prune(method="unstructured"), quantize={"scheme": "w8"})
    state = PruneStage().run(_state(tiny_cnn(), noise), ctx)

    build = compile_tiny(
        "coreml",
        state.model,
        state.example_input,
        noise.calibration["input"],
        "w8",
        tmp_path / "coreml",
        sparse_weights=True,
        **options,
    )

    sparsified = [name for name, share in state.facts["prune"]["sparsity"]["per_layer"].items() if share > 0]
    ops = Counter(op.op_type for op in proxy.load_program(build.compiled.artifact).functions["main"].operations)
    assert ops["constexpr_sparse_to_dense"] == len(sparsified) == 2  # features.0 and features.4, not the head
    assert ops["constexpr_sparse_blockwise_shift_scale"] == len(sparsified)
    facts = build.compiled.facts["quantize"]  # sparse int8 weights count as quantized, and as sparse
    assert facts["sparse_weights"] == len(sparsified) and facts["quantized_weights"] == 3
    outputs = build.run(noise.evaluation["input"][:8])
    expected = torch_outputs(state.model, noise.evaluation["input"][:8])
    assert np.corrcoef(outputs.ravel(), expected.ravel())[0, 1] > 0.99
