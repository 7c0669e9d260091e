"""Run independent stage calls side by side, one process each, when that is faster.

    from functools import partial
    summaries = run_side_by_side([partial(train, base_cfg, "runs/x/baseline", resume=True),
                                  partial(train, ctrl_cfg, "runs/x/control", resume=True)])

Why: the synthetic presets' networks are small, so one process does not fill two cores (on
an idle 2-core machine one torch thread trains the baseline at ~0.8x the speed of two), and two
runs side by side with one thread each finish sooner than one after the other with two.

On a GPU, or with one CPU core, or for a single call, the calls run one after the other in
this process. Otherwise each runs in a fresh (spawned) process with ``cpu_count // processes``
torch threads (at least one), at most ``processes`` at a time. Results come back in order and
the first error is raised here. Each call must be picklable: a module-level function, or a
``functools.partial`` of one with picklable arguments (configs, paths).
"""
from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch


def run_side_by_side(calls: Sequence[Callable[[], Any]], processes: int = 2) -> list[Any]:
    """``[call() for call in calls]``, run in up to ``processes`` processes on a CPU machine."""
    cores = os.cpu_count() or 1
    processes = min(processes, len(calls))
    if processes <= 1 or cores <= 1 or torch.cuda.is_available():
        return [call() for call in calls]
    threads = max(1, cores // processes)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_set_threads,
                             initargs=(threads,)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
