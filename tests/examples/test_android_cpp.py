"""Build the sample C++ consumer (examples/android/cpp) against the executorch wheel and run it on artifacts.

The main test runs it on a real `edgekit build --target android` artifact with the manifest's
tolerance; the others write golden files by hand to reach int64 token inputs and a wrong output.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cmake  # PyPI's cmake: the wheel's CMake package needs >= 3.28
import ninja
import numpy as np
import pytest

from tests.tiny_models import compile_tiny, tiny_cnn, tiny_encoder

SOURCE = Path(__file__).resolve().parents[2] / "examples" / "android" / "cpp"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def golden_check(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """Configure and build the C++ program once; return the executable."""
    import executorch.exir  # noqa: F401  (executorch is a namespace package: find it through a module)

    package = Path(executorch.exir.__file__).resolve().parents[1] / "share" / "cmake"
    build = tmp_path_factory.mktemp("cpp-build")
    cmake_bin = Path(cmake.CMAKE_BIN_DIR) / "cmake"
    configure = [
        str(cmake_bin),
        "-S",
        str(SOURCE),
        "-B",
        str(build),
        "-G",
        "Ninja",
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_MAKE_PROGRAM={Path(ninja.BIN_DIR) / 'ninja'}",
        f"-Dexecutorch_DIR={package}",
    ]
    for command in (configure, [str(cmake_bin), "--build", str(build)]):
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return build / "golden_check"


def _artifact(model, inputs: np.ndarray, scheme: str, out: Path, atol: float) -> Path:  # type: ignore[no-untyped-def]
    """Export `model` to out/model.pte and write golden files from the runtime's own outputs."""
    out.mkdir(parents=True)
    built = compile_tiny("executorch", model, inputs[:1], inputs, scheme, out)
    outputs = built.run(inputs[:3])
    (out / "golden").mkdir()
    for i in range(3):
        np.save(out / "golden" / f"input_{i}.npy", inputs[i : i + 1])
        np.save(out / "golden" / f"output_{i}.npy", outputs[i : i + 1])
    golden = {
        "count": 3,
        "atol": atol,
        "rtol": 0.0,
        "inputs": [f"golden/input_{i}.npy" for i in range(3)],
        "outputs": [f"golden/output_{i}.npy" for i in range(3)],
    }
    (out / "manifest.json").write_text(json.dumps({"golden": golden}))
    return out


def _check(binary: Path, artifact: Path) -> subprocess.CompletedProcess[str]:
    golden = json.loads((artifact / "manifest.json").read_text())["golden"]
    command = [str(binary), str(artifact), "--atol", str(golden["atol"]), "--rtol", str(golden["rtol"])]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_cpp_consumer_passes_on_a_built_digits_artifact(golden_check, digits_android) -> None:
    done = _check(golden_check, digits_android)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 of 4 golden samples matched" in done.stdout


def test_cpp_consumer_reproduces_int8_cnn_golden_outputs(golden_check, tmp_path) -> None:
    inputs = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    artifact = _artifact(tiny_cnn(), inputs, "int8-static", tmp_path / "cnn", atol=1e-4)

    done = _check(golden_check, artifact)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 of 3 golden samples matched" in done.stdout


def test_cpp_consumer_runs_int64_token_inputs(golden_check, tmp_path) -> None:
    tokens = np.random.default_rng(1).integers(0, 100, size=(8, 16)).astype(np.int64)
    artifact = _artifact(tiny_encoder(), tokens, "int8-dynamic", tmp_path / "encoder", atol=1e-4)

    done = _check(golden_check, artifact)

    assert done.returncode == 0, done.stdout + done.stderr


def test_cpp_consumer_fails_on_a_wrong_golden_output(golden_check, tmp_path) -> None:
    inputs = np.random.default_rng(2).standard_normal((8, 1, 8, 8)).astype(np.float32)
    artifact = _artifact(tiny_cnn(), inputs, "fp32", tmp_path / "cnn", atol=1e-4)
    wrong = np.load(artifact / "golden" / "output_1.npy") + 0.5
    np.save(artifact / "golden" / "output_1.npy", wrong)

    done = _check(golden_check, artifact)

    assert done.returncode == 1
    assert "2 of 3 golden samples matched" in done.stdout
