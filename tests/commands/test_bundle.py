"""`edgekit bundle` and `edgekit.bundle`: a deterministic .tar.gz of a checked artifact folder."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import edgekit
from edgekit.cli import main
from edgekit.errors import ExitStatus
from tests.commands.conftest import copy_artifact


def test_bundling_twice_gives_identical_bytes(cli: CliRunner, digits_rpi: Path, tmp_path: Path) -> None:
    first = edgekit.bundle(digits_rpi, tmp_path / "a" / "digits-rpi.tar.gz")
    second = cli.invoke(main, ["bundle", str(digits_rpi), "--out", str(tmp_path / "b.tar.gz"), "--json"])

    found = json.loads(second.stdout)
    assert second.exit_code == 0 and found["status"] == "ok"
    assert first.read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    assert found["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()


def test_the_bundle_is_normalized(digits_rpi: Path, tmp_path: Path) -> None:
    path = edgekit.bundle(digits_rpi, tmp_path / "bundle.tar.gz")

    header = path.read_bytes()[:10]
    with tarfile.open(path, "r:gz") as tar:
        members = tar.getmembers()

    assert header[3] == 0 and header[4:8] == b"\0\0\0\0"  # no FNAME flag, no gzip timestamp
    names = [m.name for m in members]
    assert names == sorted(names) and f"{digits_rpi.name}/manifest.json" in names
    assert {m.uid for m in members} == {m.gid for m in members} == {0}
    assert {m.uname for m in members} == {m.gname for m in members} == {""}
    assert {m.mtime for m in members} == {0}  # the build had no SOURCE_DATE_EPOCH
    assert f"{digits_rpi.name}/measured.json" not in names and f"{digits_rpi.name}/report.html" not in names
    assert {m.mode for m in members if m.isfile()} == {0o644} and {m.mode for m in members if m.isdir()} == {0o755}


def test_the_extracted_bundle_verifies(digits_android: Path, tmp_path: Path) -> None:
    path = edgekit.bundle(digits_android, tmp_path / "bundle.tar.gz")

    with tarfile.open(path, "r:gz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    found = edgekit.verify(tmp_path / "unpacked" / digits_android.name)

    assert found.status == "passed" and found.golden.within_tolerance


def test_a_tampered_artifact_is_not_bundled(cli: CliRunner, digits_rpi: Path, tmp_path: Path) -> None:
    folder = copy_artifact(digits_rpi, tmp_path)
    golden = folder / "golden" / "0" / "outputs" / "output.npy"
    golden.write_bytes(golden.read_bytes()[:-4] + b"\0\0\0\0")

    result = cli.invoke(main, ["bundle", str(folder), "--json"])

    assert result.exit_code == ExitStatus.BAD_INPUT
    assert "golden/0/outputs/output.npy: sha256 differs" in result.stderr
    assert json.loads(result.stdout)["status"] == "error"
    assert not list(folder.parent.glob("*.tar.gz*"))


@pytest.mark.parametrize("where", ["inside", "stray"])
def test_bundle_refuses_a_bundle_inside_or_a_stray_file(digits_rpi: Path, tmp_path: Path, where: str) -> None:
    folder = copy_artifact(digits_rpi, tmp_path)
    if where == "stray":
        (folder / "notes.txt").write_text("not in the manifest")
    out = folder / "self.tar.gz" if where == "inside" else None

    with pytest.raises(edgekit.EdgekitError) as caught:
        edgekit.bundle(folder, out)

    assert caught.value.status == ExitStatus.BAD_INPUT
    assert ("inside the artifact folder" if where == "inside" else "notes.txt") in caught.value.message
