"""`import edgekit` and `edgekit --help` must not load any heavy runtime."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "onnx", "onnxruntime", "executorch", "coremltools", "torchao", "torch_pruning")

PROBE = """
import sys
{body}
heavy = [m for m in {heavy!r} if m in sys.modules]
print(",".join(heavy))
"""


def _loaded_after(body: str) -> str:
    code = PROBE.format(body=body, heavy=HEAVY)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_import_edgekit_is_lean() -> None:
    assert _loaded_after("import edgekit, edgekit.api, edgekit.recipe, edgekit.targets") == ""


def test_cli_help_and_listings_are_lean() -> None:
    body = """
from click.testing import CliRunner
from edgekit.cli import main
for args in (["--help"], ["build", "--help"], ["targets"], ["recipes"]):
    assert CliRunner().invoke(main, args).exit_code == 0, args
"""
    assert _loaded_after(body) == ""
