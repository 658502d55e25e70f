"""What a folder conversion was made from: its arguments and a fingerprint of its source files.

The record is stored in the converted dataset's `metadata.json` (key `conversion`), so a later conversion
into the same place, or a data config naming the folders, can be compared with it field by field.

The source fingerprint hashes, for every paired file, its role (image / label / instances), file name,
size in bytes and modification time (ns) — not the file contents. Reading the names and `stat` of every
file is cheap enough to repeat at every `data.resolve`, even for large folders, where hashing the contents
would read every image again each time. It sees files added, removed, renamed, rewritten with another
size, or saved again (a new mtime); it does not see an edit that keeps both size and mtime (e.g. a copy
with `cp -p` over a file of the same size), and it calls a fresh copy of the same files (`cp` without `-p`)
different. Directory paths are recorded for the messages, not hashed: a moved folder is the same source.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Sequence

RECORD_FORMAT = 1
# The fields that make two conversions the same dataset, in the order differences are reported.
IDENTITY_FIELDS = ("num_classes", "class_names", "val_fraction", "seed", "instances", "ignore_index",
                   "intensity", "num_files", "sources_sha256")
_DIR_FIELDS = ("images_dir", "labels_dir", "instances_dir")


def _absolute(path: str | None) -> str | None:
    return os.path.abspath(os.path.expanduser(path)) if path else None


def sources_fingerprint(pairs: Sequence[Any]) -> tuple[int, str]:
    """(number of files, sha256 hex) over role, name, size and mtime of every file of `pairs`
    (`folder_importer.FilePair`s); see the module docstring for what it does and does not see."""
    digest = hashlib.sha256()
    count = 0
    for pair in pairs:
        for role in ("image", "label", "instances"):
            path = getattr(pair, role)
            if not path:
                continue
            stat = os.stat(path)
            digest.update(f"{role}\0{os.path.basename(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            count += 1
    return count, digest.hexdigest()


def source_fields(*, pairs: Sequence[Any], images: str, labels: str, instances: str | None) -> dict[str, Any]:
    """The record's source part: `num_files`, `sources_sha256` (`sources_fingerprint`) and the absolute
    directories `images_dir`, `labels_dir`, `instances_dir` (None without instances)."""
    num_files, sha = sources_fingerprint(pairs)
    return {"num_files": num_files, "sources_sha256": sha, "images_dir": _absolute(images),
            "labels_dir": _absolute(labels), "instances_dir": _absolute(instances)}


def make_record(*, pairs: Sequence[Any], images: str, labels: str, instances: str | None, num_classes: int,
                class_names: Sequence[str], val_fraction: float, seed: int, ignore_index: int,
                intensity: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-able record of one conversion (arguments, source directories, source fingerprint). `intensity`: the
    checked scaling of images that are not 8-bit (`image_files.intensity_scaling`), None when not set (a record
    made before it existed reads as None too)."""
    return {"format": RECORD_FORMAT, "num_classes": int(num_classes), "class_names": list(class_names),
            "val_fraction": float(val_fraction), "seed": int(seed), "instances": bool(instances),
            "ignore_index": int(ignore_index), "intensity": dict(intensity) if intensity else None,
            **source_fields(pairs=pairs, images=images, labels=labels, instances=instances)}


def _show(field: str, value: Any) -> str:
    if field == "sources_sha256":
        return str(value)[:12]
    if field == "class_names":
        return "(" + ", ".join(map(str, value)) + ")"
    return repr(value)


def differences(old: Mapping[str, Any], new: Mapping[str, Any],
                fields: Sequence[str] = IDENTITY_FIELDS) -> list[str]:
    """'field old → new' for every field of `fields` whose values differ (a missing field counts as None);
    a changed source fingerprint also names the source directories, old → new."""
    changed = []
    for field in fields:
        before, after = old.get(field), new.get(field)
        if field == "class_names":
            before, after = list(before or ()), list(after or ())
        if before != after:
            changed.append(f"{field} {_show(field, before)} → {_show(field, after)}")
    if old.get("sources_sha256") != new.get("sources_sha256") and "sources_sha256" in fields:
        dirs = ", ".join(f"{old.get(field)} → {new.get(field)}" for field in _DIR_FIELDS
                         if old.get(field) or new.get(field))
        changed.append(f"source files (names, sizes or mtimes) differ: {dirs}")
    return changed


def stored_record(path: str) -> dict[str, Any] | None:
    """The conversion record in dataset directory `path` ({} for a conversion made before seg_jax recorded
    one), or None when `path` holds no conversion."""
    metadata = os.path.join(path, "metadata.json")
    if not os.path.isfile(os.path.join(path, "dataset_info.json")):
        return None
    if not os.path.isfile(metadata):
        return {}
    with open(metadata) as f:
        return dict(json.load(f).get("conversion") or {})
