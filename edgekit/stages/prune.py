"""Prune the model (placeholder until the pruning stage lands): runs only when prune.ratio > 0."""

from __future__ import annotations

from edgekit.errors import ConfigError
from edgekit.pipeline import BuildContext, BuildState


class PruneStage:
    name = "prune"
    requires = ("load",)

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.recipe.prune.ratio > 0

    def run(self, state: BuildState, ctx: BuildContext) -> BuildState:
        raise ConfigError("pruning is not available in this version", hint="set prune.ratio = 0")
