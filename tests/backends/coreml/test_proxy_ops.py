"""The Core ML stand-in's kernels against PyTorch.

Each case is a tiny seeded module that coremltools 9.0 converts to the MIL op under test (asserted, so
that no case passes without running its kernel). It is converted the way edgekit converts
(`edgekit/backends/coreml/convert.py`: torch.export + run_decompositions({}) first, torch.jit.trace
when that fails; fp32, iOS17), saved, read back, run by `MilRunner`, and compared with the module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import coremltools as ct  # the test extra installs it: a failing import must fail, not skip
import numpy as np
import pytest
import torch

from edgekit.backends.coreml import proxy_ops, proxy_ops_image, proxy_ops_math, proxy_ops_rnn
from edgekit.backends.coreml.proxy import MilRunner, UnsupportedOpError, load_program, unsupported_ops
from edgekit.errors import ExportError

nn = torch.nn
F = torch.nn.functional

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # nn.LSTM's shape checks, traced
TOLERANCE = 1e-5  # max abs error over max(1, max |reference|): fp32 kernels, reordered sums at most


def convert(model: Any, inputs: dict[str, np.ndarray], n_outputs: int, path: Path) -> tuple[Any, str]:
    """Convert and save `model` as edgekit does; return the program read back and the frontend used."""
    kwargs = dict(
        inputs=[ct.TensorType(name=name, shape=value.shape) for name, value in inputs.items()],
        outputs=[ct.TensorType(name=f"out{i}") for i in range(n_outputs)],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.iOS17,
        skip_model_load=True,
    )
    sample = tuple(torch.from_numpy(value) for value in inputs.values())
    try:
        exported = torch.export.export(model, sample).run_decompositions({})
        mlmodel, frontend = ct.convert(exported, **kwargs), "torch.export"
    except Exception:  # as in edgekit: whatever torch.export cannot do, TorchScript gets to try
        with torch.no_grad():
            mlmodel, frontend = ct.convert(torch.jit.trace(model, sample), **kwargs), "torch.jit.trace"
    mlmodel.save(str(path))
    return load_program(path), frontend


def op_types(program: Any) -> set[str]:
    def walk(block: Any) -> set[str]:
        inner = {t for op in block.operations for b in op.blocks for t in walk(b)}
        return {op.op_type for op in block.operations} | inner

    return walk(program.functions["main"])


class Fn(nn.Module):
    """A module from a function of the inputs (and of the optional submodule `m`)."""

    def __init__(self, fn: Callable[..., Any], m: nn.Module | None = None) -> None:
        super().__init__()
        self.fn, self.m = fn, m

    def forward(self, *xs: Any) -> Any:
        return self.fn(self, *xs)


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    module: Callable[[], nn.Module]
    shapes: tuple[tuple[int, ...], ...]
    ops: frozenset[str]
    low: float | None = None  # inputs uniform in [low, high] when given, else standard normal
    high: float = 1.0
    tolerance: float = TOLERANCE


def case(id: str, module: Callable[[], nn.Module], *shapes: tuple[int, ...], ops: str, **kw: Any) -> Any:
    return pytest.param(Case(id, module, shapes, frozenset(ops.split()), **kw), id=id)


def fn(f: Callable[..., Any], m: Callable[[], nn.Module] | None = None) -> Callable[[], nn.Module]:
    return lambda: Fn(f, m() if m is not None else None)


def check(c: Case, tmp_path: Path) -> float:
    """Convert `c`, assert its ops are in the program, and return the proxy's max error (asserted small)."""
    torch.manual_seed(0)
    model = c.module().eval()
    for p in model.parameters():  # non-trivial weights everywhere (PReLU, norms start as constants)
        p.data.copy_(torch.randn_like(p) * 0.5 + (0.2 if p.ndim == 1 else 0.0))
    rng = np.random.default_rng(0)
    inputs = {
        f"x{i}": (rng.standard_normal(s) if c.low is None else rng.uniform(c.low, c.high, s)).astype(np.float32)
        for i, s in enumerate(c.shapes)
    }
    with torch.no_grad():
        expected = model(*(torch.from_numpy(v) for v in inputs.values()))
    expected = expected if isinstance(expected, tuple) else (expected,)

    program, frontend = convert(model, inputs, len(expected), tmp_path / "model.mlpackage")
    assert c.ops <= op_types(program), f"{c.id}: {sorted(c.ops - op_types(program))} not emitted ({frontend})"
    got = MilRunner(program)(inputs)

    errors = {}
    for i, want in enumerate(expected):
        out, ref = got[f"out{i}"], want.numpy()
        assert out.shape == ref.shape, f"{c.id} output {i}"
        if not np.issubdtype(ref.dtype, np.floating):
            assert np.array_equal(out, ref), f"{c.id} output {i}"
        errors[i] = float(np.max(np.abs(out - ref))) / max(1.0, float(np.max(np.abs(ref)))) if ref.size else 0.0
    print(f"{c.id} ({frontend}): max error per output {', '.join(f'{e:.1e}' for e in errors.values())}")
    assert max(errors.values()) < c.tolerance, f"{c.id}: output errors {errors}"
    return max(errors.values())


class GridSample(nn.Module):
    """F.grid_sample at a fixed grid that reaches past the image, so that padding matters."""

    def __init__(self, mode: str, padding: str, align_corners: bool) -> None:
        super().__init__()
        self.mode, self.padding, self.align_corners = mode, padding, align_corners
        self.register_buffer("grid", torch.rand(1, 3, 4, 2, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2)

    def forward(self, x: Any) -> Any:
        return F.grid_sample(x, self.grid, self.mode, self.padding, align_corners=self.align_corners)


IMAGE = (1, 2, 5, 6)
SEQ = (2, 5, 3)  # batch, steps, features (batch_first)

SPATIAL = [
    case(
        "conv_transpose2d_output_padding",
        lambda: nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1),
        IMAGE,
        ops="conv_transpose crop",
    ),
    case(
        "conv_transpose2d_groups_dilation",
        lambda: nn.ConvTranspose2d(2, 4, 3, stride=2, padding=2, groups=2, dilation=2),
        IMAGE,
        ops="conv_transpose",
    ),
    case(
        "conv_transpose1d_output_padding",
        lambda: nn.ConvTranspose1d(5, 4, 3, stride=2, padding=1, output_padding=1),
        SEQ,
        ops="conv_transpose slice_by_index",
    ),
    case("pad_constant", fn(lambda s, x: F.pad(x, (1, 2, 0, 3), value=0.5)), IMAGE, ops="pad"),
    case("pad_reflect", fn(lambda s, x: F.pad(x, (1, 2, 3, 1), mode="reflect")), IMAGE, ops="pad"),
    case("pad_replicate", fn(lambda s, x: F.pad(x, (2, 0, 1, 3), mode="replicate")), IMAGE, ops="pad"),
    case("pad_reflect_1d", fn(lambda s, x: F.pad(x, (2, 1), mode="reflect")), SEQ, ops="pad"),
    case(
        "nearest_scale",
        fn(lambda s, x: F.interpolate(x, scale_factor=2, mode="nearest")),
        IMAGE,
        ops="upsample_nearest_neighbor",
    ),
    case(
        "nearest_size",
        fn(lambda s, x: F.interpolate(x, size=(7, 9), mode="nearest")),
        IMAGE,
        ops="upsample_nearest_neighbor",
    ),
    case(
        "nearest_1d",
        fn(lambda s, x: F.interpolate(x, scale_factor=3, mode="nearest")),
        SEQ,
        ops="upsample_nearest_neighbor",
    ),
    *[
        case(
            f"bilinear_{how}_align_{align}",
            fn(lambda s, x, kw=kw, align=align: F.interpolate(x, mode="bilinear", align_corners=align, **kw)),
            (1, 2, 4, 6),  # whole output sizes at scale 1.5: the converter refuses fractional ones without align
            ops="upsample_bilinear",
        )
        for how, kw in (
            ("scale", {"scale_factor": 2}),
            ("size", {"size": (7, 9)}),
            ("scale_1.5", {"scale_factor": 1.5}),
        )
        for align in (False, True)
    ],
    case(
        "linear_1d",
        fn(lambda s, x: F.interpolate(x, scale_factor=2, mode="linear", align_corners=False)),
        SEQ,
        ops="upsample_bilinear",
    ),
    case(
        "pixel_shuffle_unshuffle",
        fn(lambda s, x: F.pixel_unshuffle(F.pixel_shuffle(x, 2), 2) + F.pixel_shuffle(x, 2).mean()),
        (1, 8, 3, 2),
        ops="pixel_shuffle pixel_unshuffle",
    ),
    case("instance_norm_2d", lambda: nn.InstanceNorm2d(2, affine=True), IMAGE, ops="instance_norm"),
    case("instance_norm_1d", fn(lambda s, x: F.instance_norm(x)), SEQ, ops="instance_norm"),
    *[
        case(
            f"grid_sample_{mode}_{padding}_align_{align}",
            lambda k=(mode, padding, align): GridSample(*k),
            IMAGE,
            ops="resample",
        )
        for mode, padding, align in (
            ("bilinear", "zeros", False),
            ("bilinear", "border", True),
            ("bilinear", "reflection", False),
            ("bilinear", "reflection", True),
            ("nearest", "zeros", True),
        )
    ],
]


def unary_case(id: str, fs: dict[str, Callable[[Any], Any]], low: float | None = None, high: float = 1.0) -> Any:
    """One conversion for several one-input ops, one output each (so the error is told per op)."""
    return case(id, fn(lambda s, x: tuple(f(x) for f in fs.values())), (2, 3, 4), ops=" ".join(fs), low=low, high=high)


UNARY = {
    "floor": lambda x: torch.floor(x * 3),
    "ceil": lambda x: torch.ceil(x * 3),
    "round": lambda x: torch.round(x * 3),
    "sign": torch.sign,
    "sin": torch.sin,
    "cos": torch.cos,
    "atan": torch.atan,
    "sinh": torch.sinh,
    "cosh": torch.cosh,
    "exp2": torch.exp2,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
    "elu": lambda x: F.elu(x, 0.7),
    "softplus": F.softplus,
    "threshold": lambda x: F.threshold(x, 0.1, 0.1),
    "linear_activation": lambda x: F.threshold(x, 0.1, 0.0),  # arrives as threshold + linear_activation
}
BOUNDED = {
    "tan": torch.tan,
    "asin": torch.asin,
    "acos": torch.acos,
    "atanh": torch.atanh,
    "log": lambda x: torch.log(x + 1),
}

MATH = [
    unary_case("unary", UNARY),
    unary_case("unary_bounded", BOUNDED, -0.9, 0.9),
    # the converter maps reciprocal to inverse with epsilon 1e-4 (1 / (x + 1e-4)): a 1e-4 relative shift
    case("inverse", fn(lambda s, x: torch.reciprocal(x)), (2, 3, 4), ops="inverse", low=1.0, high=2.0, tolerance=2e-4),
    case("prelu", lambda: nn.PReLU(2), IMAGE, ops="prelu"),
    case(
        "floor_div",
        fn(lambda s, x: torch.div(x, 0.3, rounding_mode="floor") + torch.remainder(x, 0.7)),
        (2, 6),
        ops="floor_div",
    ),
    case("floor_div_int", fn(lambda s, x: (x * 10).int() // 3 + (x * 10).int() % 4), (2, 6), ops="floor_div"),
    case(
        "logical",
        fn(
            lambda s, x: torch.stack(
                [
                    torch.logical_and(x > 0, x < 1),
                    torch.logical_or(x > 1, x < -1),
                    torch.logical_xor(x > 0, x < 0.5),
                    torch.logical_not(x > 0),
                    x != 0.5,
                ]
            ).float()
        ),
        (2, 6),
        ops="logical_and logical_or logical_xor logical_not not_equal",
    ),
    case(
        "argmax_argmin",
        fn(lambda s, x: (torch.argmax(x, 1), torch.argmin(x, -1, keepdim=True))),
        (2, 3, 4),
        ops="reduce_argmax reduce_argmin",
    ),
    case("l2_norm", fn(lambda s, x: F.normalize(x, dim=1)), (2, 3, 4), ops="reduce_l2_norm"),
    case("logsumexp", fn(lambda s, x: torch.logsumexp(x, (1, 2), keepdim=True)), (2, 3, 4), ops="reduce_log_sum_exp"),
    case(
        "cumsum_reverse",
        fn(lambda s, x: torch.cumsum(x, 1) + torch.cumsum(x.flip(2), 2)),
        (2, 3, 4),
        ops="cumsum reverse",
    ),
    case(
        "band_part",
        fn(lambda s, x: torch.triu(x) + 2 * torch.tril(x, -1) + torch.triu(x, 2)),
        (2, 4, 5),
        ops="band_part",
    ),
    case("tile", fn(lambda s, x: x.repeat(2, 1, 3)), (2, 3, 4), ops="tile"),
    case("stack", fn(lambda s, x: torch.stack([x, 2 * x], 1)), (2, 3, 4), ops="stack"),
    case(
        "gather_along_axis",
        fn(lambda s, x: torch.gather(x, 1, torch.tensor([[0, 2, 1, 3, 5, 4], [1, 1, 0, 0, 2, 2]]))),
        (2, 6),
        ops="gather_along_axis",
    ),
    case(
        "gather_nd", fn(lambda s, x: x[torch.tensor([1, 0, 1]), torch.tensor([2, 3, -1])]), (2, 6, 3), ops="gather_nd"
    ),
    case(
        "scatter_along_axis",
        fn(
            lambda s, x: (
                torch.zeros(2, 6).scatter(1, torch.tensor([[0, 2, 1, 3, 5, 4]] * 2), x)
                + torch.zeros(2, 6).scatter_add(1, torch.tensor([[0, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1]]), x)
            )
        ),
        (2, 6),
        ops="scatter_along_axis",
    ),
    case(
        "scatter_nd", fn(lambda s, x: x.index_put((torch.tensor([2, 0]),), torch.ones(2, 4))), (3, 4), ops="scatter_nd"
    ),
    case(
        "topk",
        fn(lambda s, x: (torch.topk(x, 3, dim=1)[0], torch.topk(x, 2, dim=-1, largest=False)[1].int())),
        (2, 6, 4),
        ops="topk",
    ),
    case(
        "sort_argsort",
        fn(lambda s, x: (torch.sort(x, dim=1)[0], torch.argsort(x, dim=-1).int())),
        (2, 6),
        ops="argsort",
    ),
    case("non_zero", fn(lambda s, x: torch.nonzero(x > 0).float().sum(0)), (2, 3, 4), ops="non_zero"),
]


def lstm(*, layers: int, bidirectional: bool, batch_first: bool, bias: bool = True) -> Callable[[], nn.Module]:
    def forward(s: Fn, x: Any, *hc: Any) -> Any:
        out, (h, c) = s.m(x, tuple(hc) if hc else None)
        return (out, h, c) if hc else out

    return fn(forward, lambda: nn.LSTM(3, 4, layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional))


def lstm_case(id: str, layers: int, bidirectional: bool, batch_first: bool, state: bool, **kw: Any) -> Any:
    x = SEQ if batch_first else (5, 2, 3)
    states = [(layers * (1 + bidirectional), 2, 4)] * 2 if state else []
    module = lstm(layers=layers, bidirectional=bidirectional, batch_first=batch_first, **kw)
    return case(id, module, x, *states, ops="lstm")


def gru(**kw: Any) -> Callable[[], nn.Module]:
    return fn(lambda s, x: s.m(x)[0], lambda: nn.GRU(3, 4, **kw))


RECURRENT = [
    lstm_case("lstm", 1, False, True, False),
    lstm_case("lstm_2_layers_state", 2, False, False, True),
    lstm_case("lstm_no_bias", 1, False, True, False, bias=False),
    lstm_case("bilstm", 1, True, True, False),
    lstm_case("bilstm_state", 1, True, False, True),
    lstm_case("bilstm_2_layers_state", 2, True, True, True),
    case("rnn_tanh", fn(lambda s, x: s.m(x)[0], lambda: nn.RNN(3, 4, batch_first=True)), SEQ, ops="rnn"),
    case("rnn_relu_2_layers", fn(lambda s, x: s.m(x)[1], lambda: nn.RNN(3, 4, 2, "relu")), (5, 2, 3), ops="rnn"),
    case("gru_while_loop", gru(batch_first=True), SEQ, ops="while_loop scatter gather"),
    case("gru_2_layers_bidirectional", gru(num_layers=2, bidirectional=True), (5, 2, 3), ops="while_loop"),
]


@pytest.mark.parametrize("c", SPATIAL + MATH + RECURRENT)
def test_kernel_matches_pytorch(c: Case, tmp_path: Path) -> None:
    check(c, tmp_path)


def test_op_tables_do_not_overlap() -> None:
    tables = [proxy_ops._CORE, proxy_ops_math.OPS, proxy_ops_image.OPS, proxy_ops_rnn.OPS]

    assert sum(len(t) for t in tables) == len(proxy_ops.OPS)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("output_sequence", [True, False])
def test_lstm_directions_and_last_step_follow_coremltools(direction: str, output_sequence: bool) -> None:
    """Paths the torch frontend never emits (a lone reverse LSTM, output_sequence=False), built in MIL.

    Expected values as coremltools' own op tests state them (`ops/tests/iOS14/test_recurrent.py`):
    a lone reverse LSTM is PyTorch's LSTM on the flipped sequence, outputs not flipped back; a
    bidirectional one is PyTorch's bidirectional LSTM, its single step [last forward, first backward].
    """
    from coremltools.converters.mil import Builder as mb  # noqa: N813 - coremltools' convention

    torch.manual_seed(0)
    both = direction == "bidirectional"
    ref = nn.LSTM(3, 4, bidirectional=both).eval()
    x, h0, c0 = torch.randn(5, 2, 3), torch.randn(1 + both, 2, 4), torch.randn(1 + both, 2, 4)

    def ifoz(w: Any) -> np.ndarray:
        i, f, z, o = np.split(w.detach().numpy(), 4)
        return np.concatenate([i, f, o, z])

    def weights(suffix: str) -> dict[str, np.ndarray]:
        return {
            "weight_ih": ifoz(getattr(ref, f"weight_ih_l0{suffix}")),
            "weight_hh": ifoz(getattr(ref, f"weight_hh_l0{suffix}")),
            "bias": ifoz(getattr(ref, f"bias_ih_l0{suffix}") + getattr(ref, f"bias_hh_l0{suffix}")),
        }

    kwargs = weights("")
    if both:
        kwargs.update({f"{k}_back": v for k, v in weights("_reverse").items()})

    # one TensorSpec each: mb.program names the spec objects themselves
    specs = [mb.TensorSpec(shape=(5, 2, 3))] + [mb.TensorSpec(shape=(2, 4 * (1 + both))) for _ in "hc"]

    @mb.program(input_specs=specs, opset_version=ct.target.iOS17)
    def program(x: Any, h: Any, c: Any) -> Any:
        return mb.lstm(x=x, initial_h=h, initial_c=c, direction=direction, output_sequence=output_sequence, **kwargs)

    def state(t: Any) -> np.ndarray:  # PyTorch's [directions, batch, hidden] -> MIL's [batch, directions * hidden]
        return t.permute(1, 0, 2).reshape(2, -1).numpy()

    names = list(program.functions["main"].inputs)
    got = MilRunner(program)(dict(zip(names, (x.numpy(), state(h0), state(c0)), strict=True)))

    with torch.no_grad():
        out, (h, c) = ref(x.flip(0) if direction == "reverse" else x, (h0, c0))
    if not output_sequence:
        out = torch.cat([out[-1:, :, :4], out[:1, :, 4:]], -1) if both else out[-1:]
    outputs = [v.name for v in program.functions["main"].outputs]
    for name, want in zip(outputs, (out, state(h), state(c)), strict=True):
        np.testing.assert_allclose(got[name], np.asarray(want), atol=1e-5)


def test_missing_kernels_are_named_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1).eval()
    program, _ = convert(module, {"x0": np.zeros(IMAGE, np.float32)}, 1, tmp_path / "model.mlpackage")
    monkeypatch.delitem(proxy_ops.OPS, "conv_transpose")
    monkeypatch.delitem(proxy_ops.OPS, "crop")

    with pytest.raises(UnsupportedOpError) as info:
        MilRunner(program)

    assert unsupported_ops(program) == ["conv_transpose", "crop"]
    assert info.value.op_types == ("conv_transpose", "crop") and isinstance(info.value, ExportError)
    assert "conv_transpose, crop" in str(info.value) and "\n" not in info.value.message


def test_missing_kernel_inside_a_loop_body_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    program, _ = convert(gru(batch_first=True)().eval(), {"x0": np.zeros(SEQ, np.float32)}, 1, tmp_path / "m.mlpackage")
    monkeypatch.delitem(proxy_ops.OPS, "scatter")

    assert unsupported_ops(program) == ["scatter"]
    with pytest.raises(UnsupportedOpError, match="scatter"):
        MilRunner(program)
