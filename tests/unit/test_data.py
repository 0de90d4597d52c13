from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.data import check_shape, load_data
from edgekit.errors import InputError
from edgekit.recipe import DataConfig, Preprocessing

EXAMPLE = {"input": np.zeros((1, 1, 8, 8), dtype=np.float32)}


def _npz(path: Path, n: int = 40, **extra: np.ndarray) -> Path:
    rng = np.random.default_rng(1)
    np.savez(path, inputs=rng.standard_normal((n, 1, 8, 8)).astype(np.float32), labels=rng.integers(0, 10, n), **extra)
    return path


def test_split_is_deterministic_disjoint_and_sized(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", n=40)
    config = DataConfig(calibration_size=8, evaluation_size=100, seed=3)

    a = load_data(path, config, Preprocessing(), EXAMPLE)
    b = load_data(path, config, Preprocessing(), EXAMPLE)

    cal, ev = a.calibration["input"], a.evaluation["input"]
    assert len(cal) == 8 and len(ev) == 32
    np.testing.assert_array_equal(ev, b.evaluation["input"])
    assert not any((cal[:, None] == ev[None]).all(axis=(2, 3, 4)).ravel())
    assert a.provenance["sha256"] and a.provenance["seed"] == 3


def test_calibration_never_takes_more_than_half(tmp_path: Path) -> None:
    data = load_data(_npz(tmp_path / "d.npz", n=10), DataConfig(calibration_size=512), Preprocessing(), EXAMPLE)
    assert data.calibration_count == 5 and data.evaluation_count == 5


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: np.savez(p, inputs=np.zeros((0, 1, 8, 8), np.float32)), "0 samples"),
        (lambda p: np.savez(p, images=np.zeros((4, 1, 8, 8), np.float32)), "no array for input 'input'"),
        (lambda p: p.write_bytes(b"PK\x03\x04 this is not a zip"), "not a readable .npz"),
        (lambda p: np.savez(p, inputs=np.zeros((4, 1, 8, 8), np.float32), labels=np.zeros(3)), "labels have shape"),
    ],
)
def test_bad_data_is_a_clear_input_error(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(InputError, match=message):
        load_data(path, DataConfig(), Preprocessing(), EXAMPLE)


def test_wrong_file_type_for_data(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("1,2,3")
    with pytest.raises(InputError, match="neither an .npz"):
        load_data(path, DataConfig(), Preprocessing(), EXAMPLE)


def test_shape_mismatch_names_both_shapes(tmp_path: Path) -> None:
    data = load_data(_npz(tmp_path / "d.npz"), DataConfig(), Preprocessing(), EXAMPLE)
    with pytest.raises(InputError, match=r"\(1, 8, 8\).*\(3, 8, 8\)"):
        check_shape(data, {"input": np.zeros((1, 3, 8, 8), np.float32)})


def test_image_folder_applies_the_recipe_preprocessing(tmp_path: Path) -> None:
    from PIL import Image

    for label, value in (("dark", 0), ("light", 255)):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.fromarray(np.full((16, 16), value, np.uint8)).save(tmp_path / label / f"{i}.png")
    prep = Preprocessing(color="grayscale", resize=(8, 8), scale=1 / 255, mean=(0.5,), std=(0.5,))

    data = load_data(tmp_path, DataConfig(calibration_size=2), prep, EXAMPLE)

    assert data.kind == "images" and data.label_names == ("dark", "light")
    values = np.concatenate([data.calibration["input"], data.evaluation["input"]]).reshape(6, -1)
    assert set(np.round(values[:, 0], 3)) == {-1.0, 1.0}
    assert data.preprocessing["resize"] == [8, 8]


def test_synthetic_data_is_labelled(tmp_path: Path) -> None:
    data = load_data(None, DataConfig(synthetic_samples=8), Preprocessing(), EXAMPLE)
    assert data.is_synthetic and not data.has_labels and data.calibration_count == 4


def _two_inputs() -> dict[str, np.ndarray]:
    return {"image": np.zeros((1, 1, 8, 8), np.float32), "tokens": np.zeros((1, 6), np.int64)}


def test_several_inputs_come_from_arrays_named_after_them(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, image=np.ones((10, 1, 8, 8)), tokens=np.arange(60, dtype=np.int32).reshape(10, 6))

    data = load_data(path, DataConfig(calibration_size=4), Preprocessing(), _two_inputs())

    assert set(data.evaluation) == {"image", "tokens"} and data.evaluation_count == 6
    assert data.evaluation["image"].dtype == np.float32 and data.evaluation["tokens"].dtype == np.int64
    assert data.preprocessing["status"] == "unknown"  # never a silent default


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"image": np.ones((4, 1, 8, 8), np.float32)}, "no array for input 'tokens'"),
        (
            {"image": np.ones((4, 1, 8, 8)), "tokens": np.ones((4, 6)), "mask": np.ones((4, 6))},
            "not model inputs: mask",
        ),
        ({"image": np.ones((4, 1, 8, 8)), "tokens": np.ones((3, 6))}, "different numbers of samples"),
    ],
)
def test_missing_extra_or_uneven_arrays_name_the_input(tmp_path: Path, arrays: dict, message: str) -> None:  # type: ignore[type-arg]
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError, match=message):
        load_data(path, DataConfig(), Preprocessing(), _two_inputs())


def test_ordered_split_keeps_consecutive_steps(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, inputs=np.arange(20, dtype=np.float32).reshape(20, 1))

    data = load_data(path, DataConfig(calibration_size=5, evaluation_size=8), Preprocessing(),
                     {"input": np.zeros((1, 1), np.float32)}, ordered=True)  # fmt: skip

    assert data.calibration["input"].ravel().tolist() == [0, 1, 2, 3, 4]
    assert data.evaluation["input"].ravel().tolist() == [5, 6, 7, 8, 9, 10, 11, 12]
