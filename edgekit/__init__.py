"""edgekit: PyTorch models to verified, deployable int8 artifacts for phones, Macs and boards.

The public API. Importing it loads no torch, onnxruntime, executorch or coremltools: those load
inside a build, for the target that needs them.
"""

from __future__ import annotations

import os
import sys

# torch's OpenMP threads spin while they wait for work. On a busy machine (a CI runner, a pipeline building
# several models at once) that made the float MobileNetV2 run 28x slower here (3.6 s instead of 0.13 s per
# image); passive waiting kept it at 0.2 s. Only when torch is not loaded yet (the setting is read once), and a
# user's own OMP_WAIT_POLICY wins.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from edgekit.api import (  # noqa: E402 - after the thread setting above
    BuildResult,
    bench,
    build,
    bundle,
    doctor,
    inspect,
    list_recipes,
    list_targets,
    open_artifact,
    resolve,
    run,
    verify,
)
from edgekit.benchmark import BenchResult
from edgekit.errors import EdgekitError, ExitStatus, InternalError
from edgekit.manifest import Manifest, read_manifest
from edgekit.recipe import Recipe, Scheme, build_recipe, read_recipe_file
from edgekit.targets import TargetSpec, load_target

__version__ = "0.1.0"

__all__ = [
    "BenchResult",
    "BuildResult",
    "EdgekitError",
    "ExitStatus",
    "InternalError",
    "Manifest",
    "Recipe",
    "Scheme",
    "TargetSpec",
    "__version__",
    "bench",
    "build",
    "build_recipe",
    "bundle",
    "doctor",
    "inspect",
    "list_recipes",
    "list_targets",
    "load_target",
    "open_artifact",
    "read_manifest",
    "read_recipe_file",
    "resolve",
    "run",
    "verify",
]


def load_recipe(name_or_path: str, overrides: tuple[str, ...] = ()) -> Recipe:
    """Load a bundled or file recipe, with `key=value` overrides, into a validated Recipe."""
    from edgekit.recipe import parse_overrides

    return build_recipe(read_recipe_file(name_or_path), parse_overrides(list(overrides)))


__all__.append("load_recipe")
