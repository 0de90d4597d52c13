"""edgekit.rewrites: each rewrite equals torch, a video network builds for android and ios, errors name the real cause.

Every rewrite is checked on random fp32 inputs against the eager module (max abs error printed, `-s`
shows it); the builds run the .pte in executorch.runtime and the .mlpackage in the host stand-in.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from edgekit import metrics, rewrites
from edgekit.backends.base import IoContract, TensorSpec
from edgekit.errors import ExportError
from tests.tiny_models import compile_tiny

ATOL = 1e-5  # fp32, tiny tensors: only summation order differs


def _export(model: nn.Module, *args: torch.Tensor, dynamic_shapes: object = None) -> torch.export.ExportedProgram:
    with torch.no_grad():
        return torch.export.export(model.eval(), args, dynamic_shapes=dynamic_shapes)


def _targets(program: torch.export.ExportedProgram) -> set[str]:
    return {rewrites.op_label(n.target) for n in program.graph.nodes if n.op == "call_function"}


def _max_error(model: nn.Module, program: torch.export.ExportedProgram, *args: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(*args) - program.module()(*args)).abs().max())


def _frames(channels: int = 4, t: int = 6, hw: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, channels, t, hw, hw, generator=torch.Generator().manual_seed(seed))


class Op(nn.Module):
    """One layer (or function) applied to the input."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


# (id, layer, rewrite that must run, op that must be gone)
CASES = [
    ("conv3d-3x3x3", nn.Conv3d(4, 6, 3, padding=1), "conv3d_as_conv2d", "aten.conv3d"),
    ("conv3d-spatial-1x3x3", nn.Conv3d(4, 6, (1, 3, 3), padding=(0, 1, 1)), "conv3d_as_conv2d", "aten.conv3d"),
    ("conv3d-temporal-3x1x1", nn.Conv3d(4, 6, (3, 1, 1), padding=(1, 0, 0)), "conv3d_as_conv2d", "aten.conv3d"),
    ("conv3d-stride-t2", nn.Conv3d(4, 6, 3, stride=(2, 1, 1), padding=1), "conv3d_as_conv2d", "aten.conv3d"),
    ("conv3d-stride-all2", nn.Conv3d(4, 6, 3, stride=2), "conv3d_as_conv2d", "aten.conv3d"),
    ("conv3d-dilation-t2", nn.Conv3d(4, 6, 3, dilation=(2, 1, 2), padding=(2, 1, 2)), "conv3d_as_conv2d",
     "aten.conv3d"),
    ("conv3d-groups2", nn.Conv3d(4, 6, 3, padding=1, groups=2), "conv3d_as_conv2d", "aten.conv3d"),
    ("conv3d-depthwise", nn.Conv3d(4, 4, (3, 3, 3), padding=1, groups=4, bias=False), "conv3d_as_conv2d",
     "aten.conv3d"),
    ("conv3d-same-even", nn.Conv3d(4, 6, (2, 4, 3), padding="same"), "conv3d_as_conv2d", "aten.conv3d"),
    ("conv3d-valid-no-bias", nn.Conv3d(4, 6, (2, 3, 3), padding="valid", bias=False), "conv3d_as_conv2d",
     "aten.conv3d"),
    ("conv3d+bn", nn.Sequential(nn.Conv3d(4, 6, 3, padding=1), nn.BatchNorm3d(6)), "fold_batch_norm_into_conv3d",
     "aten.batch_norm"),
    ("conv3d+bn-no-affine", nn.Sequential(nn.Conv3d(4, 6, 3, bias=False), nn.BatchNorm3d(6, affine=False)),
     "fold_batch_norm_into_conv3d", "aten.batch_norm"),
    ("bn3d", nn.BatchNorm3d(4), "batch_norm_5d_as_affine", "aten.batch_norm"),
    ("max_pool3d-2", nn.MaxPool3d(2), "max_pool3d_as_max_pool2d", "aten.max_pool3d"),
    ("max_pool3d-1x2x2", nn.MaxPool3d((1, 2, 2)), "max_pool3d_as_max_pool2d", "aten.max_pool3d"),
    ("max_pool3d-3-s2-p1", nn.MaxPool3d(3, stride=2, padding=1), "max_pool3d_as_max_pool2d", "aten.max_pool3d"),
    ("max_pool3d-ceil-dilation", nn.MaxPool3d(2, stride=(2, 3, 2), dilation=(1, 2, 1), ceil_mode=True),
     "max_pool3d_as_max_pool2d", "aten.max_pool3d"),
    ("avg_pool3d-2", nn.AvgPool3d(2), "avg_pool3d_as_avg_pool2d", "aten.avg_pool3d"),
    ("avg_pool3d-3-s2-p1-exclude-pad", nn.AvgPool3d(3, stride=2, padding=1, count_include_pad=False),
     "avg_pool3d_as_avg_pool2d", "aten.avg_pool3d"),
    ("avg_pool3d-ceil", nn.AvgPool3d((3, 2, 3), stride=2, padding=(1, 1, 0), ceil_mode=True),
     "avg_pool3d_as_avg_pool2d", "aten.avg_pool3d"),
    ("avg_pool3d-temporal-3x1x1", nn.AvgPool3d((3, 1, 1), stride=1, padding=(1, 0, 0)), "avg_pool3d_as_avg_pool2d",
     "aten.avg_pool3d"),
    ("adaptive_avg_pool3d-1", nn.AdaptiveAvgPool3d(1), "adaptive_avg_pool3d_as_2d", "aten.adaptive_avg_pool3d"),
    ("adaptive_avg_pool3d-uneven", nn.AdaptiveAvgPool3d((4, 3, 4)), "adaptive_avg_pool3d_as_2d",
     "aten.adaptive_avg_pool3d"),
    ("adaptive_avg_pool3d-keep-t", nn.AdaptiveAvgPool3d((None, 5, 2)), "adaptive_avg_pool3d_as_2d",
     "aten.adaptive_avg_pool3d"),
]  # fmt: skip


def _warm(layer: nn.Module) -> nn.Module:
    """Give batch norms non-trivial statistics and affine parameters, then switch to inference."""
    torch.manual_seed(0)
    for module in layer.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            if module.affine:
                nn.init.uniform_(module.weight, 0.5, 1.5)
                nn.init.uniform_(module.bias, -0.3, 0.3)
    return layer.eval()


@pytest.mark.parametrize(("layer", "name", "gone"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_executorch_rewrite_equals_torch(layer: nn.Module, name: str, gone: str) -> None:
    model = Op(_warm(layer))
    x = _frames()
    program = _export(model, x)

    done = rewrites.apply(program, rewrites.EXECUTORCH)

    error = _max_error(model, done.program, x)
    print(f"{name}: max abs error {error:.1e}")
    assert error < ATOL
    assert name in [a["name"] for a in done.applied]
    assert gone not in _targets(done.program)
    assert gone in _targets(program)  # the input program is left as it was
    assert rewrites.first_unsupported(done.program, rewrites.EXECUTORCH_LIMITS) is None


def test_conv3d_with_a_computed_weight_is_stacked_in_the_graph() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(6, 2, 3, 3, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.conv3d(x, self.weight * 0.5, stride=(2, 1, 1), padding=1, groups=2)

    model, x = Scaled(), _frames()

    done = rewrites.apply(_export(model, x), rewrites.EXECUTORCH)

    assert _max_error(model, done.program, x) < ATOL and "aten.conv3d" not in _targets(done.program)


def test_rewrites_keep_the_users_model_and_dynamic_sizes() -> None:
    layers = [nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.MaxPool3d((1, 2, 2)), nn.Conv3d(4, 4, 3, (2, 1, 1))]
    model = Op(nn.Sequential(*layers)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time", min=5, max=16)  # unbounded, bounded
    program = _export(model, torch.randn(2, 3, 8, 8, 8), dynamic_shapes=({0: batch, 2: time},))

    done = rewrites.apply(program, rewrites.EXECUTORCH)

    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for shape in ((1, 3, 5, 8, 8), (3, 3, 12, 8, 8)):  # other batch and time sizes than exported with
        assert _max_error(model, done.program, torch.randn(*shape)) < ATOL
    assert rewrites.applied_rewrites(done.program) == list(done.applied)


def test_a_program_without_matches_comes_back_unchanged() -> None:
    program = _export(Op(nn.Conv2d(3, 4, 3)), torch.randn(1, 3, 8, 8))

    done = rewrites.apply(program, [*rewrites.EXECUTORCH, *rewrites.COREML])

    assert done.program is program and done.applied == ()


def test_a_node_location_names_the_users_file_and_line() -> None:
    program = _export(VideoNet(), torch.randn(1, 3, 4, 16, 16))
    pool = next(n for n in program.graph.nodes if n.op == "call_function" and "max_pool3d" in str(n.target))

    where = rewrites.describe(pool)

    assert where.startswith("module pool (MaxPool3d)")
    assert f"test_rewrites.py:{_line(VideoNet.forward, 'self.pool(')}" in where


# -- a small video network, built for android and ios ---------------------------------------------


class VideoNet(nn.Module):
    """R(2+1)D-style (1x3x3 spatial, 3x1x1 temporal) and C3D-style (3x3x3) blocks, 3-D pools, a linear head."""

    def __init__(self, width: int = 4, classes: int = 5) -> None:
        super().__init__()
        self.spatial = nn.Sequential(nn.Conv3d(3, width, (1, 3, 3), padding=(0, 1, 1), bias=False),
                                     nn.BatchNorm3d(width), nn.ReLU())  # fmt: skip
        self.temporal = nn.Sequential(nn.Conv3d(width, width, (3, 1, 1), padding=(1, 0, 0), bias=False),
                                      nn.BatchNorm3d(width), nn.ReLU())  # fmt: skip
        self.pool = nn.MaxPool3d((1, 2, 2))
        self.c3d = nn.Sequential(nn.Conv3d(width, 2 * width, 3, stride=(2, 1, 1), padding=1), nn.BatchNorm3d(2 * width),
                                 nn.ReLU())  # fmt: skip
        self.avg = nn.AvgPool3d((1, 2, 2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(2 * width, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.temporal(self.spatial(x)))
        return self.head(self.avg(self.c3d(x)))


def _line(function: object, text: str) -> int:
    lines, start = inspect.getsourcelines(function)  # type: ignore[arg-type]
    return start + next(i for i, line in enumerate(lines) if text in line)


@pytest.fixture(scope="module")
def video() -> tuple[nn.Module, dict[str, np.ndarray]]:
    """A seeded VideoNet with warmed-up batch norms, and clips of 8 frames of 16x16."""
    torch.manual_seed(0)
    model = VideoNet()
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 8, 16, 16))
    rng = np.random.default_rng(0)
    clips = {
        "example": rng.standard_normal((1, 3, 8, 16, 16)).astype(np.float32),
        "calibration": rng.standard_normal((8, 3, 8, 16, 16)).astype(np.float32),
        "evaluation": rng.standard_normal((8, 3, 8, 16, 16)).astype(np.float32),
    }
    return model.eval(), clips


def _float(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize(
    ("scheme", "floor_db"),
    [("fp32", 40.0), pytest.param("int8-static", 20.0, marks=pytest.mark.slow)],  # int8: 15-19 s here
)
def test_video_network_builds_for_android_and_matches_torch(video, tmp_path, scheme: str, floor_db: float) -> None:
    model, clips = video

    build = compile_tiny("executorch", model, clips["example"], clips["calibration"], scheme, tmp_path)

    got = build.run(clips["evaluation"])  # the .pte in executorch.runtime
    sqnr = metrics.sqnr_db(_float(model, clips["evaluation"]), got)
    export = build.compiled.facts["export"]
    print(f"android {scheme}: SQNR {sqnr:.1f} dB, portable ops {export['portable_ops']}")
    assert sqnr > floor_db
    assert [r["name"] for r in export["rewrites"]] == [
        "fold_batch_norm_into_conv3d", "conv3d_as_conv2d", "max_pool3d_as_max_pool2d", "avg_pool3d_as_avg_pool2d",
        "adaptive_avg_pool3d_as_2d",
    ]  # fmt: skip
    assert export["portable_ops"] == {}  # the whole network runs in XNNPACK
    if scheme == "int8-static":
        assert build.compiled.facts["quantize"]["quantized_ops"]["aten.conv2d"] == 3


def test_video_network_builds_for_ios_and_matches_torch(video, tmp_path) -> None:
    model, clips = video

    build = compile_tiny("coreml", model, clips["example"], clips["calibration"], "fp32", tmp_path)

    got = build.run(clips["evaluation"])  # the host stand-in running the saved ML program
    sqnr = metrics.sqnr_db(_float(model, clips["evaluation"]), got)
    print(f"ios fp32 (proxy): SQNR {sqnr:.1f} dB")
    assert sqnr > 40.0
    assert [r["name"] for r in build.compiled.facts["export"]["rewrites"]] == ["adaptive_avg_pool3d_as_2d"]


# -- Core ML: ops coremltools 9.0 lacks ------------------------------------------------------------


class NewOnes(nn.Module):
    """A sentence transformer's attention mask: `new_ones` over the batch and sequence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = x.new_ones(x.shape[0], x.shape[1])
        return x * mask.unsqueeze(-1) + x.mean(-1, keepdim=True)


class Alias(nn.Module):
    """A windowed-attention ViT's no-op view that survives decomposition as `aten.alias`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.alias(x).softmax(-1) + x.detach()


class ZeroedBias(nn.Module):
    """Swin V2's attention zeroes the key third of its qkv bias in place: `aten.zero` once functional."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.qkv.bias.clone()
        bias[8:16].zero_()
        return F.linear(x, self.qkv.weight, bias)


class AdaptivePool3d(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool3d(x, (2, 3, 3)) * 2.0


def _coreml(model: nn.Module, x: torch.Tensor, path: Path) -> tuple[np.ndarray, list[dict[str, object]]]:
    """Convert with edgekit's Core ML route, run the saved program in the host stand-in, return its output."""
    from edgekit.backends.coreml.backend import save
    from edgekit.backends.coreml.convert import convert
    from edgekit.backends.coreml.proxy import MilRunner, load_program

    with torch.no_grad():
        out = model(x)
    io = IoContract(
        inputs=(TensorSpec(name="x", shape=tuple(x.shape), dtype="float32"),),
        outputs=(TensorSpec(name="y", shape=tuple(out.shape), dtype="float32"),),
    )
    mlmodel, frontend, applied = convert(
        model, io, {"x": x.numpy()}, precision="fp32", minimum_target="iOS17", compute_units="ALL"
    )
    assert frontend == "torch.export"
    save(mlmodel, path)
    with torch.no_grad():
        return MilRunner(load_program(path))({"x": x.numpy()})["y"], applied


@pytest.mark.parametrize(
    ("model", "shape", "rewrite"),
    [
        (NewOnes(), (2, 5, 8), "new_ones_as_full"),
        (Alias(), (1, 4, 8), "alias_removed"),
        (ZeroedBias(), (1, 3, 8), "zero_as_zeros_like"),
        (AdaptivePool3d(), (1, 2, 4, 7, 7), "adaptive_avg_pool3d_as_2d"),
    ],
    ids=["new_ones", "alias", "zero", "adaptive_avg_pool3d"],
)
def test_coreml_converts_what_coremltools_lacks(
    model: nn.Module, shape: tuple[int, ...], rewrite: str, tmp_path
) -> None:
    import coremltools as ct

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    kwargs = dict(inputs=[ct.TensorType(name="x", shape=shape)], convert_to="mlprogram", skip_model_load=True)
    logging.getLogger("coremltools").disabled = True
    with pytest.raises(NotImplementedError, match="Unsupported fx node"):  # as edgekit converted before
        ct.convert(_export(model, x).run_decompositions({}), **kwargs)

    got, applied = _coreml(model, x, tmp_path / "model.mlpackage")

    error = float(np.abs(got - _float(model, x.numpy())).max())
    print(f"{rewrite}: max abs error through the Core ML stand-in {error:.1e}")
    assert error < ATOL
    assert rewrite in [a["name"] for a in applied]


@pytest.mark.parametrize(
    ("model", "shape"),
    [(NewOnes(), (2, 5, 8)), (Alias(), (1, 4, 8)), (ZeroedBias(), (1, 3, 8)), (AdaptivePool3d(), (1, 2, 4, 7, 7))],
    ids=["new_ones", "alias", "zero", "adaptive_avg_pool3d"],
)
def test_each_coreml_rewrite_equals_torch(model: nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    program = _export(model, x).run_decompositions({})  # functional, as the Core ML route rewrites it

    done = rewrites.apply(program, rewrites.COREML)

    error = _max_error(model, done.program, x)
    print(f"{done.applied[0]['name']}: max abs error {error:.1e}")
    assert done.applied and error < ATOL


def test_the_core_aten_retry_drops_aliases_left_by_decomposition() -> None:
    class Detached(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.detach() * 2  # run_decompositions() turns detach into aten.alias

    x = torch.randn(3, 4)
    decomposed = _export(Detached(), x).run_decompositions()
    assert "aten.alias" in _targets(decomposed)

    done = rewrites.drop_noops(decomposed)

    assert "aten.alias" not in _targets(done.program) and done.applied[0]["nodes"] == 1
    assert torch.equal(done.program.module()(x), x * 2)


# -- errors name the op, the node and the user's line ----------------------------------------------


class Upsampler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv3d(3, 4, 3, padding=1)
        self.up = nn.ConvTranspose3d(4, 2, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(x)))


def test_android_error_names_an_op_no_rewrite_covers_and_the_users_line(tmp_path) -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 8, 8)).astype(np.float32)

    with pytest.raises(ExportError) as raised:
        compile_tiny("executorch", Upsampler().eval(), x, x, "int8-static", tmp_path)

    message = str(raised.value)
    assert raised.value.status == 6
    assert "aten.conv_transpose3d" in message and "module up (ConvTranspose3d)" in message
    assert f"test_rewrites.py:{_line(Upsampler.forward, 'self.up(')}" in message
    assert "dequantize" not in message and "hint:" in message


class Cumulative(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cummax(x, 1)[0] + 1


def test_ios_error_names_the_first_op_coremltools_cannot_convert(tmp_path) -> None:
    with pytest.raises(ExportError) as raised:
        _coreml(Cumulative(), torch.randn(1, 4, 8), tmp_path / "model.mlpackage")

    message = str(raised.value)
    assert message.startswith("coremltools cannot convert aten.cummax (node 'cummax'")
    assert f"test_rewrites.py:{_line(Cumulative.forward, 'torch.cummax')}" in message
    assert "register_torch_op" in message  # what the user can do
