"""Atomic writes: permissions from the umask, leftovers of killed writes removed, the kill hook."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from sfc_core import io


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_umask(value: int) -> int:
        os.umask(value)
        return value
    yield set_umask
    os.umask(saved)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_get_the_permissions_open_would_give(tmp_path, umask, mask):
    umask(mask)
    written = [io.atomic_write_text(tmp_path / "a.txt", "x"), io.atomic_write_json(tmp_path / "b.json", {}),
               io.atomic_write_bytes(tmp_path / "sub" / "c.bin", b"x")]
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    assert {_mode(p) for p in written} == {_mode(tmp_path / "plain.txt")} == {0o666 & ~mask}
    assert _mode(tmp_path / "sub") == 0o777 & ~mask


def test_the_generated_dataset_folder_gets_the_umask_permissions(smoke_dataset):
    mask = os.umask(0)
    os.umask(mask)
    folders = [smoke_dataset.root, smoke_dataset.image_dir]
    assert {_mode(p) for p in folders} == {0o777 & ~mask}
    assert _mode(next(smoke_dataset.image_dir.iterdir())) == 0o666 & ~mask


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    (tmp_path / "cams").mkdir()
    dead = _dead_pid()
    stale_file = tmp_path / "checkpoints" / f".last.pt.{dead}.0a1b2c3d.tmp"
    stale_dir = tmp_path / f".smoke-seed0.{dead}.99aa00bb.tmp"
    live = tmp_path / "cams" / f".x.npz.{os.getpid()}.0a1b2c3d.tmp"
    other = [tmp_path / "cams" / "x.npz", tmp_path / ".hidden.tmp", tmp_path / f".a.{dead}.tmp"]
    stale_file.parent.mkdir()
    (stale_dir / "JPEGImages").mkdir(parents=True)
    for path in [stale_file, live, *other, stale_dir / "JPEGImages" / "1.jpg"]:
        path.write_bytes(b"x")
    assert sorted(io.remove_stale_temporaries(tmp_path)) == sorted([stale_file, stale_dir])
    assert not stale_file.exists() and not stale_dir.exists()
    assert live.exists() and all(path.exists() for path in other)


def test_the_kill_hook_kills_during_the_nth_matching_write(tmp_path):
    script = ("import sys; from sfc_core.io import atomic_write_text as w\n"
              "for i in range(3):\n"
              "    w(sys.argv[1] + '/a.txt', str(i)); w(sys.argv[1] + '/b.txt', str(i))\n")
    env = {**os.environ, io.KILL_AT_ENV: "write/a.txt:2"}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env)
    assert result.returncode == -9
    assert (tmp_path / "a.txt").read_text() == "0" and (tmp_path / "b.txt").read_text() == "0"
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".a.txt.")]
    assert len(leftovers) == 1 and leftovers[0].read_text() == "1"    # killed before the rename
    assert io.remove_stale_temporaries(tmp_path) == leftovers


def test_the_kill_hook_is_off_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(io.KILL_AT_ENV, raising=False)
    for _ in range(3):
        io.kill_point("step")
        io.atomic_write_text(tmp_path / "a.txt", "x")
    assert io._events_seen == {}


def test_after_a_sigterm_only_the_loader_teardown_error_is_quiet(monkeypatch):
    """torch's SIGCHLD handler raises inside a DataLoader iterator's __del__ when the workers were
    ended by the same SIGTERM: that one prints nothing, every other unraisable error still does."""
    from types import SimpleNamespace

    from sfc_core import io

    class _MultiProcessingDataLoaderIter:
        def __del__(self):
            pass

    printed = []
    hook = io._QuietLoaderTeardown(printed.append)
    teardown = SimpleNamespace(object=_MultiProcessingDataLoaderIter.__del__,
                               exc_value=RuntimeError("DataLoader worker (pid 7) is killed by signal: Terminated."))
    other = SimpleNamespace(object=print, exc_value=RuntimeError("something else"))
    monkeypatch.setitem(io._stop, "received", False)
    hook(teardown)
    assert printed == [teardown]                       # no SIGTERM yet: printed as before
    monkeypatch.setitem(io._stop, "received", True)
    hook(teardown)
    hook(other)
    assert printed == [teardown, other]
