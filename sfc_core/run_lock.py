"""One writer per run directory: a stage holds ``<folder>/.lock`` while it writes there.

    @claims_run()                                         # the run directory, first argument
    def make_cams(run, ...): ...
    @claims_run(lambda run, masks, *_, **__: RunDir(run).segment_dir(masks))
    def segment(run, masks, ...): ...

A second process that starts a stage on a folder another process is writing stops with one
message naming the holder (pid, host, command, start time) instead of interleaving its files
with the other's. The lock is an ``flock`` on the file, so the kernel releases it when its
holder dies, however it dies (and the DataLoader workers it forked, which share the lock,
end: a claim waits up to ORPHAN_WAIT_SECONDS for them); the holder's details stay in the
file, and the next stage to claim the folder says that it takes over from a process that is
gone. Claiming also removes
the temporary files of interrupted writes under the folder (``io.remove_stale_temporaries``).
On a filesystem without flock (some NFS and Lustre mounts) the lock is the file itself,
created exclusively (O_EXCL): a holder gone from this machine is taken over as above; a file
whose holder cannot be checked (another host) is named in the error, to delete by hand.

Nested claims of one folder by one process (a stage called from a notebook cell that holds
it) are allowed. Under torchrun only rank 0 claims (the other ranks write into the folder
rank 0 holds).
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

from sfc_core.errors import SfcError
from sfc_core.io import disk_full, out_of_space, pid_alive, remove_stale_temporaries
from sfc_core.run_dir import RunDir

ORPHAN_WAIT_SECONDS = 15      # how long a dead holder's forked workers may keep its lock
_held: dict[Path, int] = {}     # folder -> depth of this process's nested claims
NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)   # flock unsupported there


@contextlib.contextmanager
def claim(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s lock for the duration of the block (SfcError if another process holds it)."""
    folder = Path(folder).resolve()
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    if folder in _held:
        _held[folder] += 1
        try:
            yield
        finally:
            _held[folder] -= 1
        return
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    path = RunDir(folder).lock_file
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _lock(path)
    except BaseException:
        _remove_if_empty(created)
        raise
    _held[folder] = 1
    try:
        remove_stale_temporaries(folder)
        yield
    finally:
        del _held[folder]
        path.unlink(missing_ok=True)    # before the unlock: a waiting process then sees a new file
        os.close(fd)
        _remove_if_empty(created)


def claims_run(folder: Callable[..., str | Path] | None = None) -> Callable:
    """Decorator: the stage runs holding the lock of ``folder(*args, **kwargs)`` (default: its
    first argument, the run directory)."""
    def decorate(stage: Callable) -> Callable:
        @functools.wraps(stage)
        def run_claimed(*args: Any, **kwargs: Any) -> Any:
            with claim(folder(*args, **kwargs) if folder else RunDir(args[0]).root):
                return stage(*args, **kwargs)
        return run_claimed
    return decorate


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a claim created (deepest first) if the stage wrote nothing there:
    a stage that stopped at its first check leaves the tree as it was."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:     # not empty: the stage wrote something
            return


def _lock(path: Path) -> int:
    """Lock ``path`` (created if needed) and write this process's details into it; returns the
    fd. One SfcError, naming the folder, when that cannot be done (a full disk: ``io.DiskFull``,
    and no ``.lock`` is left behind)."""
    me = (json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join(sys.orig_argv)[:500],
                      "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}) + "\n").encode()
    try:
        fd = _flock(path)
    except OSError as e:
        raise _unwritable(path, e, len(me)) from None
    previous = _read(fd)
    if previous:
        print(f"{path.parent}: taking over from {_describe(previous)}, which ended without "
              "releasing it", file=sys.stderr)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, me, 0)
    except OSError as e:
        path.unlink(missing_ok=True)
        os.close(fd)
        raise _unwritable(path, e, len(me)) from None
    return fd


def _unwritable(path: Path, error: OSError, size: int) -> SfcError:
    """The error of a lock file that cannot be made or written (``size`` bytes)."""
    if out_of_space(error):
        return disk_full(path.parent, f"the run lock {path.name}", size)
    return SfcError(f"cannot lock {path.parent} ({error.strerror or error})", path=path,
                    fix="make the folder writable, or use a run directory on another disk")


def _flock(path: Path) -> int:
    """``path`` opened and flock-ed (the fd); on a filesystem without flock (some NFS and
    Lustre mounts), held as a file created exclusively instead (``_exclusive``)."""
    deadline = time.monotonic() + ORPHAN_WAIT_SECONDS
    while True:
        try:
            fd, created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
        except FileExistsError:
            fd, created = os.open(path, os.O_RDWR | os.O_CREAT, 0o666), False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            if _holder_gone(holder) and time.monotonic() < deadline:   # its workers are ending
                time.sleep(0.2)
                continue
            raise _held_error(path, holder) from None
        except OSError as e:
            if e.errno not in NO_FLOCK:
                os.close(fd)
                if created:
                    path.unlink(missing_ok=True)
                raise
            if created:             # this process made the file: it holds the lock
                return fd
            os.close(fd)
            return _exclusive(path)
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:       # its holder removed it as we opened it
            same_file = False
        if same_file:
            return fd
        os.close(fd)


def _exclusive(path: Path) -> int:
    """The lock without flock: ``path`` created exclusively (O_EXCL). A file left by a holder
    gone from this machine is taken over; a live one (or one on another host) is refused."""
    while True:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = _read_file(path)
            if holder is None:      # released as we looked
                continue
            if not _holder_gone(holder):
                raise _held_error(path, holder, stale_fix=True) from None
            print(f"{path.parent}: taking over from {_describe(holder)}, which ended without "
                  "releasing it", file=sys.stderr)
            path.unlink(missing_ok=True)


def _held_error(path: Path, holder: dict[str, Any], stale_fix: bool = False) -> SfcError:
    """The error of a folder another process holds (``stale_fix``: the file alone says so)."""
    fix = f"wait until it ends, or stop it (kill {holder.get('pid', 'PID')}), or use another run directory"
    if stale_fix:
        fix += f"; if no process writes there any more, delete {path}"
    return SfcError(f"{path.parent} is being written by another process: {_describe(holder)}", path=path, fix=fix)


def _read_file(path: Path) -> dict[str, Any] | None:
    """The holder's details in the lock file ``path``; None when there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _read(fd)
    finally:
        os.close(fd)


def _holder_gone(holder: dict[str, Any]) -> bool:
    """The lock's holder ended, on this machine, though the lock is still held: by the
    DataLoader workers it forked (they inherit the lock and notice within seconds)."""
    return holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
        and not pid_alive(holder["pid"])


def _read(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 65536, 0).decode() or "{}")
    except ValueError:
        return {"pid": "?", "command": "unknown (unreadable lock file)"}


def _describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
            f"({holder.get('command', '?')}, started {holder.get('started', '?')})")
