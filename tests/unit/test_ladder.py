"""The repair ladder's plan: cheapest rungs first, each a real change, within the layer budget."""

from __future__ import annotations

from edgekit import ladder
from edgekit.backends._layers import check_layer_paths, covered
from edgekit.errors import ConfigError
from edgekit.recipe import CalibrationMethod, QuantizeConfig


def test_calibration_rungs_turn_per_channel_on_first_and_skip_the_method_in_use() -> None:
    base = QuantizeConfig(per_channel=False)
    methods = [CalibrationMethod.MINMAX, CalibrationMethod.ENTROPY, CalibrationMethod.PERCENTILE]
    rungs = ladder.calibration_rungs(base, methods)

    assert [r.name for r in rungs] == ["per-channel", "calibration entropy", "calibration percentile"]
    assert all(r.quantize.per_channel for r in rungs)
    assert rungs[1].quantize.calibration_method is CalibrationMethod.ENTROPY


def test_single_layer_rungs_leave_one_layer_each_in_float() -> None:
    rungs = ladder.single_layer_rungs(QuantizeConfig(), ["fc1", "conv2", "conv1"], 2)

    assert [r.quantize.keep_float for r in rungs] == [("fc1",), ("conv2",)]


def test_growing_rungs_try_16_bits_before_float_and_stop_at_the_limit() -> None:
    rungs = ladder.growing_rungs(QuantizeConfig(), ["a", "b", "c", "d"], 3, sixteen_bit=True)

    assert [r.name for r in rungs] == ["int16 top 2", "float top 2", "int16 top 3", "float top 3"]
    assert rungs[0].quantize.int16_activations == ("a", "b") and rungs[0].quantize.keep_float == ()
    assert rungs[3].quantize.keep_float == ("a", "b", "c")
    assert ladder.growing_rungs(QuantizeConfig(), ["a"], 4, sixteen_bit=False) == []


def test_a_module_path_covers_its_submodules_only() -> None:
    assert covered("features.3.conv.0", ["features.3"])
    assert not covered("features.30.conv", ["features.3"])


def test_an_unknown_layer_path_is_a_config_error_with_a_suggestion() -> None:
    try:
        check_layer_paths(["hiden"], ["hidden", "head"], "quantize.keep_float")
    except ConfigError as exc:
        assert "hiden" in exc.message and exc.hint == "did you mean 'hidden'?"
    else:
        raise AssertionError("an unknown path was accepted")
