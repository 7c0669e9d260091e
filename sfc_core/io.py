"""Atomic file writes: write to a temporary name in the same folder, then rename.

A run killed at any moment leaves either the old file or the new one, never half of one.
Every stage writes through these helpers; `BackgroundWriter` runs them in a few threads beside
the caller (the `cams` stage), at most a bounded number waiting. Files and folders get the
permissions the umask gives (as ``open()`` and ``mkdir`` would). A temporary name is
``.<name>.<pid>.<token>.tmp``: ``remove_stale_temporaries(folder)``, which a stage calls on
its output folder at start, deletes those whose writing process is gone (a kill -9 during a
write leaves one behind).

Interruption tests: with ``SFC_KILL_AT=EVENT:N`` set, the process kills itself (SIGKILL, as
``kill -9`` would) at the N-th event whose name starts with EVENT. Events: ``write/<file
name>`` once a file's data is in its temporary file, before the rename (``write/last.pt:2``:
during the second write of a last.pt; ``write/:5``: the fifth atomic write of any file), and
``step`` after each training step (``kill_point("step")`` in ``engine.run_loop``). Each process
counts its own events; in a worker process (refine's pool) the process that started it is
killed first, so the command dies as a whole. Unset, nothing is counted.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import shutil
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

KILL_AT_ENV = "SFC_KILL_AT"
_TMP_SUFFIX = ".tmp"
_events_seen: dict[str, int] = {}


def kill_point(event: str) -> None:
    """SIGKILL this process at the N-th ``event`` matching ``$SFC_KILL_AT`` (see the module
    docstring); a no-op when the variable is unset."""
    spec = os.environ.get(KILL_AT_ENV)
    if not spec:
        return
    prefix, _, count = spec.rpartition(":")
    if event.startswith(prefix):
        _events_seen[prefix] = _events_seen.get(prefix, 0) + 1
        if _events_seen[prefix] == int(count):
            if multiprocessing.parent_process() is not None:    # a stage's worker: the command dies
                os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)


def temporary_sibling(path: str | Path) -> Path:
    """A fresh hidden name beside ``path``, owned by this process (see the module docstring)."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}"


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete, anywhere under ``folder``, the temporary files and folders of writes whose
    process no longer runs on this machine. Returns what was removed."""
    removed = []
    for parent, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            pid = _writer_pid(name)
            if pid is not None and not pid_alive(pid):
                path = Path(parent) / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
                removed.append(path)
        dirs[:] = [d for d in dirs if _writer_pid(d) is None]
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # it exists, under another user
        return True
    return True


def _writer_pid(name: str) -> int | None:
    """The pid in a temporary name ``.<name>.<pid>.<token>.tmp``, else None."""
    if not (name.startswith(".") and name.endswith(_TMP_SUFFIX)):
        return None
    parts = name[: -len(_TMP_SUFFIX)].split(".")
    return int(parts[-2]) if len(parts) >= 4 and parts[-2].isdigit() else None


def _atomic(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, mode.replace("w", "x")) as f:      # created as open() creates: the umask applies
            write(f)
        kill_point(f"write/{path.name}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return _atomic(path, lambda f: f.write(text), mode="w")


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` (stored, not deflated) written atomically. ``np.load`` reads it and the
    ``np.savez_compressed`` files older versions wrote alike. Deflate is not worth it for
    CAM maps: on a 375x500 CAM file it costs 12x the CPU time of the write for a file 27%
    smaller (BENCHMARKS.md, "Feeding the device")."""
    return _atomic(path, lambda f: np.savez(f, **arrays))


class BackgroundWriter:
    """Runs write calls in ``threads`` threads beside the caller; ``submit`` blocks while
    ``depth`` calls wait, so memory stays bounded when writing is the slower side.

    The first error a call raises is raised again in the caller, by the next ``submit`` or
    by leaving the ``with`` block (which waits for every call). Leaving the block on an
    error of the caller's own drops the calls not started yet; running ones finish (atomic
    writes leave no partial file either way).
    """

    def __init__(self, threads: int = 2, depth: int = 8):
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="sfc-writer")
        self._slots = threading.BoundedSemaphore(depth)
        self._pending: list[Future] = []

    def submit(self, write: Callable[..., Any], *args: Any) -> None:
        self._raise_first_error(wait=False)
        self._slots.acquire()
        future = self._pool.submit(write, *args)
        future.add_done_callback(lambda _: self._slots.release())
        self._pending.append(future)

    def _raise_first_error(self, wait: bool) -> None:
        running = []
        for future in self._pending:
            if wait or future.done():
                future.result()                       # raises the call's error
            else:
                running.append(future)
        self._pending = running

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: Any) -> None:
        try:
            if kind is None:
                self._raise_first_error(wait=True)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    import torch

    return _atomic(path, lambda f: torch.save(obj, f))


def atomic_save_png(path: str | Path, image: Any) -> Path:
    """Save a ``PIL.Image`` as PNG atomically (palette images keep their palette)."""
    return _atomic(path, lambda f: image.save(f, format="PNG"))


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line (a line is written whole by one ``write`` call)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
