"""The kit's one process pool: prepare's masks, refine's CRF, runs side by side.

    with process_pool(2, fix="run the same command again", threads=1) as pool: pool.submit(...)
    results = pool_map(task, items, processes, "masks", fix="run the same command again")

Workers are spawned, and exit when the process that started them is gone. A worker that dies
(killed, out of memory) never hangs the pool: the call ends in one SfcError whose fix says what
to rerun. An interrupt terminates the workers before it reaches the caller.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sfc_core.errors import SfcError

PARENT_CHECK_SECONDS = 0.5     # how often a worker checks that its parent still runs


@contextmanager
def process_pool(processes: int, fix: str, path: str | Path | None = None,
                 threads: int | None = None) -> Iterator[ProcessPoolExecutor]:
    """A pool of spawned workers (``threads`` torch threads each); a dead one is one SfcError."""
    pool = _Executor(processes, mp_context=multiprocessing.get_context("spawn"),
                     initializer=_start_worker, initargs=(threads, os.getpid()))
    try:
        yield pool
    except BrokenProcessPool:
        raise SfcError("a worker process died (killed, or out of memory)", path=path, fix=fix) from None
    except (KeyboardInterrupt, SystemExit):      # stopped (a notebook's interrupt): stop the workers
        for process in list((pool._processes or {}).values()):   # the executor's own table of workers
            process.terminate()
        raise
    finally:
        pool.shutdown(cancel_futures=True)


class _Executor(ProcessPoolExecutor):
    """CPython before 3.12 wakes the executor's manager thread before it spawns the worker a
    submit needs, so the manager watches the workers without it and a death of that worker
    would go unseen (a hang): wake it again once the worker exists."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Any:
        future = super().submit(fn, *args, **kwargs)
        self._executor_manager_thread_wakeup.wakeup()
        return future


def pool_map(task: Callable[[Any], Any], items: Sequence, processes: int, desc: str, fix: str,
             path: str | Path | None = None) -> list:
    """``[task(item) for item in items]`` with a progress bar in ``processes`` workers (1: here)."""
    processes = min(processes, len(items))
    with tqdm(total=len(items), desc=desc, unit="img") as bar:
        if processes <= 1:
            return [_counted(task(item), bar) for item in items]
        with process_pool(processes, fix, path) as pool:
            chunk = max(1, len(items) // (8 * processes))
            return [_counted(result, bar) for result in pool.map(task, items, chunksize=chunk)]


def _counted(result: Any, bar: tqdm) -> Any:
    bar.update()
    return result


def _start_worker(threads: int | None, parent: int) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    threading.Thread(target=_end_with_parent, args=(parent,), daemon=True).start()


def _end_with_parent(parent: int) -> None:
    """A worker's watch: exit once the process that started it is gone (no orphans)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)
