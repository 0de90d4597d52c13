"""Run a stateful model over consecutive steps, feeding each step's state outputs into the next step's inputs.

A recurrent cell or a streaming detector takes its state in and gives it back out. The recipe's
`io.state` says which output feeds which input (`{hn = "h"}`). The float model and the artifact
each run closed loop, on their own state, so that drift accumulates as it will on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from edgekit.backends.base import IoContract
from edgekit.data import Arrays, count_of

Step = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def initial_state(io: IoContract, state: Mapping[str, str], given: Arrays) -> dict[str, np.ndarray]:
    """Return the state inputs of step 0: the data's first sample when it gives one, else zeros."""
    specs = {t.name: t for t in io.inputs}
    first: dict[str, np.ndarray] = {}
    for name in state.values():
        if name in given:
            first[name] = np.ascontiguousarray(given[name][:1])
        else:
            first[name] = np.zeros(specs[name].shape, dtype=specs[name].dtype)
    return first


def run_sequence(
    step: Step, inputs: Arrays, io: IoContract, state: Mapping[str, str], start: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run `step` over every sample of `inputs` in order, carrying state; return (outputs, state inputs fed)."""
    carried = dict(start)
    fed: dict[str, list[np.ndarray]] = {name: [] for name in state.values()}
    produced: dict[str, list[np.ndarray]] = {name: [] for name in io.output_names}
    stateless = [t.name for t in io.inputs if t.name not in carried]
    for i in range(count_of({n: inputs[n] for n in stateless}) if stateless else count_of(inputs)):
        feeds = {name: np.ascontiguousarray(inputs[name][i : i + 1]) for name in stateless} | carried
        for name in fed:
            fed[name].append(carried[name])
        out = step(feeds)
        for name in produced:
            produced[name].append(np.asarray(out[name]))
        carried = {target: np.asarray(out[source]).astype(carried[target].dtype) for source, target in state.items()}
    return {n: np.concatenate(v) for n, v in produced.items()}, {n: np.concatenate(v) for n, v in fed.items()}
