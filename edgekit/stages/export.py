"""Export to the target's artifact format through its backend."""

from __future__ import annotations

from edgekit.pipeline import BuildContext, BuildState


class ExportStage:
    name = "export"
    requires = ("load", "prune")

    def applies(self, ctx: BuildContext) -> bool:
        return True

    def run(self, state: BuildState, ctx: BuildContext) -> BuildState:
        return ctx.backend.export(state, ctx)
