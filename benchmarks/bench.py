"""Benchmarks of every stage (verb: bench); figures, machines and commands: BENCHMARKS.md.

    python -m sfc_core bench --preset synthetic --threads 2 --steps 1 --repeats 20 --naive  # CPU A/B
    python -m sfc_core bench --preset voc --device cuda --steps 10 --repeats 6 --naive    # paper's
    python -m sfc_core bench --report --preset voc       # the one-shot GPU report (report.py)

Prints one JSON object (``--out``: also a file), a part per stage in ``STAGES`` (``bench``), on
inputs made up at the preset's sizes with random weights (``measure``: no dataset needed); warm-up
steps are never timed. ``--naive`` times the reference-style step beside the kit's, alternating.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks import feed, report
from benchmarks.measure import (
    VOC_IMAGE_SIZE,
    bench_cams,
    bench_config,
    bench_segment,
    class_statistics,
    inference_size,
    loader_batches,
    machine_info,
    num_foreground_classes,
    synchronize,
)
from benchmarks.reference_step import ReferenceBank, reference_losses, reference_network, reference_valid_mask
from sfc_core import engine
from sfc_core.config import Config
from sfc_core.errors import SfcError
from sfc_core.method.coefficients import distribution_coefficients
from sfc_core.method.network import SfcNet
from sfc_core.model.build import build_model

STAGES = ("train", "cams", "eval", "segment", "camwrite", "camstage", "loader")
PHASES = ("data", "forward", "backward", "optimiser")
VOC_EVAL_MASKS = 1464           # VOC train, the CAM and pseudo-mask evaluation list


# -- measuring -----------------------------------------------------------------------------


class PhaseClock:
    """Wall seconds per named phase, summed over calls, and the process's CPU seconds over all
    phases (all threads; host time on a GPU). The device is synchronised at both ends of a
    phase, so asynchronous GPU work is charged to the phase that launched it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.cpu_seconds = 0.0

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        with torch.profiler.record_function(name):
            yield
        synchronize(self.device)
        self.seconds[name] += time.perf_counter() - start
        self.cpu_seconds += time.process_time() - start_cpu

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def _malloc_in_use() -> Callable[[], int] | None:
    """A function returning the bytes glibc's malloc has handed out now, or None without glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None

    def in_use() -> int:
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd
    return in_use


@contextlib.contextmanager
def peak_memory(device: torch.device, result: dict) -> Iterator[None]:
    """Set ``result["peak_memory_mb"]`` to the most memory allocated inside the block beyond
    what was allocated when it began: CUDA's allocator peak, on the CPU glibc's ``mallinfo2``
    sampled by a thread (None without glibc)."""
    result["peak_memory_mb"] = None
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield
        synchronize(device)
        result["peak_memory_mb"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        return
    in_use = _malloc_in_use()
    if in_use is None:
        yield
        return
    before, peak, done = in_use(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], in_use())
            time.sleep(0.0002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        done.set()
        sampler.join()
    result["peak_memory_mb"] = max(0, peak[0] - before) / 2**20


def profile_summary(run_one: Callable[[], object], device: torch.device, rows: int = 15) -> list[dict]:
    """The ``rows`` operators with the most self time (device time on CUDA) in one call of
    ``run_one``, as {"op", "self_ms", "calls"}, after the scopes (the phases and the naive
    step's ``naive/...`` parts) as {"op", "total_ms", "calls"} (CPU time, children included)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run_one()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = prof.key_averages()
    is_scope = [e.key in PHASES or e.key.startswith("naive/") for e in events]
    scopes = [{"op": e.key, "total_ms": e.cpu_time_total / 1e3, "calls": e.count}
              for e, scope in zip(events, is_scope) if scope]
    ops = sorted((e for e, scope in zip(events, is_scope) if not scope), key=lambda e: getattr(e, key),
                 reverse=True)
    return scopes + [{"op": e.key, "self_ms": getattr(e, key) / 1e3, "calls": e.count} for e in ops[:rows]]


# -- the reference-style step (--naive) ------------------------------------------------------


class TrainStep:
    """One SFC training step: ``data(batch) -> inputs``, ``forward(*inputs) -> losses``,
    ``backward(loss)``, ``update()`` (clip, optimiser step, schedule), each timed by a
    PhaseClock. Subclasses say how a loader batch becomes the step's inputs and losses."""

    amp = False
    channels_last = False
    compile: str | None = None            # the torch.compile backend of the objective (None: eager)
    cudnn_deterministic = False

    def __init__(self, model: SfcNet, cfg: Config, device: torch.device, max_steps: int):
        from sfc_core.train import build_optimizer

        self.model, self.cfg, self.device = model, cfg, device
        self.optimizer, self.schedule = build_optimizer(model, cfg.train, max_steps)
        self.scaler = engine.make_grad_scaler(device, self.amp)
        self.parameters = [p for group in model.parameter_groups().values() for p in group]

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def update(self) -> None:
        self.scaler.unscale_(self.optimizer)
        if self.cfg.train.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for p in self.parameters if p.grad is not None], self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()

    def run(self, batch: dict, clock: PhaseClock) -> dict[str, torch.Tensor]:
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        with clock.phase("data"):
            inputs = self.data(batch)
        with clock.phase("forward"):
            losses = self.forward(*inputs)
        with clock.phase("backward"):
            self.backward(losses["total"])
        with clock.phase("optimiser"):
            self.update()
        return losses


class KitStep(TrainStep):
    """The kit's step, as sfc_core.train runs it: device bank, SfcObjective (compiled as
    ``runtime.compile`` says), AMP and channels-last on a GPU (per the config)."""

    def __init__(self, model: SfcNet, class_weights: torch.Tensor, cfg: Config, device: torch.device,
                 max_steps: int):
        from sfc_core.method.bank import ImageBank
        from sfc_core.model.build import build_objective

        t = cfg.train
        self.amp = cfg.runtime.amp and device.type == "cuda"
        self.channels_last = cfg.runtime.channels_last and device.type == "cuda"
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        model = model.to(device, memory_format=memory_format)
        super().__init__(model, cfg, device, max_steps)
        self.compile = engine.compile_backend(cfg.runtime.compile, device)
        self.objective = engine.compiled(build_objective(model, class_weights, cfg).to(device),
                                         cfg.runtime.compile, device)
        crop = cfg.data.crop_size
        self.bank = ImageBank(model.num_classes, (3, crop, crop), device) if t.bank_draws > 0 else None
        self.generator = torch.Generator().manual_seed(cfg.runtime.seed)

    def data(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from sfc_core.method.bank import append_bank_draws

        images = batch["image"].to(self.device, non_blocking=True)
        images, boxes, labels = append_bank_draws(self.bank, images, batch["box"], batch["label"],
                                                  self.cfg.train.bank_draws, self.generator)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, boxes.to(self.device), labels.to(self.device)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor,
                labels: torch.Tensor) -> dict[str, torch.Tensor]:
        with engine.autocast(self.device, self.amp):
            losses, _ = self.objective(images, boxes, labels)
        return losses


class ReferenceStep(TrainStep):
    """The reference trainer's step (module docstring): float32, contiguous, cuDNN
    deterministic, DataParallel on a GPU."""

    cudnn_deterministic = True

    def __init__(self, model: SfcNet, statistics: tuple[np.ndarray, np.ndarray, float], cfg: Config,
                 device: torch.device, max_steps: int):
        model = reference_network(model).to(device)
        super().__init__(model, cfg, device, max_steps)
        self.network = nn.DataParallel(model, device_ids=[device.index]) if device.type == "cuda" else model
        self.statistics = statistics
        self.bank = ReferenceBank(model.num_classes, cfg.data.crop_size, cfg.runtime.seed) \
            if cfg.train.bank_draws > 0 else None

    def data(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        num_channels, crop = self.model.num_classes + 1, self.cfg.data.crop_size
        with torch.profiler.record_function("naive/valid_mask"):
            valid_mask = torch.stack([reference_valid_mask(box, num_channels, crop) for box in batch["box"]])
            if self.device.type == "cuda":
                valid_mask = valid_mask.pin_memory()
        images, valid_mask, labels = (t.to(self.device, non_blocking=True)
                                      for t in (batch["image"], valid_mask, batch["label"]))
        order = torch.randperm(len(labels))
        images, valid_mask, labels = images[order], valid_mask[order], labels[order]
        if self.bank is not None:
            with torch.profiler.record_function("naive/bank"):
                self.bank.update(images, valid_mask, labels)
                drawn = self.bank.draw(self.cfg.train.bank_draws, self.device)
            images, valid_mask, labels = (torch.cat(pair)
                                          for pair in zip((images, valid_mask, labels), drawn))
        valid_mask[:, 1:] *= labels[:, :, None, None]
        return images, valid_mask, labels

    def forward(self, images: torch.Tensor, valid_mask: torch.Tensor,
                labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return reference_losses(self.network, images, valid_mask, labels, self.statistics,
                                self.cfg.loss.prototype_weight, self.cfg.loss.scale_weight)


def bench_train(cfg: Config, device: torch.device, steps: int, warmup: int, repeats: int,
                naive: bool, profile: bool = False) -> dict:
    """Images/s, time split (``PHASES``) and peak memory of the kit's training step (loader images
    + bank draws, two scales, every loss, clipping, the optimiser); with ``naive`` also of the
    reference-style step, the two alternating repeat by repeat, and the speed-up: naive / kit
    seconds per image over all repeats (``speedup``), per repeat, and their median;
    ``speedup_cpu``: the same ratio of the process's CPU seconds (less disturbed by load)."""
    t = cfg.train
    num_classes = num_foreground_classes(cfg)
    statistics = class_statistics(num_classes, t.batch_size, t.bank_draws)
    class_weights = torch.as_tensor(distribution_coefficients(*statistics), dtype=torch.float32)
    batches = loader_batches(4, t.batch_size, cfg.data.crop_size, cfg.data.resize_long, statistics[0],
                             cfg.runtime.seed)
    if device.type == "cuda":
        batches = [{key: value.pin_memory() for key, value in batch.items()} for batch in batches]
    engine.seed_everything(cfg.runtime.seed)
    model = build_model(cfg.model, num_classes)
    max_steps = warmup + steps * repeats + 2
    # the reference step copies the weights before the kit's step converts them (channels-last)
    reference = ReferenceStep(model, statistics, cfg, device, max_steps) if naive else None
    variants = {"kit": KitStep(model, class_weights, cfg, device, max_steps)}
    if reference is not None:
        variants["naive"] = reference
    for step in variants.values():
        for i in range(warmup):
            step.run(batches[i % len(batches)], PhaseClock(device))
    clocks: dict[str, list[PhaseClock]] = {name: [] for name in variants}      # one per repeat
    for repeat in range(repeats):
        for name in list(variants)[:: 1 if repeat % 2 == 0 else -1]:
            clock = PhaseClock(device)
            for i in range(steps):
                variants[name].run(batches[i % len(batches)], clock)
            clocks[name].append(clock)

    images_per_step = t.batch_size + t.bank_draws
    result = {"batch_size": t.batch_size, "bank_draws": t.bank_draws, "crop_size": cfg.data.crop_size,
              "backbone": cfg.model.backbone, "num_classes": num_classes, "steps": steps, "warmup": warmup,
              "repeats": repeats}
    for name, step in variants.items():
        timed = steps * repeats
        split = {phase: sum(clock.seconds[phase] for clock in clocks[name]) / timed for phase in PHASES}
        per_step = sum(split.values())
        figures = {"images_per_s": images_per_step / per_step, "seconds_per_step": per_step,
                   "time_split_s": split,
                   "cpu_seconds_per_step": sum(clock.cpu_seconds for clock in clocks[name]) / timed,
                   "amp": step.amp, "channels_last": step.channels_last, "compile": step.compile}
        with peak_memory(device, figures):
            step.run(batches[0], PhaseClock(device))
        if profile:
            figures["profile"] = profile_summary(partial(step.run, batches[1], PhaseClock(device)), device)
        result[name] = figures
    if naive:
        kit_figures, naive_figures = result["kit"], result["naive"]
        per_repeat = [naive_clock.total / kit_clock.total
                      for kit_clock, naive_clock in zip(clocks["kit"], clocks["naive"])]
        result["speedup"] = kit_figures["images_per_s"] / naive_figures["images_per_s"]
        result["speedup_per_repeat"] = per_repeat
        result["speedup_median"] = float(np.median(per_repeat))
        result["speedup_cpu"] = naive_figures["cpu_seconds_per_step"] / kit_figures["cpu_seconds_per_step"]
    return result


# -- the other stages ------------------------------------------------------------------------


def bench_eval(num_classes: int, masks: int = VOC_EVAL_MASKS, size: tuple[int, int] = VOC_IMAGE_SIZE,
               pool: int = 32, seed: int = 0) -> dict:
    """Masks/s of ``metrics.confusion_matrix`` accumulated over ``masks`` random (H, W) masks
    with ``num_classes`` classes (C+1) and about 5% ignore pixels in the ground truth
    (a pool of ``pool`` pairs, cycled; decoding the PNGs is not counted). ``seconds`` is wall
    time, ``cpu_seconds`` the process's CPU time (single-threaded NumPy: the compute itself,
    little affected by other processes' load)."""
    from sfc_core.masks import IGNORE
    from sfc_core.metrics import confusion_matrix

    rng = np.random.default_rng(seed)
    preds = rng.integers(0, num_classes, (pool, *size), dtype=np.uint8)
    gts = rng.integers(0, num_classes, (pool, *size), dtype=np.uint8)
    gts[rng.random(gts.shape) < 0.05] = IGNORE
    conf = confusion_matrix(preds[0], gts[0], num_classes)
    start, start_cpu = time.perf_counter(), time.process_time()
    for i in range(masks):
        conf += confusion_matrix(preds[i % pool], gts[i % pool], num_classes)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    return {"masks": masks, "mask_size": list(size), "num_classes": num_classes, "seconds": seconds,
            "cpu_seconds": cpu_seconds, "masks_per_s": masks / seconds}


def bench(cfg: Config, device: str = "auto", steps: int = 10, warmup: int = 2, repeats: int = 3,
          naive: bool = False, stages: tuple[str, ...] = STAGES, profile: bool = False) -> dict:
    """Run the benchmarks of ``stages`` at ``cfg``'s configuration; returns the JSON-able result."""
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown:
        raise SfcError(f"unknown benchmark stage(s) {', '.join(unknown)}",
                       fix=f"use some of: {', '.join(STAGES)}")
    if steps < 1 or warmup < 0 or repeats < 1:
        raise SfcError(f"bad counts: steps={steps}, warmup={warmup}, repeats={repeats}",
                       fix="give --steps >= 1, --warmup >= 0, --repeats >= 1")
    cfg = bench_config(cfg)
    device = engine.select_device(device, option="--device")
    result = {"preset": cfg.preset, "machine": machine_info(device)}
    if "train" in stages:
        result["train"] = bench_train(cfg, device, steps, warmup, repeats, naive, profile)
    if "cams" in stages:
        result["cams"] = bench_cams(cfg, device, steps, warmup)
    if "eval" in stages:
        result["eval"] = bench_eval(num_foreground_classes(cfg) + 1)
    if "segment" in stages:
        result["segment"] = bench_segment(cfg, device, steps, warmup)
    if "camwrite" in stages:
        result["camwrite"] = feed.bench_camwrite(steps, repeats, VOC_IMAGE_SIZE)
    if "camstage" in stages:
        model = build_model(cfg.model, num_foreground_classes(cfg)).to(device).eval()
        result["camstage"] = feed.bench_camstage(cfg, model, inference_size(cfg), device, steps, repeats)
    if "loader" in stages:
        result["loader"] = feed.bench_loader(cfg, steps, repeats, VOC_IMAGE_SIZE)
    return result


# -- the verb --------------------------------------------------------------------------------


def bench_arguments(p: argparse.ArgumentParser) -> None:
    from sfc_core.cli import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: runtime.device)")
    p.add_argument("--steps", type=int, default=10,
                   help="timed steps per repeat (training, step 3) / timed images (CAMs)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed repeats of the training step (A/B with --naive)")
    p.add_argument("--naive", action="store_true", help="also time the reference-style training step, A/B")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--profile", action="store_true", help="add a torch.profiler summary of one training step")
    p.add_argument("--report", action="store_true",
                   help="the one-shot GPU report instead (benchmarks/report.py): every speed change on and "
                        "off, MFU, syncs, busy fraction, CAM and step-3 images/s; a CUDA device")
    p.add_argument("--dry-run", action="store_true",
                   help="with --report: the same code on the CPU at tiny sizes (CUDA-only figures: n/a)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=None, help="also write the JSON to this file")


def bench_command(args: argparse.Namespace) -> int:
    from sfc_core.cli import config_from_args
    from sfc_core.io import atomic_write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    if args.report or args.dry_run:
        return report_command(cfg, args)
    stages = tuple(stage.strip() for stage in args.stages.split(",") if stage.strip())
    result = bench(cfg, args.device or cfg.runtime.device, args.steps, args.warmup, args.repeats, args.naive,
                   stages, args.profile)
    if args.out:
        atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


def report_command(cfg: Config, args: argparse.Namespace) -> int:
    """``bench --report [--dry-run]``: the GPU report's table and JSON (``--out``: the JSON, and
    the table beside it as .md)."""
    from sfc_core.io import atomic_write_json, atomic_write_text

    if not args.report:
        raise SfcError("--dry-run belongs to --report", fix="add --report, or drop --dry-run")
    device = engine.select_device("cpu" if args.dry_run else args.device or cfg.runtime.device, option="--device")
    if device.type != "cuda" and not args.dry_run:
        raise SfcError(f"the GPU report needs a CUDA device; this run has {device}",
                       fix="run it where a GPU is, or add --dry-run to try its code on the CPU")
    result = report.gpu_report(cfg, device, report.DRY_RUN if args.dry_run else report.Sizes())
    table = report.markdown(result)
    if args.out:
        atomic_write_json(args.out, result)
        atomic_write_text(Path(args.out).with_suffix(".md"), table)
    print(table)
    print(json.dumps(result, indent=2))
    return 0
