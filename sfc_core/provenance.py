"""What made a stage's outputs, so that a stage reuses them only when they are what it would make.

Every output folder holds ``provenance.json`` (what its outputs were made from: a checkpoint's
weights digest, the inputs' records, the settings), every evaluation file a ``made_from``. A
stage compares the record of what it would make: equal, finished files are kept; else one line
says what changed and everything is made again.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sfc_core.errors import SfcError
from sfc_core.io import atomic_write_json

RECORD = "provenance.json"


def canonical(record: Any) -> Any:
    """``record`` as JSON would give it back (tuples as lists, keys as strings), for comparing."""
    return json.loads(json.dumps(record, sort_keys=True))


def digest(record: Any) -> str:
    """A short, stable hex digest of a JSON-able record (sha256 of its canonical JSON, 16 hex)."""
    text = json.dumps(canonical(record), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 (16 hex) over a state dict's names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tensor.dtype}:{tuple(state_dict[name].shape)};".encode())
        h.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()[:16]


def checkpoint_record(path: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint contributes to a record: its file name, step and weights digest."""
    return {"file": path.name, "step": int(ckpt.get("step", 0)), "weights": weights_digest(ckpt["model"])}


def read_record(folder: Path) -> dict[str, Any] | None:
    """The record of ``folder``, None when it has none (or an unreadable one)."""
    try:
        record = json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def differences(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """One line naming what changed between two records ("no record" when there was none)."""
    if old is None:
        return "it has no provenance record"
    old, new = canonical(old), canonical(new)
    changed = [f"{key} {_short(old.get(key))} -> {_short(new.get(key))}"
               for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    return "; ".join(changed) or "nothing"


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def claim_folder(folder: Path, record: dict[str, Any], what: str) -> bool:
    """Make ``folder`` the home of outputs made by ``record``: kept when its record is equal
    (True), else emptied with one line naming ``what`` changed, and the record written (False)."""
    folder = Path(folder)
    old = read_record(folder)
    if is_fresh(old, record):
        return True
    outputs = _outputs(folder)
    if outputs:
        print(f"{what}: {folder} was made from other inputs ({differences(old, record)}): made again")
        for path in outputs:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / RECORD, record)
    return False


def _outputs(folder: Path) -> list[Path]:
    """What ``folder`` holds besides hidden entries (the run lock, temporaries of writes)."""
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []


def refuse_other_inputs(folder: Path, record: dict[str, Any], what: str, fix: str) -> None:
    """SfcError when ``folder`` holds outputs of another (or no) record: for outputs too costly
    to remake silently; ``fix`` names the flag that does."""
    folder = Path(folder)
    old = read_record(folder)
    if _outputs(folder) and not is_fresh(old, record):
        raise SfcError(f"{what} in {folder} was made from other inputs ({differences(old, record)})",
                       path=folder, fix=fix)


def is_fresh(made_from: Any, record: dict[str, Any]) -> bool:
    return made_from is not None and canonical(made_from) == canonical(record)


def unfinished(paths: dict[str, Path], complete: Callable[[Path], bool], what: str, files: str) -> list[str]:
    """The ids whose file is missing or incomplete, the incomplete ones counted in one line."""
    todo = [image_id for image_id, path in paths.items() if not complete(path)]
    broken = [image_id for image_id in todo if paths[image_id].exists()]
    if broken:
        print(f"{what}: {len(broken)} unreadable {files} made again, first: {broken[0]}")
    return todo


def png_complete(path: Path) -> bool:
    """A cheap check that a PNG was written to its end: it ends with the IEND chunk."""
    try:
        with open(path, "rb") as f:
            f.seek(-12, 2)
            return f.read(12) == b"\x00\x00\x00\x00IEND\xaeB`\x82"
    except OSError:
        return False


def npz_complete(path: Path, fields: tuple[str, ...]) -> bool:
    """A cheap check that an .npz was written to its end: its zip directory lists every field."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return all(f"{name}.npy" in names for name in fields)

