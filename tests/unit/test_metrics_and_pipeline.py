from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit import metrics
from edgekit.errors import InternalError
from edgekit.pipeline import BuildState, check_order


def test_sqnr_of_known_noise() -> None:
    ref = np.ones((10, 10))
    assert metrics.sqnr_db(ref, ref * 1.1) == pytest.approx(20.0)
    assert math.isinf(metrics.sqnr_db(ref, ref))


def test_top1_metrics_and_drop() -> None:
    ref = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    test = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = np.array([1, 0, 0, 0])

    found = metrics.compare(ref, test, labels)

    assert found["top1_agreement"] == 75.0
    assert found["float_top1"] == 75.0 and found["artifact_top1"] == 50.0
    assert found["top1_drop"] == 25.0


def test_cosine_of_opposite_rows() -> None:
    assert metrics.cosine(np.ones((2, 3)), -np.ones((2, 3))) == pytest.approx(-1.0)


def test_state_is_immutable_and_facts_merge() -> None:
    state = BuildState().with_facts("quantize", {"a": 1})
    newer = state.with_facts("quantize", {"b": 2}).with_warning("w")

    assert dict(state.facts["quantize"]) == {"a": 1} and state.warnings == ()
    assert dict(newer.facts["quantize"]) == {"a": 1, "b": 2} and newer.warnings == ("w",)
    with pytest.raises(Exception):  # noqa: B017 - frozen dataclass
        state.model = None  # type: ignore[misc]


class _Stage:
    def __init__(self, name: str, requires: tuple[str, ...]) -> None:
        self.name, self.requires = name, requires


def test_stage_order_is_checked_before_running() -> None:
    check_order([_Stage("load", ()), _Stage("export", ("load",)), _Stage("quantize", ("export",))])  # type: ignore[list-item]
    with pytest.raises(InternalError, match="quantize"):
        check_order([_Stage("load", ()), _Stage("quantize", ("export",)), _Stage("export", ("load",))])  # type: ignore[list-item]


def test_version_skew_is_named() -> None:
    from edgekit.compat import TESTED, untested_versions

    assert untested_versions(dict(TESTED)) == []
    [warning] = untested_versions({"executorch": "1.4.0", "numpy": "2.0"})
    assert "executorch 1.4.0" in warning and TESTED["executorch"] in warning
