"""Run independent jobs side by side, one process each, when that is faster.

    from functools import partial
    summaries = run_side_by_side([partial(train, base_cfg, "runs/x/baseline", resume=True),
                                  partial(train, ctrl_cfg, "runs/x/control", resume=True)])
    # a job may be a chain of steps: step 2 waits for step 1 of the same job only
    run_side_by_side([(partial(train, cfg, "runs/x/sfc"), partial(make_cams, "runs/x/sfc")), ...])

Why: the synthetic presets' networks are small, so one process does not fill two cores (on
an idle 2-core machine one torch thread trains the baseline at ~0.8x the speed of two), and two
runs side by side with one thread each finish sooner than one after the other with two.

Why chains: a job's steps are queued one at a time, the next when the previous ends, behind
what is already waiting. So a process that finishes early takes the next waiting step of any
job instead of idling while another process works through a long job alone (05_evaluation's
seeds and ablations with ``full=True``: each run's training, then its CAMs, spread over both
processes instead of queueing behind each other in one).

On a GPU, or with one CPU core, or for a single job, the jobs run one after the other in
this process. Otherwise each step runs in a fresh (spawned) worker process with
``cpu_count // processes`` torch threads (at least one), at most ``processes`` at a time.
Each job's result is its last step's; results come back in job order and the first error is
raised here (steps not yet started are cancelled). Each step must be picklable: a module-level
function, or a ``functools.partial`` of one with picklable arguments (configs, paths).

Workers end with their caller: an interrupt (KeyboardInterrupt: a notebook's stop button)
terminates them before it reaches the caller, and each worker checks every
``PARENT_CHECK_SECONDS`` that the process that started it still runs and exits when it does
not (the caller killed, its kernel shut down). Their last checkpoints stay intact, so the
same call resumes them.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import torch

PARENT_CHECK_SECONDS = 0.5     # how often a worker checks that its parent still runs

Step = Callable[[], Any]
Job = Step | Sequence[Step]


def run_side_by_side(jobs: Sequence[Job], processes: int = 2) -> list[Any]:
    """``[job() for job in jobs]`` (a chain: its steps in order, the last one's result), run in
    up to ``processes`` processes on a CPU machine."""
    chains = [list(job) if isinstance(job, (list, tuple)) else [job] for job in jobs]
    cores = os.cpu_count() or 1
    processes = min(processes, len(chains))
    if processes <= 1 or cores <= 1 or torch.cuda.is_available():
        return [[step() for step in chain][-1] for chain in chains]
    threads = max(1, cores // processes)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_start_worker,
                             initargs=(threads, os.getpid())) as pool:
        try:
            return _run_chains(pool, chains)
        except (KeyboardInterrupt, SystemExit):     # stopped (a notebook's interrupt): stop the workers
            for process in list(pool._processes.values()):   # the executor's own table of workers
                process.terminate()
            raise


def _run_chains(pool: ProcessPoolExecutor, chains: list[list[Step]]) -> list[Any]:
    """Each chain's steps in order in ``pool``, the next queued when the previous ends; the last
    step's results in chain order. The first error is raised (steps not started are cancelled)."""
    results: list[Any] = [None] * len(chains)
    running: dict[Future, tuple[int, int]] = {pool.submit(chain[0]): (j, 0) for j, chain in enumerate(chains)}
    while running:
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            j, i = running.pop(future)
            if future.exception() is not None:
                for other in running:
                    other.cancel()
                raise future.exception()
            results[j] = future.result()
            if i + 1 < len(chains[j]):
                running[pool.submit(chains[j][i + 1])] = (j, i + 1)
    return results


def _start_worker(threads: int, parent: int) -> None:
    torch.set_num_threads(threads)
    threading.Thread(target=_end_with_parent, args=(parent,), daemon=True).start()


def _end_with_parent(parent: int) -> None:
    """A worker's watch: exit once the process that started it is gone (killed, or its notebook
    kernel stopped), instead of training on as an orphan. Its last checkpoint stays intact."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)
