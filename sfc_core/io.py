"""Atomic file writes: write to a temporary name in the same folder, then rename.

A run killed at any moment leaves either the old file or the new one, never half of one.
Every stage writes through these helpers. `BackgroundWriter` runs such writes in a few
threads beside the caller (the `cams` stage), at most a bounded number waiting.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


def _atomic(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
    CAM maps: measured on a 375x500 CAM file (BENCHMARKS.md, "CAM files") it costs 40x
    the write time for a file 27% smaller."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


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

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_save_png(path: str | Path, image: Any) -> Path:
    """Save a ``PIL.Image`` as PNG atomically (palette images keep their palette)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


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
