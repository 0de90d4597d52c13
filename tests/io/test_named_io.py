"""Models as users bring them: several named inputs (one int64), dict outputs, state carried between steps,
factory arguments, DataParallel weights, TorchScript without shapes, constant forward() arguments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import edgekit
from edgekit.cli import main
from edgekit.errors import ExitStatus, InputError
from tests.conftest import assert_valid_manifest

FAST = ("latency.enabled=false",)


class ImageAndTokens(nn.Module):
    """Two inputs (float image, int64 tokens) and a dict of two outputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.embedding = nn.Conv2d(1, 8, 3, padding=1), nn.Embedding(50, 8)
        self.head, self.proj = nn.Linear(16, 10), nn.Linear(16, 16)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        z = torch.cat([torch.relu(self.conv(image)).mean(dim=(2, 3)), self.embedding(tokens).mean(dim=1)], dim=1)
        return {"logits": self.head(z), "embedding": self.proj(z)}


class Cell(nn.Module):
    """A recurrent cell: (x, h) -> (y, h'). The state goes out and comes back in at the next step."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.x, self.h, self.out = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = torch.tanh(self.x(x) + self.h(h))
        return self.out(state), state


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("two")
    rng = np.random.default_rng(0)
    image = rng.standard_normal((160, 1, 8, 8)).astype(np.float32)
    tokens = rng.integers(0, 50, (160, 6)).astype(np.int64)
    example = (torch.from_numpy(image[:1]), torch.from_numpy(tokens[:1]))
    torch.export.save(torch.export.export(ImageAndTokens().eval(), example), str(folder / "two.pt2"))
    np.savez(folder / "data.npz", image=image, tokens=tokens)
    return folder / "two.pt2", folder / "data.npz"


@pytest.fixture(scope="module")
def cell(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cell")
    x = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    torch.export.save(
        torch.export.export(Cell().eval(), (torch.from_numpy(x[:1]), torch.zeros(1, 16))), str(folder / "cell.pt2")
    )
    np.savez(folder / "steps.npz", x=x)  # no 'h': the state starts at zero and the model carries it
    return folder / "cell.pt2", folder / "steps.npz"


def _check_named(path: Path) -> dict:  # type: ignore[type-arg]
    manifest = assert_valid_manifest(path)
    assert [t["name"] for t in manifest["io"]["inputs"]] == ["image", "tokens"]
    assert manifest["io"]["inputs"][1]["dtype"] == "int64"
    assert [t["name"] for t in manifest["io"]["outputs"]] == ["logits", "embedding"]
    sample = manifest["golden"]["samples"][0]
    assert set(sample["inputs"]) == {"image", "tokens"} and set(sample["outputs"]) == {"logits", "embedding"}
    assert all((path / p).is_file() for p in [*sample["inputs"].values(), *sample["outputs"].values()])
    assert set(manifest["accuracy"]["outputs"]) == {"logits", "embedding"}
    assert [r["output"] for r in manifest["accuracy"]["gate"]["rules"]] == ["logits", "embedding"]
    assert edgekit.verify(path).golden.within_tolerance
    return manifest


def test_two_inputs_and_a_dict_of_outputs_on_rpi(two_inputs: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = two_inputs
    result = edgekit.build(str(model), target="rpi", data=data, out_dir=tmp_path, overrides=FAST)

    manifest = _check_named(result.path)
    assert manifest["accuracy"]["status"] == "passed"
    import onnxruntime as ort

    session = ort.InferenceSession(str(result.path / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["image", "tokens"]
    assert [o.name for o in session.get_outputs()] == ["logits", "embedding"]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["android", "ios"])
def test_two_inputs_and_a_dict_of_outputs_on_android_and_ios(
    two_inputs: tuple[Path, Path], tmp_path: Path, target: str
) -> None:
    model, data = two_inputs
    result = edgekit.build(str(model), target=target, data=data, out_dir=tmp_path, overrides=FAST)

    manifest = _check_named(result.path)
    assert manifest["accuracy"]["status"] in ("passed", "proxy")


@pytest.mark.parametrize("target", ["rpi", pytest.param("android", marks=pytest.mark.slow)])
def test_a_stateful_cell_verifies_over_20_steps_closed_loop(
    cell: tuple[Path, Path], tmp_path: Path, target: str
) -> None:
    model, data = cell
    overrides = (
        *FAST,
        'io.state={output_1="h"}',
        "data.evaluation_size=20",
        "gate.min_evaluation_size=20",
        "quantize.scheme=int8-static",
    )

    result = edgekit.build(str(model), target=target, data=data, out_dir=tmp_path, overrides=overrides)

    manifest = assert_valid_manifest(result.path)
    assert manifest["io"]["state"] == {"output_1": "h"} and manifest["accuracy"]["sequence"]["steps"] == 20
    assert manifest["data"]["order"].startswith("file order")
    assert manifest["accuracy"]["status"] == "passed" and manifest["accuracy"]["outputs"]["output_1"]["sqnr_db"] > 20
    h_fed = [np.load(result.path / s["inputs"]["h"]) for s in manifest["golden"]["samples"]]
    h_out = [np.load(result.path / s["outputs"]["output_1"]) for s in manifest["golden"]["samples"]]
    assert not np.any(h_fed[0]) and np.array_equal(h_fed[1].astype(np.float32), h_out[0])  # step 1 got step 0's state
    assert edgekit.verify(result.path).golden.within_tolerance


def test_a_state_map_naming_nothing_is_a_clear_error(cell: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = cell
    with pytest.raises(InputError, match="io.state maps 'hidden'"):
        edgekit.build(str(model), target="rpi", data=data, out_dir=tmp_path, overrides=('io.state={hidden="h"}',))


FACTORY = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, classes, width=4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, classes)

    def forward(self, x, scale):
        return self.head(self.body(x)) * scale

def build(classes, width=4):
    return Net(classes, width)
"""


def _factory(tmp_path: Path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(FACTORY)
    return path


def test_factory_arguments_weights_prefix_and_constants(tmp_path: Path, cli: CliRunner) -> None:
    path = _factory(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {}  # type: ignore[type-arg]
    exec(compile(FACTORY, "net", "exec"), namespace)  # noqa: S102 - our own test source
    net = namespace["Net"](classes=7)
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "dp.pt")  # as DataParallel saves
    np.savez(tmp_path / "d.npz", inputs=np.random.default_rng(0).standard_normal((80, 1, 8, 8)).astype(np.float32))
    data, out, weights = str(tmp_path / "d.npz"), str(tmp_path / "dist"), str(tmp_path / "dp.pt")
    base = ["build", f"{path}:build", "--target", "rpi", "--data", data, "--out", out, "--weights", weights,
            "--set", "latency.enabled=false"]  # fmt: skip

    no_args = cli.invoke(main, base)
    assert (
        no_args.exit_code == ExitStatus.BAD_INPUT and "--factory-args" in no_args.stderr and "classes" in no_args.stderr
    )

    prefixed = cli.invoke(main, [*base, "--factory-args", '{"classes": 7}'])
    assert prefixed.exit_code == ExitStatus.BAD_INPUT and "--strip-prefix module." in prefixed.stderr
    [line] = [line for line in prefixed.stderr.splitlines() if line.startswith("error:")]
    assert len(line) < 300  # a few keys, not all of them

    no_constant = cli.invoke(main, [*base, "--factory-args", '{"classes": 7}', "--strip-prefix", "module."])
    assert no_constant.exit_code == ExitStatus.BAD_INPUT and "constants" in no_constant.stderr

    built = cli.invoke(main, [*base, "--factory-args", '{"classes": 7}', "--strip-prefix", "module.",
                              "--set", "model.constants={scale=2.0}"])  # fmt: skip
    assert built.exit_code == 0, built.stderr
    manifest = json.loads((tmp_path / "dist" / "net-rpi" / "manifest.json").read_text())
    assert manifest["recipe"]["model"]["factory_args"] == {"classes": 7} and manifest["io"]["outputs"][0]["shape"] == [
        1,
        7,
    ]


class Scripted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.head = nn.Conv2d(1, 4, 3), nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_torchscript_takes_its_shapes_from_the_data(tmp_path: Path) -> None:
    torch.jit.save(torch.jit.script(Scripted().eval()), str(tmp_path / "scripted.ts"))
    np.savez(tmp_path / "d.npz", inputs=np.random.default_rng(0).standard_normal((80, 1, 8, 8)).astype(np.float32))

    result = edgekit.build(
        str(tmp_path / "scripted.ts"), target="rpi", data=tmp_path / "d.npz", out_dir=tmp_path / "dist", overrides=FAST
    )

    assert (
        result.manifest.io.inputs[0].shape == (1, 1, 8, 8) and result.manifest.source_model["format"] == "torchscript"
    )
    assert result.manifest.accuracy.status == "passed"


class Encoder(nn.Module):
    """Token ids of any length up to 64 in, one vector out."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding, self.head = nn.Embedding(100, 16), nn.Linear(16, 8)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.embedding(input_ids)).mean(dim=1))


@pytest.fixture(scope="module")
def dynamic_encoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("dynamic")
    ids = np.random.default_rng(0).integers(0, 100, (80, 24)).astype(np.int64)
    seq = torch.export.Dim("seq", min=2, max=64)
    program = torch.export.export(Encoder().eval(), (torch.from_numpy(ids[:1]),), dynamic_shapes=({1: seq},))
    torch.export.save(program, str(folder / "encoder.pt2"))
    np.savez(folder / "tokens.npz", input_ids=ids)
    return folder / "encoder.pt2", folder / "tokens.npz"


@pytest.mark.parametrize("target", ["rpi", pytest.param("android", marks=pytest.mark.slow)])
def test_a_dynamic_sequence_length_works_at_two_lengths(
    dynamic_encoder: tuple[Path, Path], tmp_path: Path, target: str
) -> None:
    model, data = dynamic_encoder

    result = edgekit.build(str(model), target=target, data=data, out_dir=tmp_path, overrides=FAST)

    manifest = assert_valid_manifest(result.path)
    assert manifest["io"]["inputs"] == [
        {"name": "input_ids", "shape": [1, 24], "dtype": "int64", "dynamic": [{"axis": 1, "min": 2, "max": 64}]}
    ]
    lengths = {np.load(result.path / s["inputs"]["input_ids"]).shape[1] for s in manifest["golden"]["samples"]}
    assert lengths == {24, 12}  # the self-test runs at two lengths
    assert edgekit.verify(result.path).golden.within_tolerance
    assert manifest["accuracy"]["status"] == "passed"


@pytest.mark.slow
def test_the_ios_package_declares_the_range(dynamic_encoder: tuple[Path, Path], tmp_path: Path) -> None:
    import coremltools as ct

    model, data = dynamic_encoder
    result = edgekit.build(str(model), target="ios", data=data, out_dir=tmp_path, overrides=FAST)

    spec = ct.models.MLModel(str(result.path / "model.mlpackage"), skip_model_load=True).get_spec()
    ranges = spec.description.input[0].type.multiArrayType.shapeRange.sizeRanges
    assert (ranges[1].lowerBound, ranges[1].upperBound) == (2, 64)


def test_the_recipe_can_declare_a_dynamic_axis_for_a_factory(tmp_path: Path) -> None:
    source = tmp_path / "enc.py"
    source.write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Enc(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.e, self.h = nn.Embedding(50, 8), nn.Linear(8, 4)\n\n"
        "    def forward(self, input_ids):\n        return self.h(self.e(input_ids).mean(dim=1))\n\n"
        "def build():\n    torch.manual_seed(0)\n    return Enc().eval()\n"
    )
    np.savez(tmp_path / "d.npz", input_ids=np.random.default_rng(0).integers(0, 50, (100, 16)).astype(np.int64))

    result = edgekit.build(f"{source}:build", target="rpi", data=tmp_path / "d.npz", out_dir=tmp_path / "dist",
                           overrides=(*FAST, 'io.dynamic={input_ids="1:4..32"}'))  # fmt: skip

    assert result.manifest.io.inputs[0].dynamic[0].max == 32 and result.manifest.golden.count == 5
    import onnxruntime as ort

    dims = ort.InferenceSession(str(result.path / "model.onnx")).get_inputs()[0].shape
    assert isinstance(dims[1], str)  # a symbolic length in the .onnx
