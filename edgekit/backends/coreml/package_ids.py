"""Content-derived item ids for an `.mlpackage`, so the same model saves to the same bytes.

A package is `Manifest.json` plus `Data/<author>/<path>` items. coremltools gives each item a random
UUID (`itemInfoEntries` keys and `rootModelIdentifier`), so two saves of one model differ in
Manifest.json alone. Nothing else refers to those ids (the model spec names its weights by path), so
they are replaced by UUIDs (version 5) of each item's path and content. The file keeps coremltools'
layout: 4-space indent, sorted keys.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

MANIFEST = "Manifest.json"
NAMESPACE = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")  # RFC 4122's URL namespace


def use_content_ids(package: Path) -> None:
    """Rewrite `package`/Manifest.json so every item id derives from the item's path and bytes."""
    path = package / MANIFEST
    table = json.loads(path.read_text(encoding="utf-8"))
    entries = table["itemInfoEntries"]
    ids = {old: content_id(package / "Data" / item["path"], item["path"]) for old, item in entries.items()}
    if len(set(ids.values())) != len(ids):  # two items of one path cannot happen; never merge items
        raise ValueError(f"{path}: two items would get one id")
    table["itemInfoEntries"] = {ids[old]: item for old, item in entries.items()}
    if table.get("rootModelIdentifier") in ids:
        table["rootModelIdentifier"] = ids[table["rootModelIdentifier"]]
    path.write_text(json.dumps(table, indent=4, sort_keys=True) + "\n", encoding="utf-8")


def content_id(item: Path, name: str) -> str:
    """Return a UUID for the item at `item` (a file, or a folder of files) stored under `name`."""
    digest = hashlib.sha256(name.encode())
    files = sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item]
    for file in files:
        digest.update(file.relative_to(item).as_posix().encode() if item.is_dir() else b"")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return str(uuid.uuid5(NAMESPACE, digest.hexdigest()))
