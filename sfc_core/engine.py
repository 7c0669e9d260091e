"""Shared trainer plumbing: every trainer (SFC, IRN, step-3 segmentation) uses these, none copies.

Devices and precision
    select_device(name="auto", dist=None, option="runtime.device") -> torch.device   "auto": cuda
                                             (this rank's GPU) or cpu; a bad name names option
    autocast(device, enabled)                context: bf16 where supported, else fp16; CPU no-op
    make_grad_scaler(device, enabled)        a GradScaler, active only for fp16 on CUDA
    optimizer_step(loss, optimizer, scaler, parameters, grad_clip) -> grad norm
    optimizer_update(optimizer, scaler, parameters, grad_clip) -> grad norm   (the step after backward)
    out_of_memory_hint(key, batch_size)      context: CUDA OOM -> SfcError naming a batch size

Reproducibility
    seed_everything(seed)
    rng_state() -> dict, set_rng_state(state)        python, numpy, torch, cuda generators

Distributed (torchrun)
    DistInfo(rank, world_size, local_rank) with .is_main and .distributed
    setup_distributed() -> DistInfo          reads torchrun's env vars; single process otherwise
    per_process(total, key, dist) -> int     a global count (batch size, bank draws) / world size
    wrap_ddp(model, dist, device, **ddp_kwargs), unwrap(model), all_reduce_sum(tensor, dist),
    barrier(dist), gather_objects(obj, dist) -> list, cleanup_distributed(dist)

Optimisation
    make_optimizer(name, groups, momentum, weight_decay)   "sgd" | "adamw"; groups carry "lr"
    poly_lambda(max_steps, power)            lr factor (1 - t / T) ** power, for LambdaLR
    make_schedule(optimizer, name, max_steps, power)       "poly" | "onecycle"

Checkpoints and logs
    save_checkpoint(path, state), load_checkpoint(path, map_location) -> dict
    check_compatible(ckpt, expected, path)   SfcError when classes / backbone / architecture differ
    check_finite(loss, step, last_checkpoint)
    MetricsLogger(metrics_path, tensorboard_dir, resume_step=None): log(step, values),
        image(tag, step, array)

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sfc_core.config import check_device
from sfc_core.errors import SfcError
from sfc_core.io import append_jsonl, atomic_torch_save, atomic_write_text

# -- distributed ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed() -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK); else one process.

    NCCL when CUDA is available, gloo otherwise (so a CPU torchrun job works too).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    dist = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(dist.local_rank)
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist


def per_process(total: int, key: str, dist: DistInfo) -> int:
    """This process's share of a global count: ``total / world_size`` (``train.batch_size``,
    ``train.bank_draws`` and ``segment.batch_size`` are global, so N processes train the
    recipe one process trains). SfcError naming ``key`` when it does not divide."""
    if total % dist.world_size:
        raise SfcError(f"{key}={total} is global and does not split over {dist.world_size} processes",
                       fix=f"pass --set {key}=<a multiple of {dist.world_size}>, or run "
                           f"{'another number of processes' if total else 'one process'}")
    return total // dist.world_size


def mean_over_ranks(values: dict[str, torch.Tensor], dist: DistInfo) -> dict[str, float]:
    """Scalar tensors (e.g. this rank's losses) averaged over ranks: the global batch's means
    when every rank holds the same number of images. Every rank must call it."""
    stacked = torch.stack([value.detach().float().reshape(()) for value in values.values()])
    return dict(zip(values, (all_reduce_sum(stacked, dist) / dist.world_size).tolist()))


def cleanup_distributed(dist: DistInfo) -> None:
    if dist.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def wrap_ddp(model: nn.Module, dist: DistInfo, device: torch.device, **ddp_kwargs: Any) -> nn.Module:
    """DistributedDataParallel (with ``ddp_kwargs``, e.g. find_unused_parameters) when
    distributed, the model itself otherwise."""
    if not dist.distributed:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(tensor: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks in place (e.g. confusion matrices); identity in one process."""
    if dist.distributed:
        torch.distributed.all_reduce(tensor)
    return tensor


def barrier(dist: DistInfo) -> None:
    """Wait for every rank (no-op in one process)."""
    if dist.distributed:
        torch.distributed.barrier()


def gather_objects(obj: Any, dist: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if not dist.distributed:
        return [obj]
    out: list[Any] = [None] * dist.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


# -- devices and precision -----------------------------------------------------------------


def select_device(name: str = "auto", dist: DistInfo | None = None, option: str = "runtime.device") -> torch.device:
    """``"auto"``: this rank's GPU when CUDA is available, else the CPU. A malformed name, or
    ``"cuda"`` without a GPU, raises SfcError whose fix names ``option``: the configuration key
    (``--set runtime.device=cpu``) or the verb's flag (``"--device"``: ``--device cpu``)."""
    check_device(name, option)
    local_rank = dist.local_rank if dist is not None else 0
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            use = f"{option} cpu" if option.startswith("--") else f"--set {option}=cpu"
            raise SfcError(f"device {name!r} asked for, but this machine has no usable CUDA GPU",
                           fix=f"use {use} (or auto)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def amp_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the GPU supports it (no loss scaling needed), else float16."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA; a no-op on the CPU or when disabled."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=amp_dtype(device))


def make_grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """A loss scaler that is active only for float16 autocast on CUDA (a pass-through otherwise)."""
    active = enabled and device.type == "cuda" and amp_dtype(device) == torch.float16
    return torch.amp.GradScaler("cuda", enabled=active)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   parameters: Iterable[torch.Tensor], grad_clip: float) -> torch.Tensor:
    """Backward, then ``optimizer_update``. Returns the gradient norm before clipping (a 0-d tensor)."""
    scaler.scale(loss).backward()
    return optimizer_update(optimizer, scaler, parameters, grad_clip)


def optimizer_update(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                     parameters: Iterable[torch.Tensor], grad_clip: float) -> torch.Tensor:
    """After backward: unscale, clip the global gradient norm (skipped when ``grad_clip <= 0``),
    step, zero the gradients. Returns the gradient norm before clipping (a 0-d tensor)."""
    scaler.unscale_(optimizer)
    parameters = [p for p in parameters if p.grad is not None]
    max_norm = grad_clip if grad_clip > 0 else math.inf
    grad_norm = nn.utils.clip_grad_norm_(parameters, max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


@contextlib.contextmanager
def out_of_memory_hint(batch_size_key: str, batch_size: int) -> Iterator[None]:
    """Turn a CUDA out-of-memory error into an SfcError that says which batch size to try."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise SfcError(f"out of GPU memory at {batch_size_key}={batch_size}",
                       fix=f"try --set {batch_size_key}={max(1, batch_size // 2)}, "
                           "or keep runtime.amp=true") from None


# -- reproducibility -----------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global generators' states, as tensors and plain values (checkpoint-safe)."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": numpy_state["state"]["pos"],
                  "has_gauss": numpy_state["has_gauss"], "gauss": numpy_state["gauss"]},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state()`` returned."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
                         "has_gauss": numpy["has_gauss"], "gauss": numpy["gauss"]})
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- optimisation --------------------------------------------------------------------------


def make_optimizer(name: str, groups: list[dict[str, Any]], momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """``"sgd"`` (the paper: momentum from config, 0 by default) or ``"adamw"``.

    ``groups`` are torch parameter groups, each with its own ``"lr"``.
    """
    if name == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=groups[0]["lr"], weight_decay=weight_decay)
    raise SfcError(f"unknown optimizer {name!r}", fix="set train.optimizer to sgd or adamw")


def poly_lambda(max_steps: int, power: float) -> Callable[[int], float]:
    """The poly factor ``(1 - t / max_steps) ** power`` for ``LambdaLR`` (t = updates done)."""
    def factor(step: int) -> float:
        return max(0.0, 1.0 - step / max_steps) ** power
    return factor


def make_schedule(optimizer: torch.optim.Optimizer, name: str, max_steps: int,
                  power: float = 0.9) -> torch.optim.lr_scheduler.LRScheduler:
    """``"poly"``: lr0 * (1 - t/T)^power per group (the paper). ``"onecycle"``: torch's one-cycle
    policy peaking at each group's lr (the from-scratch synthetic recipe); it also cycles
    Adam's beta1 when the optimizer has betas. Call ``.step()`` after every update."""
    if name == "poly":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(max_steps, power))
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=max_steps, cycle_momentum="betas" in optimizer.defaults)
    raise SfcError(f"unknown schedule {name!r}", fix="set train.schedule to poly or onecycle")


# -- checkpoints ---------------------------------------------------------------------------


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically: a killed run leaves the previous checkpoint intact."""
    return atomic_torch_save(path, state)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SfcError("checkpoint not found", path=path,
                       fix="train first (python -m sfc_core train --out RUN_DIR), or check the path")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated or foreign file: say which one
        raise SfcError(f"checkpoint cannot be read ({type(e).__name__}: {str(e)[:200]})", path=path,
                       fix="delete it and train again (or resume from the other checkpoint)") from None


def check_compatible(ckpt: dict[str, Any], expected: dict[str, Any], path: str | Path) -> None:
    """Raise SfcError when the checkpoint's recorded ``num_classes`` / ``class_names`` /
    ``backbone`` / ``architecture`` (whichever ``expected`` names) differ from this run's."""
    differ = [key for key, value in expected.items() if ckpt.get(key) != value]
    if not differ:
        return

    def describe(values: dict[str, Any]) -> str:
        return ", ".join(f"{key}={values.get(key)!r}" for key in differ if key != "class_names") \
            or "different class names"

    raise SfcError(f"checkpoint {path} was trained with {describe(ckpt)}; this run has {describe(expected)}"
                   + (f" (class names {ckpt.get('class_names')} vs {expected['class_names']})"
                      if "class_names" in differ else ""),
                   path=path, fix="use a fresh --out, or the preset and dataset the checkpoint was made with")


def check_finite(loss: torch.Tensor | float, step: int, last_checkpoint: str | Path | None) -> None:
    """Stop a diverged run with the step and the last good checkpoint (NaN/inf loss)."""
    value = torch.as_tensor(loss).detach().item()
    if math.isfinite(value):
        return
    where = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint yet"
    raise SfcError(f"training diverged: loss is {value} at step {step}; {where}",
                   path=last_checkpoint,
                   fix="lower train.lr (or set runtime.amp=false) and resume with --resume")


# -- logging -------------------------------------------------------------------------------


class MetricsLogger:
    """Scalars to ``metrics_path`` (one JSON line per call) and TensorBoard; images to TensorBoard.

    With ``enabled=False`` (ranks other than 0) every call does nothing. A run resumed from
    the checkpoint of step ``resume_step`` drops what was logged after that step (it is about
    to be logged again): lines of metrics.jsonl and TensorBoard events alike.
    """

    def __init__(self, metrics_path: str | Path, tensorboard_dir: str | Path | None = None,
                 enabled: bool = True, resume_step: int | None = None):
        self.metrics_path = Path(metrics_path)
        self.tensorboard_dir = tensorboard_dir
        self.enabled = enabled
        self.purge_step = None if resume_step is None else resume_step + 1
        self._writer = None
        if enabled and resume_step is not None and self.metrics_path.is_file():
            lines = self.metrics_path.read_text().splitlines(keepends=True)
            atomic_write_text(self.metrics_path,
                              "".join(line for line in lines if json.loads(line)["step"] <= resume_step))

    @property
    def writer(self):
        if self._writer is None and self.tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.tensorboard_dir), purge_step=self.purge_step)
        return self._writer

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = {key: float(value) for key, value in values.items()}
        append_jsonl(self.metrics_path, {"step": step, **values})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def image(self, tag: str, step: int, array: np.ndarray) -> None:
        """``array``: (H, W, 3) uint8 or float in [0, 1]."""
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag, array, step, dataformats="HWC")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
