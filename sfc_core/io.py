"""Atomic file writes (a temporary ``.<name>.<pid>.<token>.tmp`` beside the file, then a rename:
a kill leaves the old file or the new one), ``DiskFull``, the ``BackgroundWriter`` threads, and
stopping: SIGTERM raises ``Terminated`` under ``sigterm_raises``, or only sets ``stop_requested()``
inside ``deferred_stop()``; interruption tests kill at set points (``kill_point``).
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from sfc_core.errors import SfcError

KILL_AT_ENV = "SFC_KILL_AT"
KILL_SIGNAL_ENV = "SFC_KILL_SIGNAL"      # SIGKILL unless it names another (tests: SIGTERM, SIGINT)
_TMP_SUFFIX = ".tmp"
_events_seen: dict[str, int] = {}


def kill_point(event: str) -> None:
    """With ``SFC_KILL_AT=EVENT:N``, SIGKILL this process (and a worker's parent) at the N-th event
    starting with EVENT: ``write/<file name>`` before a rename, ``step`` after a training step."""
    spec = os.environ.get(KILL_AT_ENV)
    if not spec:
        return
    prefix, _, count = spec.rpartition(":")
    if event.startswith(prefix):
        _events_seen[prefix] = _events_seen.get(prefix, 0) + 1
        if _events_seen[prefix] == int(count):
            sent = getattr(signal, os.environ.get(KILL_SIGNAL_ENV, "SIGKILL"))
            if multiprocessing.parent_process() is not None:    # a stage's worker: the command dies
                os.kill(os.getppid(), sent)
            os.kill(os.getpid(), sent)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``sigterm_raises``); ``done``: what was saved before stopping."""

    def __init__(self, done: str = ""):
        super().__init__(done)
        self.done = done


_stop = {"deferred": 0, "requested": False, "received": False}


@contextlib.contextmanager
def sigterm_raises():
    """In the block, SIGTERM raises ``Terminated`` in the main thread (recorded in ``deferred_stop()``)."""
    if threading.current_thread() is not threading.main_thread():   # only the main thread may
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    if not isinstance(sys.unraisablehook, _QuietLoaderTeardown):
        sys.unraisablehook = _QuietLoaderTeardown(sys.unraisablehook)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop["requested"] = False


class _QuietLoaderTeardown:
    """After a SIGTERM, a DataLoader iterator's teardown error (its workers ended by the same
    signal) prints nothing; every other unraisable error prints as before."""

    def __init__(self, report: Callable[[Any], None]):
        self.report = report

    def __call__(self, unraisable: Any) -> None:
        teardown = "DataLoaderIter" in getattr(unraisable.object, "__qualname__", "")
        if not (_stop["received"] and teardown and isinstance(unraisable.exc_value, RuntimeError)):
            self.report(unraisable)


def _on_sigterm(signum: int, frame: Any) -> None:
    _stop["received"] = True
    if _stop["deferred"]:
        _stop["requested"] = True
    else:
        raise Terminated()


@contextlib.contextmanager
def deferred_stop():
    """SIGTERM within the block only sets ``stop_requested()``: the caller stops when it is safe."""
    _stop["deferred"] += 1
    try:
        yield
    finally:
        _stop["deferred"] -= 1


def stop_requested() -> bool:
    return _stop["requested"]


def quiet_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: SIGINT ignored, a teardown's broken connections silent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    report = sys.excepthook          # what resource_sharer's thread calls with its error

    def quiet(kind: type, error: BaseException, traceback: Any) -> None:
        if not issubclass(kind, (ConnectionError, EOFError)):
            report(kind, error, traceback)

    sys.excepthook = quiet


def quiet_thread_errors(quiet: Callable[[threading.ExceptHookArgs], bool]) -> None:
    """From now on, uncaught errors of threads that ``quiet(args)`` selects print nothing."""
    report = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not quiet(args):
            report(args)

    threading.excepthook = hook


class DiskFull(SfcError):
    """A write found its disk full (or quota used up): the same command continues once freed."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NO_SPACE_FIX = "free space on that disk (or quota), or move the folder to a larger disk"


def out_of_space(error: BaseException) -> bool:
    """Whether ``error`` or one in its chain is ENOSPC or EDQUOT (torch.save wraps the OSError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in NO_SPACE:
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def disk_full(folder: str | Path, what: str, needed: int | None) -> DiskFull:
    """The error of writing ``what`` (``needed`` bytes, None: unknown) into ``folder`` on a full disk."""
    try:
        free = f", {_bytes(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = ""
    size = f"{_bytes(needed)} needed" if needed is not None else "size unknown"
    return DiskFull(f"no space left on the disk of {folder} to write {what} ({size}{free})", path=folder,
                    fix=f"{NO_SPACE_FIX}, then run the same command again (finished work is kept)")


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


class _Counter(io.RawIOBase):
    """A file that only counts what is written to it: the size a failed write needed."""

    size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = len(data.encode()) if isinstance(data, str) else memoryview(data).nbytes
        self.size += size
        return size


def temporary_sibling(path: str | Path) -> Path:
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}"


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete (and return) the temporaries under ``folder`` whose writer no longer runs here."""
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
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if out_of_space(e):
            counter = _Counter()
            write(counter)
            raise disk_full(path.parent, path.name, counter.size) from None
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return _atomic(path, lambda f: f.write(text), mode="w")


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` (stored, not deflated) written atomically."""
    return _atomic(path, lambda f: np.savez(f, **arrays))


class BackgroundWriter:
    """Write calls in ``threads`` threads beside the caller, at most ``depth`` waiting; a call's
    first error is raised by the next ``submit`` or at the block's end (which waits for all)."""

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
    return _atomic(path, lambda f: image.save(f, format="PNG"))


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line in one ``write`` call (on a full disk none of it, and ``DiskFull``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, default=_json_default) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)   # the umask applies, as open()'s
    try:
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, line) != len(line):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as e:
            os.ftruncate(fd, size)
            if e.errno in NO_SPACE:
                raise disk_full(path.parent, path.name, len(line)) from None
            raise
    finally:
        os.close(fd)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
