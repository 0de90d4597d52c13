from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.data import check_shape, load_data
from edgekit.errors import InputError
from edgekit.recipe import DataConfig, Preprocessing

EXAMPLE = np.zeros((1, 1, 8, 8), dtype=np.float32)


def _npz(path: Path, n: int = 40, **extra: np.ndarray) -> Path:
    rng = np.random.default_rng(1)
    np.savez(path, inputs=rng.standard_normal((n, 1, 8, 8)).astype(np.float32), labels=rng.integers(0, 10, n), **extra)
    return path


def test_split_is_deterministic_disjoint_and_sized(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", n=40)
    config = DataConfig(calibration_size=8, evaluation_size=100, seed=3)

    a = load_data(path, config, Preprocessing(), EXAMPLE)
    b = load_data(path, config, Preprocessing(), EXAMPLE)

    assert len(a.calibration) == 8 and len(a.evaluation) == 32
    np.testing.assert_array_equal(a.evaluation, b.evaluation)
    assert not any((a.calibration[:, None] == a.evaluation[None]).all(axis=(2, 3, 4)).ravel())
    assert a.provenance["sha256"] and a.provenance["seed"] == 3


def test_calibration_never_takes_more_than_half(tmp_path: Path) -> None:
    data = load_data(_npz(tmp_path / "d.npz", n=10), DataConfig(calibration_size=512), Preprocessing(), EXAMPLE)
    assert len(data.calibration) == 5 and len(data.evaluation) == 5


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: np.savez(p, inputs=np.zeros((0, 1, 8, 8), np.float32)), "0 samples"),
        (lambda p: np.savez(p, images=np.zeros((4, 1, 8, 8), np.float32)), "no 'inputs' array"),
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
        check_shape(data, np.zeros((1, 3, 8, 8), np.float32))


def test_image_folder_applies_the_recipe_preprocessing(tmp_path: Path) -> None:
    from PIL import Image

    for label, value in (("dark", 0), ("light", 255)):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.fromarray(np.full((16, 16), value, np.uint8)).save(tmp_path / label / f"{i}.png")
    prep = Preprocessing(color="grayscale", resize=(8, 8), scale=1 / 255, mean=(0.5,), std=(0.5,))

    data = load_data(tmp_path, DataConfig(calibration_size=2), prep, EXAMPLE)

    assert data.kind == "images" and data.label_names == ("dark", "light")
    values = np.concatenate([data.calibration, data.evaluation]).reshape(6, -1)
    assert set(np.round(values[:, 0], 3)) == {-1.0, 1.0}
    assert data.preprocessing["resize"] == [8, 8]


def test_synthetic_data_is_labelled(tmp_path: Path) -> None:
    data = load_data(None, DataConfig(synthetic_samples=8), Preprocessing(), EXAMPLE)
    assert data.is_synthetic and not data.has_labels and len(data.calibration) == 4
