"""Two processes never write one run directory at once; a dead holder's lock is taken over."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sfc_core.cli import main
from sfc_core.errors import SfcError
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


def test_a_lock_kept_by_the_forked_workers_of_a_dead_holder_is_taken_once_they_end(tmp_path, capsys):
    forking = HOLD.replace("print('held', flush=True); time.sleep(60)",
                           "import os\n    if os.fork() == 0:\n        os.close(1); os.close(2); time.sleep(1.5); os._exit(0)\n"
                           "    print(os.getpid(), flush=True); os._exit(0)")
    process = subprocess.run([sys.executable, "-c", forking, str(tmp_path / "run")], capture_output=True, text=True)
    holder = int(process.stdout)               # gone; the child it forked still holds the lock
    with claim(tmp_path / "run"):
        assert json.loads(RunDir(tmp_path / "run").lock_file.read_text())["pid"] == os.getpid()
    assert f"taking over from pid {holder}" in capsys.readouterr().err


@pytest.fixture
def no_flock(monkeypatch):
    """A filesystem without flock (some NFS and Lustre mounts): flock fails with ENOLCK."""
    import errno
    import fcntl

    def flock(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", flock)


def test_without_flock_the_lock_is_a_file_created_exclusively(tmp_path, no_flock, capsys):
    lock = RunDir(tmp_path / "run").lock_file
    with claim(tmp_path / "run"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.parent.mkdir()
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename, "command": "x"}))
    with claim(tmp_path / "run"):                            # its holder is gone: taken over
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"taking over from pid {int(dead.stdout)}" in capsys.readouterr().err and not lock.exists()


@pytest.mark.parametrize("host", ["this", "elsewhere"])
def test_without_flock_a_live_or_unknown_holder_is_refused_naming_the_file(tmp_path, no_flock, host):
    lock = RunDir(tmp_path / "run").lock_file
    lock.parent.mkdir()
    holder = {"pid": os.getppid(), "host": os.uname().nodename if host == "this" else "node-17", "command": "x"}
    lock.write_text(json.dumps(holder))
    with pytest.raises(SfcError, match=f"being written by another process: pid {os.getppid()}") as info:
        with claim(tmp_path / "run"):
            pass
    assert f"delete {lock}" in info.value.fix and json.loads(lock.read_text()) == holder


def test_a_lock_that_cannot_be_made_is_one_message(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    def flock(fd, operation):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(fcntl, "flock", flock)
    assert main(["cams", "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot lock {tmp_path / 'run'} (Input/output error)") and "Traceback" not in err
    assert not (tmp_path / "run").exists()
