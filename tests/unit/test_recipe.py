from __future__ import annotations

import pytest

from edgekit import load_recipe, resolve
from edgekit.api import list_recipes, list_targets
from edgekit.backends import get_backend
from edgekit.errors import ConfigError
from edgekit.recipe import Scheme, build_recipe, parse_overrides


def test_precedence_is_set_over_recipe_over_target_defaults() -> None:
    target = {"gate": {"max_top1_drop": 2.0, "min_sqnr_db": 15.0}}
    recipe_file = {"gate": {"max_top1_drop": 1.5}, "quantize": {"scheme": "int8-static"}}

    recipe = build_recipe(target, recipe_file, parse_overrides(["gate.max_top1_drop=0.5"]))

    assert recipe.gate.max_top1_drop == 0.5
    assert recipe.gate.min_sqnr_db == 15.0
    assert recipe.quantize.scheme is Scheme.INT8_STATIC
    assert recipe.data.calibration_size == 128  # dataclass default


def test_unknown_key_names_its_path_and_nearest_key() -> None:
    with pytest.raises(ConfigError) as err:
        build_recipe({"quantize": {"shceme": "fp32"}})
    assert "quantize.shceme" in err.value.message
    assert "scheme" in (err.value.hint or "")


def test_bad_enum_value_suggests_the_valid_one() -> None:
    with pytest.raises(ConfigError) as err:
        build_recipe(parse_overrides(["quantize.scheme=int8-statc"]))
    assert "int8-static" in (err.value.hint or "")


def test_wrong_type_is_refused() -> None:
    with pytest.raises(ConfigError, match="prune.ratio"):
        build_recipe({"prune": {"ratio": "a lot"}})


def test_set_without_equals_is_refused() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["prune.ratio"])


def test_unknown_target_and_recipe_suggest_names() -> None:
    with pytest.raises(ConfigError) as err:
        resolve("andriod")
    assert "android" in (err.value.hint or "")
    with pytest.raises(ConfigError) as err:
        resolve("rpi", recipe="rpi-int9")
    assert "rpi-int8" in (err.value.hint or "")


def test_scheme_the_target_cannot_run_is_refused_before_any_work() -> None:
    with pytest.raises(ConfigError, match="does not support scheme 'w8'"):
        resolve("rpi", overrides=("quantize.scheme=w8",))


def test_every_bundled_target_and_recipe_loads_and_its_options_are_valid() -> None:
    targets = {t.name: t for t in list_targets()}
    assert {"android", "ios", "macos", "rpi", "rpi4"} <= set(targets)
    for spec in targets.values():
        get_backend(spec.backend).check_options(spec.options)
        load_recipe(spec.default_recipe)
    for name in list_recipes():
        load_recipe(name)


def test_rpi4_is_data_only_and_differs_from_rpi_in_device() -> None:
    rpi, rpi4 = resolve("rpi")[0], resolve("rpi4")[0]
    assert rpi.backend == rpi4.backend == "onnxruntime"
    assert rpi.device["int8_dot_product"] is True and rpi4.device["int8_dot_product"] is False


def test_unknown_backend_option_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        get_backend("onnxruntime").check_options({"threds": 2})
    assert "threads" in (err.value.hint or "")
