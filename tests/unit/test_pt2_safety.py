"""A .pt2 never runs code stored in it unless --allow-pickle; factory models hash their source.

Each hostile archive is the digits example with one entry that torch 2.14.1's torch.export.load would unpickle,
evaluate or import replaced by a payload that only creates a marker file in tmp_path, so a failing test is
harmless. The marker must never appear.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgekit import modelio, pt2_archive
from edgekit.cli import main
from edgekit.errors import ExitStatus, InputError
from edgekit.hashing import sha256_of
from tests.conftest import DIGITS

SOURCE = DIGITS / "model.pt2"
ROOT = "model/"
SAMPLE_INPUTS = f"{ROOT}data/sample_inputs/model.pt"
MODEL_JSON = f"{ROOT}models/model.json"
WEIGHTS_CONFIG = f"{ROOT}data/weights/model_weights_config.json"
CONSTANTS_CONFIG = f"{ROOT}data/constants/model_constants_config.json"


class _WritesMarker:
    """Unpickles into open(marker, "w"): proof that the pickle ran, and nothing worse."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def _raw_pickle(marker: Path) -> bytes:
    return pickle.dumps(_WritesMarker(marker), protocol=2)


def _torch_saved(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"x": _WritesMarker(marker)}, buffer, pickle_protocol=2)  # as torch.export.save stores artifacts
    return buffer.getvalue()


def _rewrite(dst: Path, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None) -> Path:
    """Copy the digits archive to `dst` with entries replaced or added, keeping the entry order."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(SOURCE) as src, zipfile.ZipFile(dst, "w") as out:
        for info in src.infolist():
            out.writestr(info.filename, replace.get(info.filename, src.read(info.filename)))
        for name, data in add.items():
            out.writestr(name, data)
    return dst


def _source_json(name: str) -> Any:
    with zipfile.ZipFile(SOURCE) as src:
        return json.loads(src.read(name))


def _payload_config(path_name: str) -> bytes:
    meta = {"path_name": path_name, "is_param": False, "use_pickle": True, "tensor_meta": None}
    return json.dumps({"config": {"c0": meta}}).encode()


def _pickled_weight(payload: bytes) -> dict[str, dict[str, bytes]]:
    config = _source_json(WEIGHTS_CONFIG)
    next(iter(config["config"].values()))["use_pickle"] = True  # weight_0: torch.load(weights_only=False)
    return {"replace": {WEIGHTS_CONFIG: json.dumps(config).encode(), f"{ROOT}data/weights/weight_0": payload}}


def _old_format(dst: Path, hostile: str, payload: bytes) -> Path:
    """Write the pre-2.8 layout torch.export.load falls back to, with one hostile artifact."""
    from torch._export.serde.schema import SCHEMA_VERSION

    with zipfile.ZipFile(SOURCE) as src, zipfile.ZipFile(dst, "w") as out:
        out.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
        out.writestr("serialized_exported_program.json", src.read(MODEL_JSON))
        for name in ("serialized_state_dict.pt", "serialized_constants.pt", "serialized_example_inputs.pt"):
            out.writestr(name, payload if name == hostile else b"")
    return dst


# case -> (entry torch would unpickle, how to build the archive from a marker path and a destination)
PICKLE_CASES: dict[str, tuple[str, Any]] = {
    "sample-inputs": (SAMPLE_INPUTS, lambda m, d: _rewrite(d, {SAMPLE_INPUTS: _torch_saved(m)})),
    "sample-inputs-raw-pickle": (SAMPLE_INPUTS, lambda m, d: _rewrite(d, {SAMPLE_INPUTS: _raw_pickle(m)})),
    "pickled-weight": (f"{ROOT}data/weights/weight_0", lambda m, d: _rewrite(d, **_pickled_weight(_raw_pickle(m)))),
    "pickled-constant": (
        f"{ROOT}data/constants/tensor_0",
        lambda m, d: _rewrite(
            d, {CONSTANTS_CONFIG: _payload_config("tensor_0")}, {f"{ROOT}data/constants/tensor_0": _raw_pickle(m)}
        ),
    ),
    "opaque-object": (
        f"{ROOT}data/constants/opaque_obj_0",
        lambda m, d: _rewrite(
            d,
            {CONSTANTS_CONFIG: _payload_config("opaque_obj_0")},
            {f"{ROOT}data/constants/opaque_obj_0": _raw_pickle(m)},
        ),
    ),
    "custom-object": (
        f"{ROOT}data/constants/custom_obj_0",
        lambda m, d: _rewrite(
            d,
            {CONSTANTS_CONFIG: _payload_config("custom_obj_0")},
            {f"{ROOT}data/constants/custom_obj_0": _raw_pickle(m)},
        ),
    ),
    "legacy-weights": (
        f"{ROOT}data/weights/model.pt",
        lambda m, d: _rewrite(d, add={f"{ROOT}data/weights/model.pt": _torch_saved(m)}),
    ),
    "legacy-constants": (
        f"{ROOT}data/constants/model.pt",
        lambda m, d: _rewrite(d, add={f"{ROOT}data/constants/model.pt": _raw_pickle(m)}),
    ),
    "old-format-example-inputs": (
        "serialized_example_inputs.pt",
        lambda m, d: _old_format(d, "serialized_example_inputs.pt", _torch_saved(m)),
    ),
    "old-format-state-dict": (
        "serialized_state_dict.pt",
        lambda m, d: _old_format(d, "serialized_state_dict.pt", _torch_saved(m)),
    ),
    "old-format-constants": (
        "serialized_constants.pt",
        lambda m, d: _old_format(d, "serialized_constants.pt", _raw_pickle(m)),
    ),
}


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    """A path only a payload would create; it must still be absent when the test ends, pass or fail."""
    path = tmp_path / "payload-ran"
    yield path
    assert not path.exists(), "a payload stored in the model file ran"


@pytest.mark.parametrize("case", sorted(PICKLE_CASES))
def test_hostile_pickle_entry_is_refused_before_torch_reads_it(case: str, marker: Path, tmp_path: Path) -> None:
    entry, build = PICKLE_CASES[case]
    bad = build(marker, tmp_path / "model.pt2")

    with pytest.raises(InputError) as caught:
        modelio.load_model(str(bad))

    assert f"'model.pt2' entry '{entry}'" in caught.value.message
    assert "--allow-pickle" in (caught.value.hint or "")
    assert not marker.exists()


@pytest.mark.parametrize("case", sorted(PICKLE_CASES))
def test_torch_cannot_unpickle_unsafely_even_if_the_check_misses(
    case: str, marker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, build = PICKLE_CASES[case]
    bad = build(marker, tmp_path / "model.pt2")
    monkeypatch.setattr(pt2_archive, "check_pt2", lambda _path: None)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # must not re-open the unsafe path

    with pytest.raises(InputError):
        modelio.load_model(str(bad))

    assert not marker.exists()


def test_cli_build_of_a_hostile_pt2_exits_bad_input_and_writes_nothing(marker: Path, tmp_path: Path) -> None:
    bad = _rewrite(tmp_path / "model.pt2", {SAMPLE_INPUTS: _torch_saved(marker)})
    out = tmp_path / "dist"

    result = CliRunner().invoke(
        main, ["build", "--target", "rpi", str(bad), "--data", str(DIGITS / "data.npz"), "--out", str(out)]
    )

    assert result.exit_code == ExitStatus.BAD_INPUT
    assert SAMPLE_INPUTS in result.stderr and "--allow-pickle" in result.stderr
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())


def test_aoti_native_code_is_refused(tmp_path: Path) -> None:
    entry = f"{ROOT}data/aotinductor/model/model.wrapper.so"
    bad = _rewrite(tmp_path / "model.pt2", add={entry: b"\x7fELF not really"})

    with pytest.raises(InputError, match="AOTInductor"):
        modelio.load_model(str(bad))


def test_shape_expression_that_sympy_would_eval_is_refused(marker: Path, tmp_path: Path) -> None:
    program = _source_json(MODEL_JSON)
    sizes = next(iter(program["graph_module"]["graph"]["tensor_values"].values()))["sizes"]
    sizes[0] = {"as_expr": {"expr_str": f"__import__('pathlib').Path({str(marker)!r}).touch()", "hint": None}}
    bad = _rewrite(tmp_path / "model.pt2", {MODEL_JSON: json.dumps(program).encode()})

    with pytest.raises(InputError, match=f"entry '{MODEL_JSON}' has a shape expression"):
        modelio.load_model(str(bad))


def test_treespec_naming_a_module_to_import_is_refused(
    marker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "edgekit_test_writes_marker"
    (tmp_path / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Kind: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    program = _source_json(MODEL_JSON)
    signature = program["graph_module"]["module_call_graph"][0]["signature"]
    in_spec = json.loads(signature["in_spec"])
    in_spec[1]["children_spec"][1]["context"] = json.dumps([{"__enum__": True, "fqn": f"{module}:Kind", "name": "a"}])
    signature["in_spec"] = json.dumps(in_spec)
    bad = _rewrite(tmp_path / "model.pt2", {MODEL_JSON: json.dumps(program).encode()})

    with pytest.raises(InputError, match=f"names '{module}:Kind' for torch to import"):
        modelio.load_model(str(bad))

    assert module not in sys.modules


def test_guards_code_in_the_file_never_runs(marker: Path, tmp_path: Path) -> None:
    program = _source_json(MODEL_JSON)
    program["guards_code"] = [f"__import__('pathlib').Path({str(marker)!r}).touch() is None"]
    bad = _rewrite(tmp_path / "model.pt2", {MODEL_JSON: json.dumps(program).encode()})

    loaded = modelio.load_model(str(bad))
    modelio.run_torch(loaded.module, np.zeros((2, 1, 8, 8), dtype=np.float32))

    assert not marker.exists()


def test_benign_pt2_loads_and_runs() -> None:
    loaded = modelio.load_model(str(SOURCE))

    assert loaded.facts["format"] == "torch.export" and loaded.facts["sha256"] == sha256_of(SOURCE)
    (example,) = loaded.example_inputs.values()  # type: ignore[union-attr]
    assert example.shape == (1, 1, 8, 8)
    assert modelio.run_torch(loaded.module, example).shape == (1, 10)


class _Pairs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, 2).sum(0) * (x.shape[0] % 3)


def test_dynamic_shape_pt2_with_shape_expressions_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "pairs.pt2"
    half = torch.export.Dim("half", min=2, max=32)
    program = torch.export.export(_Pairs(), (torch.randn(4, 6),), dynamic_shapes=({0: 2 * half},))
    torch.export.save(program, str(path))
    with zipfile.ZipFile(path) as archive:
        assert b"expr_str" in archive.read("pairs/models/model.json")  # srepr strings the check must accept

    loaded = modelio.load_model(str(path))

    assert loaded.module(torch.ones(8, 6)).tolist() == [48.0, 48.0]
    with pytest.raises(RuntimeError):  # the input check survives check_guards=False
        loaded.module(torch.ones(7, 6))


def test_pickle_format_weight_holding_a_plain_tensor_still_loads(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(SOURCE) as src:  # weight_0 as torch.save writes it: safe for weights_only
        tensor = torch.frombuffer(bytearray(src.read(f"{ROOT}data/weights/weight_0")), dtype=torch.float32)
    torch.save(torch.nn.Parameter(tensor.reshape(16, 1, 3, 3).clone()), buffer)
    good = _rewrite(tmp_path / "model.pt2", **_pickled_weight(buffer.getvalue()))

    loaded = modelio.load_model(str(good))

    (example,) = loaded.example_inputs.values()  # type: ignore[union-attr]
    expected = modelio.run_torch(modelio.load_model(str(SOURCE)).module, example)
    np.testing.assert_allclose(modelio.run_torch(loaded.module, example), expected, rtol=1e-6)


def test_refuse_unsafe_loads_restores_environment_and_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.export.pt2_archive._package as package

    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    before = (package.pickle, package._load_aoti, torch._C._pickle_load_obj)

    with pt2_archive.refuse_unsafe_loads(), pytest.raises(pickle.UnpicklingError):
        package.pickle.loads(b"")

    import os

    assert (package.pickle, package._load_aoti, torch._C._pickle_load_obj) == before
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"


@pytest.mark.parametrize("name", ["model/../../evil.txt", "/etc/evil.txt", "model\\..\\evil.txt", "C:/evil.txt"])
def test_path_traversal_entry_is_refused(name: str, tmp_path: Path) -> None:
    bad = _rewrite(tmp_path / "model.pt2", add={name: b"x"})

    with pytest.raises(InputError, match="unsafe entry name"):
        modelio.load_model(str(bad))


def test_entry_shadowed_by_a_case_variant_is_refused(marker: Path, tmp_path: Path) -> None:
    # torch's zip reader finds names ignoring case; Python's zipfile does not, so the two could read different bytes.
    bad = _rewrite(tmp_path / "model.pt2", add={SAMPLE_INPUTS.replace("model.pt", "MODEL.pt"): _torch_saved(marker)})

    with pytest.raises(InputError, match="two entries named"):
        modelio.load_model(str(bad))


def test_truncated_pt2_is_bad_input(tmp_path: Path) -> None:
    data = SOURCE.read_bytes()
    bad = tmp_path / "model.pt2"
    bad.write_bytes(data[: len(data) // 2])

    with pytest.raises(InputError, match="not a zip archive"):
        modelio.load_model(str(bad))


def test_corrupt_entry_is_bad_input(tmp_path: Path) -> None:
    data = bytearray(SOURCE.read_bytes())
    at = data.index(b'"graph_module"')  # the entries are stored uncompressed: change a byte of model.json
    data[at + 1] ^= 0x20
    bad = tmp_path / "model.pt2"
    bad.write_bytes(bytes(data))

    with pytest.raises(InputError, match="damaged"):
        modelio.load_model(str(bad))


FACTORY = """
import torch


def build():
    return torch.nn.Linear(4, 2)
"""


def test_factory_hash_covers_the_model_source(tmp_path: Path) -> None:
    source, weights = tmp_path / "net.py", tmp_path / "weights.pt"
    source.write_text(FACTORY)
    torch.save(torch.nn.Linear(4, 2).state_dict(), weights)
    before = modelio.load_model(f"{source}:build", weights=weights, input_shape=(1, 4)).facts

    source.write_text(FACTORY + "\n# the architecture changed\n")
    after = modelio.load_model(f"{source}:build", weights=weights, input_shape=(1, 4)).facts

    assert before["weights_sha256"] == after["weights_sha256"] == sha256_of(weights)
    assert before["source_sha256"] != after["source_sha256"] == sha256_of(source)
    assert before["sha256"] != after["sha256"]


def test_module_factory_records_the_module_file() -> None:
    facts = modelio.load_model("tests.tiny_models:tiny_cnn", input_shape=(1, 1, 8, 8)).facts

    module_file = Path(sys.modules["tests.tiny_models"].__file__ or "")
    assert facts["source"] == str(module_file) and facts["source_sha256"] == sha256_of(module_file)
    assert facts["weights_sha256"] is None and facts["sha256"] is not None
