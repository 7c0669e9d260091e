"""Two processes never write one run directory at once; a dead holder's lock is taken over."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sfc_core.cli import main
from sfc_core.errors import SfcError
from sfc_core.io import pid_alive
from sfc_core.run_dir import RunDir
from sfc_core.run_lock import claim

HOLD = ("import sys, time; from sfc_core.run_lock import claim\n"
        "with claim(sys.argv[1]):\n"
        "    print('held', flush=True); time.sleep(60)\n")


@pytest.fixture
def holder(tmp_path):
    """A separate process holding the lock of tmp_path/run (killed after the test)."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "held\n"
    yield process
    process.kill()
    process.wait()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, holder):
    with pytest.raises(SfcError, match=f"being written by another process: pid {holder.pid} on") as info:
        with claim(tmp_path / "run"):
            pass
    assert "-c 'import sys, time; from sfc_core.run_lock import claim" in info.value.problem  # its command
    assert f"kill {holder.pid}" in info.value.fix and info.value.path == RunDir(tmp_path / "run").lock_file


def test_a_verb_on_a_held_run_stops_with_one_message(tmp_path, holder, capsys):
    assert main(["cams", "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"pid {holder.pid}" in err and "Traceback" not in err


def test_the_lock_of_a_killed_holder_is_taken_over_with_a_message(tmp_path, holder, capsys):
    lock = RunDir(tmp_path / "run").lock_file
    assert json.loads(lock.read_text())["pid"] == holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    stale = tmp_path / "run" / f".last.pt.{holder.pid}.0a1b2c3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    with claim(tmp_path / "run"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert not stale.exists()          # the killed writer's leftover went with it
    assert f"taking over from pid {holder.pid}" in capsys.readouterr().err
    assert not lock.exists()


def test_one_process_may_nest_claims_and_release_them(tmp_path):
    with claim(tmp_path / "run"):
        with claim(tmp_path / "run"):
            pass
        assert RunDir(tmp_path / "run").lock_file.exists()
    assert not RunDir(tmp_path / "run").lock_file.exists()
    started = time.monotonic()
    process = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(60)", "pass"),
                              str(tmp_path / "run")], capture_output=True, text=True)
    assert process.returncode == 0 and time.monotonic() - started < 60    # free again for others


def test_a_claim_that_wrote_nothing_leaves_no_folder(tmp_path):
    with claim(tmp_path / "run" / "segment" / "crf"):
        pass
    assert not (tmp_path / "run").exists()
    with claim(tmp_path / "run" / "segment" / "crf"):
        (tmp_path / "run" / "segment" / "crf" / "x").write_text("x")
    assert (tmp_path / "run" / "segment" / "crf" / "x").exists()


def test_the_forked_workers_of_a_killed_holder_do_not_keep_its_lock(tmp_path, capsys):
    forking = HOLD.replace("print('held', flush=True); time.sleep(60)",
                           "import os\n    child = os.fork()\n    if child == 0:\n"
                           "        os.close(1); os.close(2); time.sleep(60); os._exit(0)\n"
                           "    print(os.getpid(), child, flush=True); os._exit(0)")
    process = subprocess.run([sys.executable, "-c", forking, str(tmp_path / "run")], capture_output=True, text=True)
    holder, child = map(int, process.stdout.split())      # the holder is gone; the child it forked lives
    try:
        with claim(tmp_path / "run"):
            assert json.loads(RunDir(tmp_path / "run").lock_file.read_text())["pid"] == os.getpid()
        assert pid_alive(child)                   # still running when the lock was taken
        assert f"taking over from pid {holder}" in capsys.readouterr().err
    finally:
        os.kill(child, signal.SIGKILL)


@pytest.fixture
def no_flock(monkeypatch):
    """A filesystem without flock (some NFS and Lustre mounts): flock fails with ENOLCK."""
    monkeypatch.setattr(fcntl, "flock", _no_flock)


def _no_flock(fd, operation):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))


# The holder of a folder on a filesystem without flock (HOST: the host name its lock records).
HOLD_NO_FLOCK = ("import errno, fcntl, os, socket, sys\n"
                 "fcntl.flock = lambda fd, op: (_ for _ in ()).throw(OSError(errno.ENOLCK, 'no locks'))\n"
                 "if len(sys.argv) > 2: socket.gethostname = lambda: sys.argv[2]\n" + HOLD)


def _hold_without_flock(folder, *host):
    process = subprocess.Popen([sys.executable, "-c", HOLD_NO_FLOCK, str(folder), *host], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline() == "held\n"
    return process


def test_without_flock_the_lock_is_filelocks_marker_and_a_killed_holders_is_taken_over(tmp_path, no_flock,
                                                                                        capsys):
    lock = RunDir(tmp_path / "run").lock_file
    with claim(tmp_path / "run"):
        assert lock.read_text().split("\n")[0] == str(os.getpid())       # SoftFileLock's marker
    assert not lock.exists() and not (tmp_path / "run").exists()
    holder = _hold_without_flock(tmp_path / "run")
    holder.kill()
    holder.wait()
    with claim(tmp_path / "run"):                            # its holder is gone: taken over
        assert lock.read_text().split("\n")[0] == str(os.getpid())
    assert f"taking over from pid {holder.pid}" in capsys.readouterr().err and not lock.exists()


@pytest.mark.parametrize("host", ["this", "elsewhere"])
def test_without_flock_a_live_or_unknown_holder_is_refused_naming_the_file(tmp_path, no_flock, host):
    lock = RunDir(tmp_path / "run").lock_file
    holder = _hold_without_flock(tmp_path / "run", *(["node-17"] if host == "elsewhere" else []))
    try:
        if host == "elsewhere":         # a process on another host: it cannot be checked from here
            holder.kill()
            holder.wait()
        marker = lock.read_text()
        with pytest.raises(SfcError, match=f"being written by another process: pid {holder.pid} on") as info:
            with claim(tmp_path / "run"):
                pass
        assert f"delete {lock}" in info.value.fix and lock.read_text() == marker
        assert ("node-17" in info.value.problem) == (host == "elsewhere")
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("flock", ["flock", "no flock"])
def test_a_full_disk_at_the_lock_leaves_no_lock_and_no_folder(tmp_path, monkeypatch, flock):
    real = os.write

    def full(fd, data, *offset):        # os.pwrite writes our details, os.write filelock's marker
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".lock"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    if flock == "no flock":
        monkeypatch.setattr(fcntl, "flock", _no_flock)
    monkeypatch.setattr(os, "pwrite", full)
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(SfcError, match=f"no space left on the disk of {tmp_path / 'new' / 'run'} to write the run lock"):
        with claim(tmp_path / "new" / "run"):
            pass
    assert not (tmp_path / "new").exists()


def test_a_lock_that_cannot_be_made_is_one_message(tmp_path, monkeypatch, capsys):
    def flock(fd, operation):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(fcntl, "flock", flock)
    assert main(["cams", "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot lock {tmp_path / 'run'} (Input/output error)") and "Traceback" not in err
    assert not (tmp_path / "run").exists()
