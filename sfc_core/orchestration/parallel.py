"""Run independent jobs side by side, one process each.

    run_side_by_side([partial(train, base_cfg, "runs/x/baseline"), partial(train, ctrl_cfg, "runs/x/ctrl")])
    run_side_by_side([(partial(train, cfg, "runs/x/sfc"), partial(make_cams, "runs/x/sfc")), ...])  # chains

A job's steps are queued one at a time, so a free process takes the next waiting step of any
job. On a GPU, with one core or for one job, the jobs run here in order. Workers come from
``sfc_core.pool`` (a killed one is one SfcError); their checkpoints let the same call resume.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import torch

from sfc_core.pool import process_pool

Step = Callable[[], Any]
Job = Step | Sequence[Step]


def run_side_by_side(jobs: Sequence[Job], processes: int = 2) -> list[Any]:
    """``[job() for job in jobs]`` (a chain: its steps in order) in up to ``processes`` processes
    on a CPU machine; steps must pickle; the first error is raised."""
    chains = [list(job) if isinstance(job, (list, tuple)) else [job] for job in jobs]
    cores = os.cpu_count() or 1
    processes = min(processes, len(chains))
    if processes <= 1 or cores <= 1 or torch.cuda.is_available():
        return [[step() for step in chain][-1] for chain in chains]
    with process_pool(processes, fix="run the same call again (finished work is kept, training resumes)",
                      threads=max(1, cores // processes)) as pool:
        return _run_chains(pool, chains)


def _run_chains(pool: ProcessPoolExecutor, chains: list[list[Step]]) -> list[Any]:
    """Each chain's steps in order in ``pool``; the last results in chain order; first error raised."""
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
