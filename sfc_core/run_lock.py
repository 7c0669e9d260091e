"""One writer per run directory: a stage holds ``<folder>/.lock`` while it writes there.

    @claims_run()                                         # the run directory, first argument
    def make_cams(run, ...): ...

Another process stops with one message naming the holder; a dead holder's lock is taken over.
The lock is filelock's flock, or its SoftFileLock marker without flock (docs/architecture.md).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import BaseFileLock, SoftFileLock, Timeout, UnixFileLock

from sfc_core.errors import SfcError
from sfc_core.io import disk_full, out_of_space, remove_stale_temporaries, temporary_sibling
from sfc_core.run_dir import RunDir

NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)   # flock unsupported there
_held: set[Path] = set()      # the folders this process holds


@contextlib.contextmanager
def claim(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s lock for the duration of the block (SfcError if another process holds it)."""
    folder = Path(folder).resolve()
    if int(os.environ.get("RANK", "0")) != 0 or folder in _held:     # rank 0 holds it, or a nested claim
        yield
        return
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    path = RunDir(folder).lock_file
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = _acquire(path)
    except BaseException:
        _remove_if_empty(created)
        raise
    _held.add(folder)
    try:
        remove_stale_temporaries(folder)
        yield
    finally:
        _held.discard(folder)
        if isinstance(lock, UnixFileLock):
            path.unlink(missing_ok=True)    # before the unlock: a waiting process then sees a new file
        lock.release()                      # (a SoftFileLock's release removes its marker)
        _remove_if_empty(created)


def claims_run(folder: Callable[..., str | Path] | None = None) -> Callable:
    """Decorator: the stage holds the lock of ``folder(*args, **kwargs)`` (default: its first argument)."""
    def decorate(stage: Callable) -> Callable:
        @functools.wraps(stage)
        def run_claimed(*args: Any, **kwargs: Any) -> Any:
            with claim(folder(*args, **kwargs) if folder else RunDir(args[0]).root):
                return stage(*args, **kwargs)
        return run_claimed
    return decorate


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a claim created (deepest first) where the stage wrote nothing."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:     # not empty: the stage wrote something
            return


def _acquire(path: Path) -> BaseFileLock:
    """``path`` locked with this process's details in it (flock), else filelock's marker; one
    SfcError naming the folder when that cannot be done."""
    me = (json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join(sys.orig_argv)[:500],
                      "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}) + "\n").encode()
    native = False
    try:
        native = _flock_works(path)
        if native:
            lock = UnixFileLock(path, timeout=0, on_acquired=functools.partial(_write_details, path, me))
        else:
            previous, lock = _holder(path), SoftFileLock(path, timeout=0)
        lock.acquire()
    except Timeout:
        raise _held_error(path, _holder(path), stale_fix=not native) from None
    except OSError as e:
        raise _unwritable(path, e, len(me)) from None
    if not native and previous:      # filelock took over the marker of a holder that is gone
        _taking_over(path, previous)
    return lock


def _flock_works(path: Path) -> bool:
    """Whether the filesystem of ``path`` has flock, tried on a temporary file beside it."""
    probe = temporary_sibling(path)
    fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in NO_FLOCK:
            return False
        raise
    finally:
        os.close(fd)
        probe.unlink()


def _write_details(path: Path, me: bytes, fd: int) -> None:
    """filelock's ``on_acquired``: name the dead holder taken over from, write this process's details."""
    previous = _parse(os.pread(fd, 65536, 0))
    if previous:
        _taking_over(path, previous)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, me, 0)
    except OSError:
        path.unlink(missing_ok=True)
        raise


def _taking_over(path: Path, holder: dict[str, Any]) -> None:
    print(f"{path.parent}: taking over from {_describe(holder)}, which ended without releasing it",
          file=sys.stderr)


def _unwritable(path: Path, error: OSError, size: int) -> SfcError:
    if out_of_space(error):
        return disk_full(path.parent, f"the run lock {path.name}", size)
    return SfcError(f"cannot lock {path.parent} ({error.strerror or error})", path=path,
                    fix="make the folder writable, or use a run directory on another disk")


def _held_error(path: Path, holder: dict[str, Any], stale_fix: bool) -> SfcError:
    """The error of a folder another process holds (``stale_fix``: a marker, maybe left behind)."""
    fix = f"wait until it ends, or stop it (kill {holder.get('pid', 'PID')}), or use another run directory"
    if stale_fix:
        fix += f"; if no process writes there any more, delete {path}"
    return SfcError(f"{path.parent} is being written by another process: {_describe(holder)}", path=path, fix=fix)


def _holder(path: Path) -> dict[str, Any]:
    try:
        return _parse(path.read_bytes())
    except FileNotFoundError:
        return {}


def _parse(data: bytes) -> dict[str, Any]:
    """Details written by ``_write_details`` (JSON) or by filelock's SoftFileLock; {} for no data."""
    with contextlib.suppress(ValueError):
        holder = json.loads(data or b"{}")
        if isinstance(holder, dict):
            return holder
    lines = data.decode(errors="replace").splitlines()
    if len(lines) >= 2 and lines[0].isdigit():
        return {"pid": int(lines[0]), "host": lines[1]}
    return {"pid": "?", "command": "unknown (unreadable lock file)"}


def _describe(holder: dict[str, Any]) -> str:
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    return f"{who} ({holder['command']}, started {holder.get('started', '?')})" if "command" in holder else who
