"""The build pipeline: stages hand an immutable `BuildState` forward, in an order checked up front."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from edgekit.errors import EdgekitError, InternalError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from edgekit.backends.base import Backend, Compiled, IoContract
    from edgekit.data import Dataset
    from edgekit.manifest import Manifest
    from edgekit.recipe import QuantizeConfig, Recipe
    from edgekit.targets import TargetSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildState:
    """What one stage hands to the next. Stages return a new state; they never mutate one.

    `model` is the model as compressed so far; `float_model` is the user's model, untouched, and the
    baseline every metric is measured against.
    """

    float_model: torch.nn.Module | None = None
    model: torch.nn.Module | None = None
    io: IoContract | None = None
    example_input: np.ndarray | None = None  # the first input's example (pruning takes one-input models)
    example_inputs: dict[str, np.ndarray] | None = None  # one batch per named input: what the artifact is built for
    data: Dataset | None = None
    baseline: dict[str, np.ndarray] | None = None  # float_model outputs on data.evaluation, by output name
    compiled: Compiled | None = None  # what the backend built, in the work folder
    quantize: QuantizeConfig | None = None  # set when repair built the artifact with other settings than the recipe's
    facts: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    warnings: tuple[str, ...] = ()
    manifest: Manifest | None = None  # set by the package stage
    path: Path | None = None  # the finished artifact folder, set by the package stage

    def evolve(self, **changes: Any) -> BuildState:
        """Return a copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    def with_facts(self, section: str, facts: Mapping[str, Any]) -> BuildState:
        """Return a copy with `facts` merged into the manifest section `section`."""
        merged = {**self.facts.get(section, {}), **facts}
        return self.evolve(facts=MappingProxyType({**self.facts, section: MappingProxyType(merged)}))

    def with_warning(self, message: str) -> BuildState:
        return self.evolve(warnings=(*self.warnings, message))


class Reporter:
    """Says what the build is doing. The default one is silent; the CLI passes a console one."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        yield

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildRequest:
    """What the user asked for: the inputs of one build, as given."""

    model: str
    data: Path | None = None
    weights: Path | None = None
    allow_pickle: bool = False
    out_dir: Path = Path("dist")
    name: str | None = None  # artifact name; defaults to the model file's stem


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """A resolved build: target, recipe, backend and its typed options, all checked before any model loads."""

    target: TargetSpec
    recipe: Recipe
    backend: Backend
    options: Any  # an instance of backend.Options


@dataclass(slots=True, kw_only=True)
class BuildContext:
    """What every stage may read but not change: the plan, the request and the work folder."""

    plan: Plan
    workdir: Path  # scratch space for this build; only what the package stage copies ships
    request: BuildRequest = field(default_factory=lambda: BuildRequest(model=""))
    reporter: Reporter = field(default_factory=Reporter)
    allow_accuracy_failure: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, filled by run_pipeline

    @property
    def recipe(self) -> Recipe:
        return self.plan.recipe

    @property
    def target(self) -> TargetSpec:
        return self.plan.target

    @property
    def backend(self) -> Backend:
        return self.plan.backend


class Stage(Protocol):
    """One step of a build."""

    @property
    def name(self) -> str: ...

    @property
    def requires(self) -> tuple[str, ...]: ...  # stages that must have run before this one, when they run at all

    def applies(self, ctx: BuildContext) -> bool: ...

    def run(self, state: BuildState, ctx: BuildContext) -> BuildState: ...


def check_order(stages: list[Stage]) -> None:
    """Raise InternalError unless every stage comes after the stages it requires."""
    seen: set[str] = set()
    names = {s.name for s in stages}
    for stage in stages:
        missing = [r for r in stage.requires if r in names and r not in seen]
        if missing:
            raise InternalError(f"stage '{stage.name}' is ordered before {missing}, which it requires")
        seen.add(stage.name)


def run_pipeline(stages: list[Stage], state: BuildState, ctx: BuildContext) -> BuildState:
    """Check the order, then run each stage that applies, handing the state forward."""
    check_order(stages)
    for stage in stages:
        if not stage.applies(ctx):
            continue
        started = time.perf_counter()
        with ctx.reporter.stage(stage.name):
            try:
                state = stage.run(state, ctx)
            except EdgekitError as exc:
                if exc.measured is None:  # so that --json can say what a failed build measured
                    exc.measured = {"accuracy": dict(state.facts.get("accuracy", {})), "warnings": list(state.warnings)}
                raise
        ctx.timings[stage.name] = round(time.perf_counter() - started, 3)
    return state
