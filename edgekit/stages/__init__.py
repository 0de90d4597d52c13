"""The build stages, one per file. `stages_for` puts them in the order a backend declares."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgekit.stages.export import ExportStage
from edgekit.stages.load import LoadStage
from edgekit.stages.package import PackageStage
from edgekit.stages.prune import PruneStage
from edgekit.stages.quantize import QuantizeStage
from edgekit.stages.verify import VerifyStage

if TYPE_CHECKING:
    from edgekit.backends import Backend
    from edgekit.pipeline import Stage


def stages_for(backend: Backend) -> list[Stage]:
    """Return load -> prune -> (quantize, export in the backend's order) -> verify -> package."""
    by_name: dict[str, Stage] = {"quantize": QuantizeStage(), "export": ExportStage()}
    middle = [by_name[name] for name in backend.stage_order]
    return [LoadStage(), PruneStage(), *middle, VerifyStage(), PackageStage()]
