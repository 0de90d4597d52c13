"""The build stages, one per file, in the one order a build runs them."""

from __future__ import annotations

from edgekit.pipeline import Stage
from edgekit.stages.compile import CompileStage
from edgekit.stages.load import LoadStage
from edgekit.stages.package import PackageStage
from edgekit.stages.prune import PruneStage
from edgekit.stages.repair import RepairStage
from edgekit.stages.verify import VerifyStage


def build_stages() -> list[Stage]:
    """Return load -> prune -> compile (quantize + export, in the backend's order) -> repair -> verify -> package."""
    return [LoadStage(), PruneStage(), CompileStage(), RepairStage(), VerifyStage(), PackageStage()]
