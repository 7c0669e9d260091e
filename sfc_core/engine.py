"""Shared trainer plumbing of SFC, IRN and step 3 (the loop itself: ``sfc_core.loop``): torchrun
collectives (no-ops in one process), devices and precision, global RNG states, optimisers and
schedules, checkpoints (tensors and plain values only: ``weights_only`` loadable), the metrics
logger and ``TrainState``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sfc_core.config import check_device, flat_dict
from sfc_core.errors import SfcError
from sfc_core.io import (
    append_jsonl,
    atomic_torch_save,
    atomic_write_text,
    disk_full,
    out_of_space,
    quiet_thread_errors,
)


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
    """Join torchrun's process group (NCCL on CUDA, else gloo), or one process."""
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
    """This process's share of a global count (SfcError naming ``key`` when it does not divide)."""
    if total % dist.world_size:
        raise SfcError(f"{key}={total} is global and does not split over {dist.world_size} processes",
                       fix=f"pass --set {key}=<a multiple of {dist.world_size}>, or run "
                           f"{'another number of processes' if total else 'one process'}")
    return total // dist.world_size


def mean_over_ranks(values: dict[str, torch.Tensor], dist: DistInfo) -> dict[str, float]:
    """Scalar tensors averaged over ranks (every rank must call it)."""
    stacked = torch.stack([value.detach().float().reshape(()) for value in values.values()])
    return dict(zip(values, (all_reduce_sum(stacked, dist) / dist.world_size).tolist()))


def cleanup_distributed(dist: DistInfo) -> None:
    if dist.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def wrap_ddp(model: nn.Module, dist: DistInfo, device: torch.device, **ddp_kwargs: Any) -> nn.Module:
    if not dist.distributed:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(tensor: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    if dist.distributed:
        torch.distributed.all_reduce(tensor)
    return tensor


def barrier(dist: DistInfo) -> None:
    if dist.distributed:
        torch.distributed.barrier()


def gather_objects(obj: Any, dist: DistInfo) -> list[Any]:
    if not dist.distributed:
        return [obj]
    out: list[Any] = [None] * dist.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast_from_main(obj: Any, dist: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (every rank must call it)."""
    if not dist.distributed:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(obj: Any, dist: DistInfo) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (the checkpoint's writer), None on the others."""
    if not dist.distributed:
        return [obj]
    out: list[Any] | None = [None] * dist.world_size if dist.is_main else None
    torch.distributed.gather_object(obj, out, dst=0)
    return out


def compile_backend(setting: str, device: torch.device) -> str | None:
    """The torch.compile backend of ``runtime.compile`` on ``device``, None for eager; ``"auto"``:
    inductor on CUDA, eager on the CPU (BENCHMARKS.md says why)."""
    if setting == "auto":
        return "inductor" if device.type == "cuda" else None
    return None if setting == "off" else setting


def compiled(module: nn.Module, setting: str, device: torch.device) -> nn.Module:
    """``module`` under torch.compile (``CompiledOrEager``, sharing its parameters), or itself."""
    backend = compile_backend(setting, device)
    return module if backend is None else CompiledOrEager(module, backend)


class CompiledOrEager(nn.Module):
    """``module`` compiled until compiling (or the first call) fails, then eager, with one warning
    naming ``--set runtime.compile=off``. Out of memory propagates."""

    def __init__(self, module: nn.Module, backend: str):
        super().__init__()
        self.module, self.backend, self.checked = module, backend, False
        try:
            self.__dict__["compiled"] = torch.compile(module, backend=backend)   # not a second submodule
        except Exception as e:
            self._fall_back(e)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.module(*args, **kwargs)
        if self.checked:
            return self.compiled(*args, **kwargs)
        try:
            out = self.compiled(*args, **kwargs)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:
            self._fall_back(e)
            return self.module(*args, **kwargs)
        self.checked = True
        return out

    def _fall_back(self, error: Exception) -> None:
        self.__dict__["compiled"] = None
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"torch.compile (backend {self.backend}) failed ({type(error).__name__}: {reason}); "
                      "running eagerly instead. To skip compiling: --set runtime.compile=off",
                      RuntimeWarning, stacklevel=3)


@contextlib.contextmanager
def cudnn_autotune() -> Iterator[None]:
    """cuDNN's autotuner on inside (the training's fixed-size crops), as before outside."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on ``device`` without the host waiting (non-blocking, pinned on CUDA)."""
    if device.type == "cuda" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


CPU_LOADER_WORKERS = 2   # "auto" on a CPU: the workers share the cores with the network's threads
MAX_LOADER_WORKERS = 8   # "auto" on a GPU: enough to feed it; more only cost memory and start-up


def loader_workers(setting: int | str, device: torch.device) -> int:
    """DataLoader workers; ``"auto"`` on a GPU: this process's share of the cores minus one."""
    if setting != "auto":
        return int(setting)
    if device.type != "cuda":
        return CPU_LOADER_WORKERS
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return min(MAX_LOADER_WORKERS, max(1, share - 1))


GPU_PRESETS = ("voc", "coco")   # ResNets on full-size images: "auto" on a CPU stops (select_device)


def select_device(name: str = "auto", dist: DistInfo | None = None, option: str = "runtime.device",
                  preset: str | None = None) -> torch.device:
    """``"auto"``: this rank's GPU, else the CPU (GPU_PRESETS: only by name); a bad name or a
    missing GPU is an SfcError naming ``option``. A GPU chosen becomes the current device."""
    check_device(name, option)
    local_rank = dist.local_rank if dist is not None else 0
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    use_cpu = f"{option} cpu" if option.startswith("--") else f"--set {option}=cpu"
    if device.type == "cpu" and name == "auto" and preset in GPU_PRESETS:
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise SfcError(f"the {preset} preset found no usable CUDA GPU (torch {torch.__version__}, {build}; "
                       "a driver older than the build needs hides the GPU), and its ResNets on full-size "
                       "images would take days on the CPU",
                       fix="run where `python -c 'import torch; print(torch.cuda.is_available())'` prints "
                           f"True, or ask for the CPU: {use_cpu}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SfcError(f"device {name!r} asked for, but this machine has no usable CUDA GPU",
                           fix=f"use {use_cpu} (or auto)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        count = torch.cuda.device_count()
        if device.index >= count:
            raise SfcError(f"device {str(device)!r} asked for, but this machine has {count} GPU(s)",
                           fix=f"name one of cuda:0 to cuda:{count - 1}, or use {use_cpu}")
        torch.cuda.set_device(device)    # cuda:N: kernels, streams and events of this process go there
    return device


def amp_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the GPU has it natively (compute capability 8.0+), else float16 (scaled).
    Not ``torch.cuda.is_bf16_supported()``: it counts emulated bfloat16 too."""
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def announce_runtime(stage: str, device: torch.device, dist: DistInfo, workers: int, amp: bool,
                     backend: str | None = None) -> None:
    """One line on stderr (rank 0) naming device, AMP, compile, workers and world size."""
    if not dist.is_main:
        return
    if device.type == "cuda":
        where = f"{device} ({torch.cuda.get_device_name(device)}; {torch.cuda.device_count()} GPU(s) visible)"
        precision = str(amp_dtype(device)).removeprefix("torch.") if amp else "off (float32)"
    else:
        where, precision = f"CPU ({torch.get_num_threads()} torch threads; no GPU used)", "off (float32)"
    print(f"{stage}: device {where}, AMP {precision}, compile {backend or 'off'}, {workers} loader "
          f"worker(s), world size {dist.world_size}", file=sys.stderr, flush=True)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA; a no-op on the CPU or when disabled."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=amp_dtype(device))


def make_grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """A loss scaler, active only for float16 autocast on CUDA."""
    active = enabled and device.type == "cuda" and amp_dtype(device) == torch.float16
    return torch.amp.GradScaler("cuda", enabled=active)


@contextlib.contextmanager
def out_of_memory_hint(batch_size_key: str, batch_size: int) -> Iterator[None]:
    """Turn a CUDA out-of-memory error into an SfcError that says which batch size to try."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise SfcError(f"out of GPU memory at {batch_size_key}={batch_size}",
                       fix=f"try --set {batch_size_key}={max(1, batch_size // 2)}, "
                           "or keep runtime.amp=true") from None


def seed_everything(seed: int) -> None:
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
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
                         "has_gauss": numpy["has_gauss"], "gauss": numpy["gauss"]})
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_optimizer(name: str, groups: list[dict[str, Any]], momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """``"sgd"`` (the paper) or ``"adamw"`` over parameter groups, each with its own ``"lr"``."""
    if name == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=groups[0]["lr"], weight_decay=weight_decay)
    raise SfcError(f"unknown optimizer {name!r}", fix="set train.optimizer to sgd or adamw")


def make_schedule(optimizer: torch.optim.Optimizer, name: str, max_steps: int,
                  power: float = 0.9) -> torch.optim.lr_scheduler.LRScheduler:
    """``"poly"`` (the paper) or ``"onecycle"`` (the from-scratch synthetic recipe)."""
    if name == "poly":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: max(0.0, 1.0 - t / max_steps) ** power)
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=max_steps, cycle_momentum="betas" in optimizer.defaults)
    raise SfcError(f"unknown schedule {name!r}", fix="set train.schedule to poly or onecycle")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SfcError("checkpoint not found", path=path,
                       fix="train first (python -m sfc_core train --out RUN_DIR), or check the path")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated or foreign file: say which one
        readable = [other.name for other in sorted(path.parent.glob("*.pt")) if other != path and _readable(other)]
        left = (f"{', '.join(readable)} beside it can still be read" if readable
                else f"no other checkpoint in {path.parent} can be read either: train again")
        raise SfcError(f"checkpoint cannot be read: {_damage(e)}", path=path,
                       fix=f"delete it and run the stage that wrote it again; {left}") from None


def _damage(error: Exception) -> str:
    """torch.load's error in one sentence, without its unsafe ``weights_only=False`` advice."""
    text = str(error)
    if "WeightsUnpickler error:" in text:       # the safe loader refused its contents
        detail = _first_sentence(text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0])
        return ("it holds something other than tensors and plain values, so it is damaged or "
                "was not written by this kit" + ("" if "weights_only" in detail else f" ({detail})"))
    detail = _first_sentence(text)
    return f"it is truncated or damaged ({type(error).__name__}: {detail})" \
        if detail and "weights_only" not in detail else f"it is truncated or damaged ({type(error).__name__})"


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return (text if end < 0 else text[:end]).rstrip(".")


def _readable(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return True


FRESH_RUN_FIX = "use a fresh --out, or the preset and dataset the checkpoint was made with"


def check_compatible(ckpt: dict[str, Any], expected: dict[str, Any], path: str | Path,
                     fix: str = FRESH_RUN_FIX) -> None:
    """SfcError when the checkpoint's identity fields named in ``expected`` differ."""
    differ = [key for key, value in expected.items() if ckpt.get(key) != value]
    if not differ:
        return

    def describe(values: dict[str, Any]) -> str:
        return ", ".join(f"{key}={values.get(key)!r}" for key in differ if key != "class_names") \
            or "different class names"

    raise SfcError(f"checkpoint {path} was trained with {describe(ckpt)}; this run has {describe(expected)}"
                   + (f" (class names {ckpt.get('class_names')} vs {expected['class_names']})"
                      if "class_names" in differ else ""),
                   path=path, fix=fix)


def check_shapes(ckpt: dict[str, Any], model: nn.Module, path: str | Path, config: dict[str, Any],
                 builds: tuple[str, ...], fix: str = FRESH_RUN_FIX) -> None:
    """SfcError naming the first tensor whose shape differs and the first differing ``builds`` field."""
    own, saved = model.state_dict(), ckpt["model"]

    def shape(state: dict[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
        return tuple(state[key].shape) if key in state else None

    keys = [*own, *(key for key in saved if key not in own)]
    wrong = next((key for key in keys if shape(own, key) != shape(saved, key)), None)
    if wrong is None:
        return
    theirs, ours = flat_dict(ckpt.get("config", {})), flat_dict(config)
    field_name = next((key for key in ours if key.startswith(builds) and key in theirs
                       and theirs[key] != ours[key]), None)
    cause = (f"; the first field that differs: {field_name} = {theirs[field_name]!r} in the checkpoint, "
             f"{ours[field_name]!r} in this run") if field_name else ""
    raise SfcError(f"checkpoint {path} does not fit the network this run's configuration builds: "
                   f"tensor {wrong} is {shape(saved, wrong)} there, {shape(own, wrong)} here{cause}",
                   path=path, fix=fix)


def check_finite(loss: torch.Tensor | float, step: int, last_checkpoint: str | Path | None) -> float:
    """The loss as a float; NaN/inf stops with the step and the last good checkpoint."""
    value = torch.as_tensor(loss).detach().item()
    if math.isfinite(value):
        return value
    where = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint yet"
    raise SfcError(f"training diverged: loss is {value} at step {step}; {where}",
                   path=last_checkpoint,
                   fix="lower train.lr (or set runtime.amp=false) and resume with --resume")


class MetricsLogger:
    """Scalars to metrics.jsonl and TensorBoard (a no-op when not ``enabled``); resumed at
    ``resume_step``, it drops what was logged after it."""

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

            _quiet_tensorboard_threads()
            self._writer = SummaryWriter(str(self.tensorboard_dir), purge_step=self.purge_step)
        return self._writer

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = {key: float(value) for key, value in values.items()}
        append_jsonl(self.metrics_path, {"step": step, **values})
        if self.tensorboard_dir is not None:
            with self._disk_full_said():        # opening the writer writes too
                for key, value in values.items():
                    self.writer.add_scalar(key, value, step)

    def image(self, tag: str, step: int, array: np.ndarray) -> None:
        """``array``: (H, W, 3) uint8 or float in [0, 1]."""
        if self.enabled and self.tensorboard_dir is not None:
            with self._disk_full_said():
                self.writer.add_image(tag, array, step, dataformats="HWC")

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with self._disk_full_said():
                try:
                    writer.flush()          # raises the writer thread's error, if it had one
                finally:
                    writer.close()

    @contextlib.contextmanager
    def _disk_full_said(self) -> Iterator[None]:
        """The TensorBoard writer's error as ``io.DiskFull`` when the disk is full."""
        try:
            yield
        except OSError as e:
            if out_of_space(e):
                raise disk_full(self.tensorboard_dir, "TensorBoard events", None) from None
            raise


def _quiet_tensorboard_threads() -> None:
    """TensorBoard's writer thread prints no traceback: the next ``MetricsLogger`` call says it."""
    if not getattr(threading.excepthook, "quiets_tensorboard", False):
        quiet_thread_errors(lambda args: type(args.thread).__module__.startswith("tensorboard."))
        threading.excepthook.quiets_tensorboard = True


def _state_of(obj: Any) -> Any:
    if obj is None:
        return None
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def on_cpu(obj: Any) -> Any:
    """``obj`` with every nested tensor on the CPU: no device tensor crosses NCCL's object path."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {key: on_cpu(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(value) for value in obj)
    return obj


def _restore(obj: Any, state: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    elif obj is not None:
        obj.load_state_dict(state)


@dataclass
class TrainState:
    """What a checkpoint holds and a resume restores. ``builds``: the config prefixes that decide
    tensor shapes; ``extras``: per-process states (SFC: bank, generator); ``meta``: SFC's best."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    identity: dict[str, Any]
    config: dict[str, Any]
    builds: tuple[str, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    step: int = 0

    def save(self, path: Path, dist: DistInfo, full: bool = True) -> None:
        """Write the checkpoint (rank 0 writes; every rank calls); ``full`` adds what a resume needs."""
        state = {"model": unwrap(self.model).state_dict(), "step": self.step, "config": self.config,
                 **self.meta, **self.identity}
        if full:
            own = on_cpu({name: _state_of(obj) for name, obj in self.extras.items()} | {"rng": rng_state()})
            state.update(optimizer=self.optimizer.state_dict(), schedule=self.schedule.state_dict(),
                         scaler=self.scaler.state_dict(), ranks=gather_to_main(own, dist))
        if dist.is_main:
            atomic_torch_save(path, state)     # a killed run leaves the previous checkpoint

    def resume(self, path: Path, dist: DistInfo, fix: str = FRESH_RUN_FIX) -> None:
        """Continue from ``path`` if it exists, after checking identity, shapes and world size."""
        if not path.is_file():
            return
        ckpt = load_checkpoint(path)
        check_compatible(ckpt, self.identity, path, fix)
        check_shapes(ckpt, unwrap(self.model), path, self.config, self.builds, fix)
        ranks = ckpt["ranks"]
        if len(ranks) != dist.world_size:
            raise SfcError(f"checkpoint was written by {len(ranks)} process(es), this run has "
                           f"{dist.world_size}", path=path,
                           fix="resume with the same number of processes (torchrun --nproc_per_node)")
        unwrap(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.scaler.load_state_dict(ckpt["scaler"])
        own = ranks[dist.rank]
        for name, obj in self.extras.items():
            _restore(obj, own[name])
        set_rng_state(own["rng"])
        self.step = ckpt["step"]
        self.meta.update({key: ckpt[key] for key in self.meta if key in ckpt})
