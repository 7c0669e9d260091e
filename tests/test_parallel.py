"""sfc_core.pool (a killed worker ends the call in one SfcError, never a hang) and
run_side_by_side on it: results in job order, chained steps in order, errors raised in the
caller, one thread per process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch

from sfc_core.errors import SfcError
from sfc_core.io import pid_alive
from sfc_core.orchestration.parallel import run_side_by_side
from sfc_core.pool import pool_map, process_pool

TWO_CORES = pytest.mark.skipif((os.cpu_count() or 1) < 2 or torch.cuda.is_available(),
                               reason="side by side only on a CPU machine with 2+ cores")


def _threads_and_pid(tag: str) -> tuple[str, int, int]:
    return tag, torch.get_num_threads(), os.getpid()


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _read(path: Path) -> str:
    return path.read_text()


def _fail(message: str) -> None:
    raise SfcError(message, fix="none")


@TWO_CORES
def test_calls_run_in_other_processes_in_order_with_their_share_of_threads():
    results = run_side_by_side([partial(_threads_and_pid, tag) for tag in "abc"], processes=2)
    assert [tag for tag, _, _ in results] == ["a", "b", "c"]
    assert all(pid != os.getpid() for _, _, pid in results)
    assert all(threads == max(1, os.cpu_count() // 2) for _, threads, _ in results)


def test_one_process_runs_inline():
    [(tag, _, pid)] = run_side_by_side([partial(_threads_and_pid, "x")], processes=4)
    assert tag == "x" and pid == os.getpid()


def test_an_error_in_a_call_reaches_the_caller():
    with pytest.raises(SfcError, match="broken stage"):
        run_side_by_side([partial(_threads_and_pid, "ok"), partial(_fail, "broken stage")], processes=2)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_chain_runs_its_steps_in_order_and_returns_the_last_result(tmp_path, processes):
    # each job's second step reads what its first wrote: it must not start before it
    jobs = [(partial(_write, tmp_path / tag, f"made by {tag}"), partial(_read, tmp_path / tag)) for tag in "abc"]
    assert run_side_by_side(jobs, processes=processes) == ["made by a", "made by b", "made by c"]


def test_an_error_in_a_chain_stops_it_and_reaches_the_caller(tmp_path):
    jobs = [(partial(_fail, "training broke"), partial(_write, tmp_path / "after", "x")),
            partial(_threads_and_pid, "ok")]
    with pytest.raises(SfcError, match="training broke"):
        run_side_by_side(jobs, processes=2)
    assert not (tmp_path / "after").exists()


# The signal line: a shell's background job starts with SIGINT ignored, and Python then raises
# no KeyboardInterrupt (a notebook kernel always handles it).
PARENT = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from functools import partial
from sfc_core.orchestration.parallel import run_side_by_side
from test_parallel import _work_forever
run_side_by_side([partial(_work_forever, sys.argv[1], tag) for tag in "ab"], processes=2)
"""


def _work_forever(folder: str, tag: str) -> None:
    (Path(folder) / f"{tag}.pid").write_text(str(os.getpid()))
    while True:
        time.sleep(0.1)


def _children_of(parent, folder: Path) -> list[int]:
    """The pids the two side-by-side steps of ``parent`` wrote, once both have started."""
    deadline = time.monotonic() + 60
    while len(list(folder.glob("*.pid"))) < 2:
        assert parent.poll() is None and time.monotonic() < deadline, "the steps did not start"
        time.sleep(0.1)
    return [int(path.read_text()) for path in folder.glob("*.pid")]


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(pid_alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


@TWO_CORES
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT])
def test_workers_end_when_their_parent_is_killed_or_interrupted(tmp_path, stop):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path)], env=env)
    try:
        children = _children_of(parent, tmp_path)
        parent.send_signal(stop)
        assert _gone_within(children, 5), "side-by-side workers outlived their parent"
        assert parent.wait(timeout=10) != 0
    finally:
        parent.kill()
        parent.wait()


def _die_on(doomed: str, item: str) -> str:
    """A task whose worker is SIGKILLed (as the OOM killer or kill -9 would) at ``doomed``."""
    if item == doomed:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return item


def _wait_here(folder: str) -> None:
    (Path(folder) / f"{os.getpid()}.pid").write_text("")
    time.sleep(600)


@pytest.mark.timeout(60)
def test_a_worker_killed_mid_map_ends_the_call_in_one_error(tmp_path):
    assert pool_map(partial(_die_on, "none"), list("abcd"), 2, "test", fix="x") == list("abcd")
    with pytest.raises(SfcError, match="a worker process died") as caught:
        pool_map(partial(_die_on, "c"), list("abcdefgh"), 2, "test", fix="run it again", path=tmp_path)
    assert (caught.value.fix, caught.value.path) == ("run it again", tmp_path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("which", ["first", "last"])
def test_a_worker_killed_from_outside_mid_job_ends_the_pool_promptly(tmp_path, which):
    """Either worker: CPython 3.11's executor wakes its manager before it spawns the worker a
    submit needs, so the last-spawned one's death went unseen (a hang) until the pool woke it."""
    started = time.monotonic()
    with pytest.raises(SfcError, match="a worker process died"):
        with process_pool(2, fix="again") as pool:
            futures = [pool.submit(_wait_here, str(tmp_path)) for _ in range(2)]
            while len(list(tmp_path.glob("*.pid"))) < 2:
                time.sleep(0.05)
            spawned = list(pool._processes)           # pids in the order the executor spawned them
            os.kill(spawned[0 if which == "first" else -1], signal.SIGKILL)
            [future.result() for future in futures]
    assert time.monotonic() - started < 30


@TWO_CORES
@pytest.mark.timeout(60)
def test_a_side_by_side_step_killed_is_one_error_naming_the_rerun():
    with pytest.raises(SfcError, match="a worker process died") as caught:
        run_side_by_side([partial(_die_on, "a", "a"), partial(_die_on, "a", "b")], processes=2)
    assert "run the same call again" in caught.value.fix


def test_prepare_runs_of_evaluated_runs_stays_in_this_process(trained_run, smoke_config, tmp_path, monkeypatch):
    """A later notebook's call for finished runs starts no worker processes, nor does a call
    where one run has work left (03 after 02 trained SFC in its kernel); two runs with work left
    go side by side again."""
    import shutil

    from sfc_core.orchestration import pipeline

    shutil.copytree(trained_run.root, tmp_path / "sfc")
    first = pipeline.evaluated(tmp_path / "sfc")
    shutil.copytree(tmp_path / "sfc", tmp_path / "other")
    asked: list[int] = []
    monkeypatch.setattr(pipeline, "run_side_by_side",
                        lambda jobs, processes: asked.append(processes) or run_side_by_side(jobs, 1))
    runs = {"sfc": smoke_config, "other": smoke_config}
    again = pipeline.prepare_runs(runs, tmp_path)
    assert asked == [1] and again["sfc"].miou("fused") == first.miou("fused")
    (tmp_path / "sfc" / "cam_eval.json").unlink()
    pipeline.prepare_runs(runs, tmp_path)
    assert asked == [1, 1] and (tmp_path / "sfc" / "cam_eval.json").is_file()
    for name in runs:
        (tmp_path / name / "cam_eval.json").unlink()
    pipeline.prepare_runs(runs, tmp_path)
    assert asked == [1, 1, 2]
