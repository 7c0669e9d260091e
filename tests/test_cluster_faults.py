"""What a cluster does to a run: SIGTERM (preemption, a time limit), a full disk, an interrupt
with DataLoader workers. Each ends in one message, keeps what was finished, and the printed
command continues (bit for bit for SIGTERM, compared with an uninterrupted run)."""
from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_interruption import _assert_same_outputs, _env, _verb_args

import sfc_core.io
from sfc_core.cli import TERMINATED_EXIT, main
from sfc_core.errors import SfcError
from sfc_core.io import Terminated
from sfc_core.run_dir import RunDir

SHORT = ["--set", "train.max_steps=6"]      # checkpoints at steps 5 and 6 (smoke: every 5)


def _no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullFile:
    """A file whose writes fail as on a full disk."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise _no_space()

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _disk_fills(monkeypatch, name_part: str, after: int = 0) -> None:
    """The atomic writes (sfc_core.io) of files whose name holds ``name_part`` fail with ENOSPC,
    once ``after`` of them were written whole."""
    real, opened = open, []

    def fake_open(path, mode="r", *args, **kwargs):
        f = real(path, mode, *args, **kwargs)
        if name_part in Path(path).name and "x" in mode:
            opened.append(path)
            if len(opened) > after:
                return _FullFile(f)
        return f

    monkeypatch.setattr(sfc_core.io, "open", fake_open, raising=False)


def _one_error(err: str, *parts: str) -> None:
    """stderr holds one error (starting on a line of its own) naming every part, no traceback."""
    assert err.count("error: ") == 1 and "Traceback" not in err and "Exception in thread" not in err, err
    assert err.startswith("error: ") or "\nerror: " in err, err
    message = err[err.index("error: "):]
    for part in parts:
        assert part in message, (part, message)


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name == ".lock" or p.name.endswith(".tmp")]


def _train_args(root: str, out: Path) -> list[str]:
    return ["train", "--preset", "synthetic-smoke", "--data-root", root, "--out", str(out), *SHORT]


def _resume_args(err: str) -> list[str]:
    """The arguments of the `python -m sfc_core ...` command a message says to run."""
    line = next(line for line in err.splitlines() if "run: python -m sfc_core" in line)
    return shlex.split(line.split("run: ", 1)[1].split(" (finished")[0])[3:]


@pytest.mark.slow
def test_sigterm_checkpoints_the_step_and_resume_continues_bit_for_bit(smoke_config, smoke_dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = smoke_config.data.root
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    done = subprocess.run([sys.executable, "-m", "sfc_core", *_verb_args("train", root, reference)],
                          env=_env(None), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    env = {**_env("step:7"), sfc_core.io.KILL_SIGNAL_ENV: "SIGTERM"}      # between checkpoints 5 and 10
    first = subprocess.run([sys.executable, "-m", "sfc_core", *_verb_args("train", root, stopped)],
                           env=env, capture_output=True, text=True)
    assert first.returncode == TERMINATED_EXIT, first.stderr[-2000:]
    assert first.stderr.count("terminated (SIGTERM): stopped after step 7, its checkpoint written") == 1
    assert "Traceback" not in first.stderr and not _leftovers(stopped)
    import torch
    assert torch.load(RunDir(stopped).last_checkpoint, weights_only=True)["step"] == 7
    again = _resume_args(first.stderr)
    assert again[-1] == "--resume"
    second = subprocess.run([sys.executable, "-m", "sfc_core", *again], env=_env(None), capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    _assert_same_outputs(reference, stopped)
    events = EventAccumulator(str(RunDir(stopped).tensorboard))
    events.Reload()
    steps = [event.step for event in events.Scalars("loss/total")]
    assert steps == sorted(set(steps)) and steps[-1] == 20       # no step twice after the resume


@pytest.mark.slow
@pytest.mark.parametrize("sent,status,message", [(signal.SIGINT, 130, "interrupted: "),
                                                 (signal.SIGTERM, TERMINATED_EXIT, "terminated (SIGTERM): ")])
def test_a_signal_to_the_whole_group_with_loader_workers_prints_one_message(smoke_config, smoke_dataset, tmp_path,
                                                                           sent, status, message):
    """Ctrl-C and a scheduler's SIGTERM reach the DataLoader workers too (they ignore SIGINT and
    are shut down in order; SIGTERM ends them), and stderr holds the one message and no
    traceback."""
    args = [*_train_args(smoke_config.data.root, tmp_path / "run"), "--set", "runtime.num_workers=2"]
    process = subprocess.Popen([sys.executable, "-m", "sfc_core", *args], env=_env(None), stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    seen = ""
    while "| 3/6 [" not in seen and process.poll() is None:
        seen += process.stderr.read(1)
    os.killpg(process.pid, sent)
    err = seen + process.stderr.read()
    assert process.wait() == status, err[-2000:]
    assert err.count(message) == 1 and "Traceback" not in err and "Error" not in err, err[-3000:]
    assert not _leftovers(tmp_path / "run")


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_says_what_and_where_and_the_command_continues(smoke_config, smoke_dataset,
                                                                                    tmp_path, monkeypatch, capsys):
    run = RunDir(tmp_path / "run")
    _disk_fills(monkeypatch, "last.pt", after=1)           # step 5's is written, step 6's is not
    assert main(_train_args(smoke_config.data.root, run.root)) == 2
    err = capsys.readouterr().err
    _one_error(err, f"no space left on the disk of {run.checkpoints} to write last.pt (",
               " MB needed", "--resume (finished work is kept)")
    assert not _leftovers(run.root)
    import torch
    assert torch.load(run.last_checkpoint, weights_only=True)["step"] == 5
    monkeypatch.undo()
    assert main(_resume_args(err)) == 0
    assert torch.load(run.last_checkpoint, weights_only=True)["step"] == 6


def test_a_full_disk_at_the_run_lock_leaves_no_lock_and_no_folder(smoke_config, tmp_path, monkeypatch, capsys):
    def full(*args):
        raise _no_space()

    monkeypatch.setattr(os, "pwrite", full)
    assert main(_train_args(smoke_config.data.root, tmp_path / "new" / "run")) == 2
    _one_error(capsys.readouterr().err, f"no space left on the disk of {tmp_path / 'new' / 'run'} to write "
               "the run lock .lock (", " bytes needed")
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_a_full_disk_at_the_metrics_log_leaves_no_half_line(smoke_config, smoke_dataset, tmp_path, monkeypatch,
                                                            capsys):
    run = RunDir(tmp_path / "run")
    real = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("metrics.jsonl") and b'"step": 4' in data:
            real(fd, data[:5])           # half a line reaches the disk, then it is full
            raise _no_space()
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    assert main(_train_args(smoke_config.data.root, run.root)) == 2
    _one_error(capsys.readouterr().err, f"no space left on the disk of {run.root} to write metrics.jsonl (",
               " bytes needed")
    assert [line[:10] for line in run.metrics_jsonl.read_text().splitlines()] == ['{"step": 2']
    assert not _leftovers(run.root)


@pytest.mark.slow
def test_cams_on_a_full_disk_keep_the_files_made_and_the_command_continues(trained_run, tmp_path, monkeypatch,
                                                                          capsys):
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    for name in ("config.json", "class_names.json", "checkpoints"):
        copy = shutil.copytree if (trained_run.root / name).is_dir() else shutil.copy
        copy(trained_run.root / name, run.root / name)
    _disk_fills(monkeypatch, ".npz", after=6)
    assert main(["cams", "--run", str(run.root)]) == 2
    err = capsys.readouterr().err
    _one_error(err, f"no space left on the disk of {run.cams} to write ", ".npz (", " kB needed",
               f"then run: python -m sfc_core cams --run {run.root} (finished work is kept)")
    kept = len(list(run.cams.glob("*.npz")))
    assert kept >= 6 and not _leftovers(run.root)
    monkeypatch.undo()
    assert main(_resume_args(err)) == 0
    assert f"already there -> {run.cams}" in capsys.readouterr().out


@pytest.mark.parametrize("raised,start", [(SfcError("it broke"), "error: it broke"),
                                          (KeyboardInterrupt(), "interrupted: "),
                                          (Terminated(), "terminated (SIGTERM): ")])
def test_a_message_under_a_progress_bar_starts_on_its_own_line(monkeypatch, capsys, raised, start):
    from tqdm import tqdm

    def command(args):
        bar = tqdm(total=3, desc="working")
        bar.update(1)
        raise raised

    monkeypatch.setattr("sfc_core.data.commands.stats_command", command)
    main(["stats"])
    err = capsys.readouterr().err
    assert "working" in err and f"\n{start}" in err and err.count(start) == 1


def test_a_loader_worker_ignores_interrupts_and_its_teardown_connection_errors(monkeypatch, capsys):
    monkeypatch.setattr(signal, "signal", lambda sent, handler: handled.append((sent, handler)))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    handled = []
    sfc_core.io.quiet_worker(0)
    assert handled == [(signal.SIGINT, signal.SIG_IGN)]      # SIGTERM stays fatal: how a worker is stopped
    sys.excepthook(ConnectionResetError, ConnectionResetError(104, "Connection reset by peer"), None)
    assert capsys.readouterr().err == ""                     # multiprocessing.resource_sharer's report
    sys.excepthook(ValueError, ValueError("a real error"), None)
    assert "ValueError: a real error" in capsys.readouterr().err
