"""The one training loop of SFC, IRN and step 3: ``batches`` feeds it, ``fit`` runs it.

    batches = loop.batches(data, order, batch_size, steps_per_epoch, plan.steps(state.step), workers, device)
    for output in loop.fit(state, batches, step, plan, checkpoint, dist, desc="train"):
        ...    # the caller's own logging and validation, inline

Orders and samples are functions of (seed, epoch, index): a resumed run ends as one that never stopped.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sfc_core.engine import DistInfo, TrainState, broadcast_from_main, check_finite, cudnn_autotune
from sfc_core.io import Terminated, deferred_stop, kill_point, quiet_worker, stop_requested

LOADER_PREFETCH = 2   # batches each DataLoader worker keeps ready (PyTorch's default)


@dataclass(frozen=True)
class Plan:
    """How long a training runs, how often it logs and checkpoints (``checkpoint_minutes``: 0 off)."""

    max_steps: int
    log_every: int
    checkpoint_every: int
    checkpoint_minutes: float = 0.0

    def logs(self, step: int) -> bool:
        return step % self.log_every == 0 or step == self.max_steps

    def steps(self, start: int, stop_after: int | None = None) -> range:
        """The steps from ``start`` to the end, or to ``stop_after`` (as if interrupted there)."""
        stop = stop_after if stop_after is not None and start <= stop_after < self.max_steps else self.max_steps
        return range(start, stop)


def epoch_keys(num_images: int, seed: int, epoch: int, dist: DistInfo) -> list[tuple[int, int]]:
    """This rank's (epoch, index) keys of one epoch: a permutation drawn from (seed, epoch), dealt
    out rank by rank (a tail shorter than the world size is dropped, so ranks stay in step)."""
    order = np.random.default_rng([seed, epoch]).permutation(num_images)
    order = order[: num_images - num_images % dist.world_size]
    return [(epoch, int(i)) for i in order[dist.rank::dist.world_size]]


def step_keys(order: Callable[[int], Sequence], batch_size: int, steps_per_epoch: int,
              steps: range) -> Iterator[list]:
    """The sample keys of each step in ``steps``: epoch e's keys (``order(e)``) cut into batches."""
    for step in steps:
        epoch, index = divmod(step, steps_per_epoch)
        if step == steps.start or index == 0:
            keys = list(order(epoch))
        yield keys[index * batch_size:(index + 1) * batch_size]


def batches(data: Dataset, order: Callable[[int], Sequence], batch_size: int, steps_per_epoch: int,
            steps: range, workers: int, device: torch.device) -> DataLoader:
    """One DataLoader for ``steps``: its workers start once and serve every epoch."""
    return DataLoader(data, batch_sampler=step_keys(order, batch_size, steps_per_epoch, steps),
                      num_workers=workers, pin_memory=device.type == "cuda",
                      prefetch_factor=LOADER_PREFETCH if workers else None,
                      generator=torch.Generator().manual_seed(steps.start),   # leaves the global RNG alone
                      worker_init_fn=quiet_worker if workers else None)


def fit(state: TrainState, batches: Iterable, step: Callable[[Any], dict[str, Any]], plan: Plan,
        checkpoint: Path, dist: DistInfo, desc: str = "train") -> Iterator[dict[str, Any]]:
    """Per batch: ``step(batch)`` (returning ``{"loss", ...}``), the schedule's step, the yield of the
    output, the checkpoint when due; SIGTERM: the step's checkpoint, then ``io.Terminated``."""
    saved, first, timed = time.monotonic(), None, 0
    with tqdm(total=plan.max_steps, initial=state.step, desc=desc, unit="step", disable=not dist.is_main) as bar, \
            workers_stopped(checkpoint), deferred_stop():    # SIGTERM: the step ends, its checkpoint
        for batch in batches:
            with cudnn_autotune():            # fixed-size crops; the caller's validation runs outside
                output = step(batch)
            state.schedule.step()
            state.step += 1
            kill_point("step")     # interruption tests only (SFC_KILL_AT, sfc_core.io)
            now = time.perf_counter()
            first, timed = first or now, timed + (first is not None)
            output["seconds_per_step"] = (now - first) / timed if timed else None
            bar.update(1)
            good = checkpoint if checkpoint.is_file() else None
            if plan.logs(state.step):
                bar.set_postfix(loss=f"{check_finite(output['loss'], state.step, good):.3f}")
            yield output
            last = state.step == plan.max_steps
            due = state.step % plan.checkpoint_every == 0 or last or \
                due_by_wall_time(saved, plan, state.step, dist)
            stop = not last and stop_due(state.step, plan, dist)
            if due or stop:
                check_finite(output["loss"], state.step, good)
                state.save(checkpoint, dist)
                saved = time.monotonic()
            if stop:
                raise Terminated(f"stopped after step {state.step}, its checkpoint written ({checkpoint})")


@contextlib.contextmanager
def workers_stopped(checkpoint: Path) -> Iterator[None]:
    """Loader workers killed by a SIGTERM to the process group: ``io.Terminated``, not RuntimeError."""
    try:
        yield
    except RuntimeError:
        if stop_requested():
            raise Terminated(f"the loader's workers were stopped too; the last checkpoint is kept "
                             f"({checkpoint})") from None
        raise


def due_by_wall_time(saved: float, plan: Plan, step: int, dist: DistInfo,
                     now: Callable[[], float] = time.monotonic) -> bool:
    """Whether ``plan.checkpoint_minutes`` passed since ``saved``: on log steps only, rank 0's
    clock deciding, so every rank writes at the same step."""
    if plan.checkpoint_minutes <= 0 or step % plan.log_every:
        return False
    return bool(broadcast_from_main(now() - saved >= 60 * plan.checkpoint_minutes, dist))


def stop_due(step: int, plan: Plan, dist: DistInfo) -> bool:
    """Whether SIGTERM asks the loop to stop after ``step`` (under torchrun: rank 0's, at log steps)."""
    if dist.distributed and step % plan.log_every:
        return False
    return bool(broadcast_from_main(stop_requested(), dist))
