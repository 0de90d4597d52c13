from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgekit import load_recipe, resolve
from edgekit.api import list_recipes, list_targets
from edgekit.backends import get_backend
from edgekit.cli import main
from edgekit.errors import ConfigError, ExitStatus
from edgekit.recipe import (
    LatencyConfig,
    Range,
    Recipe,
    Scheme,
    build_recipe,
    parse_overrides,
    parse_table,
    recipe_to_table,
    recipe_to_toml,
    validate_recipe,
)

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits"


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
        parse_table(get_backend(spec.backend).Options, spec.options, "options", what="option")
        load_recipe(spec.default_recipe)
    for name in list_recipes():
        load_recipe(name)


def test_rpi4_is_data_only_and_differs_from_rpi_in_device() -> None:
    rpi, rpi4 = resolve("rpi").target, resolve("rpi4").target
    assert rpi.backend == rpi4.backend == "onnxruntime"
    assert rpi.device["int8_dot_product"] is True and rpi4.device["int8_dot_product"] is False


def test_unknown_backend_option_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_table(get_backend("onnxruntime").Options, {"threds": 2}, "options", what="option")
    assert "unknown option key 'options.threds'" in err.value.message
    assert "threads" in (err.value.hint or "")


def _refused(*layers: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        build_recipe(*layers)
    assert err.value.status == ExitStatus.CONFIG == 3
    return err.value


def test_zero_latency_runs_is_refused_with_its_range() -> None:
    error = _refused({"latency": {"runs": 0}})

    assert error.message == "'latency.runs' must be >= 1, got 0"


def test_negative_golden_samples_is_refused() -> None:
    error = _refused({"golden": {"samples": -1}})

    assert "'golden.samples'" in error.message and ">= 0" in error.message and "-1" in error.message


def test_zero_evaluation_size_is_refused() -> None:
    error = _refused({"data": {"evaluation_size": 0}})

    assert "'data.evaluation_size'" in error.message and ">= 1" in error.message


def test_nan_accuracy_gate_from_set_is_refused() -> None:
    error = _refused(parse_overrides(["gate.max_top1_drop=nan"]))

    assert "'gate.max_top1_drop'" in error.message and "finite" in error.message and "nan" in error.message


@pytest.mark.parametrize(
    ("table", "path"),
    [
        ({"prune": {"ratio": 1.0}}, "prune.ratio"),
        ({"prune": {"ratio": -0.1}}, "prune.ratio"),
        ({"prune": {"recovery": {"learning_rate": 0.0}}}, "prune.recovery.learning_rate"),
        ({"gate": {"min_sqnr_db": math.inf}}, "gate.min_sqnr_db"),
        ({"preprocessing": {"scale": math.inf}}, "preprocessing.scale"),
        ({"preprocessing": {"std": [0.5, 0.0]}}, "preprocessing.std[1]"),
        ({"preprocessing": {"resize": [224]}}, "preprocessing.resize"),
        ({"input": {"shape": [1, 0, 8, 8]}}, "input.shape[1]"),
        ({"data": {"synthetic_samples": 1}}, "data.synthetic_samples"),
    ],
)
def test_other_out_of_range_values_name_their_path(table: dict[str, Any], path: str) -> None:
    assert f"'{path}'" in _refused(table).message


def test_n_must_be_below_m_only_for_n_m_pruning() -> None:
    error = _refused({"prune": {"method": "n:m", "n": 4, "m": 4}})

    assert "'prune.n' must be < 'prune.m'" in error.message
    assert build_recipe({"prune": {"method": "structured", "n": 4, "m": 4}}).prune.n == 4


def test_every_problem_is_reported_at_once() -> None:
    error = _refused(
        {"latency": {"runs": 0}, "golden": {"samples": -1}, "quantize": {"shceme": "fp32"}},
        parse_overrides(["gate.max_top1_drop=nan", "data.evaluation_size=0"]),
    )

    assert "(and 4 more:" in error.message
    for path in ("latency.runs", "golden.samples", "quantize.shceme", "gate.max_top1_drop", "data.evaluation_size"):
        assert path in error.message
    assert "scheme" in (error.hint or "")


def test_boundary_values_are_accepted() -> None:
    recipe = build_recipe(
        {"latency": {"runs": 1, "warmup": 0}, "golden": {"samples": 0}, "gate": {"max_top1_drop": 100}},
        {"prune": {"ratio": 0.0, "method": "n:m", "n": 1, "m": 2}, "preprocessing": {"resize": [32, 32]}},
    )

    assert (recipe.latency.runs, recipe.gate.max_top1_drop, recipe.prune.m) == (1, 100.0, 2)


def test_a_range_may_allow_inf_but_never_nan() -> None:
    allows_inf = Range(ge=0, allow_inf=True)

    assert allows_inf.problems("x", math.inf) == []
    assert allows_inf.problems("x", -math.inf) == ["'x' must be >= 0, got -inf"]
    assert allows_inf.problems("x", math.nan) == ["'x' must be >= 0, got nan"]
    assert Range().problems("x", math.inf) == ["'x' must be a finite number, got inf"]


def test_validate_recipe_checks_a_recipe_made_in_code() -> None:
    recipe = dataclasses.replace(Recipe(), latency=LatencyConfig(runs=0))

    with pytest.raises(ConfigError, match="latency.runs"):
        validate_recipe(recipe)
    assert validate_recipe(Recipe()) == Recipe()


def test_recipe_to_toml_round_trips_non_ascii_text_under_a_header() -> None:
    recipe = build_recipe({"description": 'digits 🚀 — «ünïcode» "quoted"\n', "preprocessing": {"mean": [0.5]}})

    text = recipe_to_toml(recipe, header="resolved recipe\n# kept as is")

    assert text.startswith("# resolved recipe\n# kept as is\n")
    assert build_recipe(tomllib.loads(text)) == recipe
    assert tomllib.loads(text) == recipe_to_table(recipe)


def test_recipe_enums_are_str_enums() -> None:
    assert Scheme("w8") is Scheme.W8
    assert Scheme.W8.value == "w8" == Scheme.W8 == f"{Scheme.W8}"


def test_cli_refuses_an_out_of_range_set_before_loading_the_model(tmp_path: Path) -> None:
    args = ["build", "--target", "rpi", str(DIGITS / "model.pt2"), "--data", str(DIGITS / "data.npz")]

    result = CliRunner().invoke(main, [*args, "--set", "latency.runs=0", "--out", str(tmp_path)])

    assert result.exit_code == 3, result.output
    assert "latency.runs" in result.output
    assert list(tmp_path.iterdir()) == []  # nothing was built or packaged
