"""The one-shot GPU report (``bench --report``): each speed change on and off, MFU, syncs, busy
fraction, the real loop's loader, CAM and step-3 images/s; made-up inputs, random weights.

    python -m sfc_core bench --report --preset voc --out gpu_report.json   # on a CUDA device
    python -m sfc_core bench --report --dry-run --preset synthetic-smoke   # the same code, CPU, tiny

Prints a markdown table and the JSON object (``--out``: written too, the table beside it as .md).
``--dry-run`` runs every part on the CPU at tiny sizes (``DRY_RUN``), compiling with ``aot_eager``,
so CI proves the code path; CUDA-only figures there say ``"n/a on CPU"``.
"""
from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmarks import feed, measure
from sfc_core import engine, loop
from sfc_core.config import Config
from sfc_core.data import TrainDataset
from sfc_core.method.coefficients import distribution_coefficients
from sfc_core.model.build import build_model, build_objective
from sfc_core.train import SfcTrainer, build_trainer, sfc_step

NOT_ON_CPU = "n/a on CPU"
MAX_STEPS = 10_000              # the schedules' length: more than the report steps (one-cycle refuses more)
# Dense (no sparsity) bf16 tensor peaks from the vendors' data sheets, TFLOP/s; the first name
# found in torch.cuda.get_device_name wins (so "H100 PCIe" before "H100").
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0),
                    ("L40S", 362.0), ("L4", 121.0))


@dataclass(frozen=True)
class Variant:
    """Which speed changes a timed step has on (channels-last and AMP act on CUDA only)."""

    compile: bool
    channels_last: bool
    amp: bool


STEP_VARIANTS = {"all on": Variant(True, True, True), "compile off": Variant(False, True, True),
                 "channels_last off": Variant(False, False, True), "amp off": Variant(False, True, False)}
CHANGES = {"compile": ("all on", "compile off"), "channels_last": ("compile off", "channels_last off"),
           "amp": ("compile off", "amp off")}       # change: (variant with it, variant without it)


@dataclass(frozen=True)
class Sizes:
    """How much each part runs, and the dry run's configuration changes."""

    warmup: int = 3
    steps: int = 20
    profile_steps: int = 3
    loop_steps: int = 40
    loop_images: int = 96
    cam_images: int = 16
    cam_repeats: int = 2
    segment_steps: int = 10
    overrides: tuple = ()
    compile_backend: str = "inductor"
    image_size: tuple[int, int] = measure.VOC_IMAGE_SIZE


DRY_RUN = Sizes(warmup=1, steps=1, profile_steps=1, loop_steps=2, loop_images=8, cam_images=1, cam_repeats=1,
                segment_steps=1,
                overrides=(("data.crop_size", 32), ("data.resize_long", (24, 40)), ("train.batch_size", 4),
                           ("train.bank_draws", 2), ("segment.crop_size", 32), ("segment.batch_size", 2),
                           ("cams.scales", (1.0, 0.5)), ("model.backbone", "tiny")),
                compile_backend="aot_eager", image_size=(30, 40))


def peak_for_name(name: str) -> float | None:
    """The dense bf16 peak in FLOP/s of a device called ``name`` (None when not in the table)."""
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    """The device's dense bf16 peak in FLOP/s (None when unknown or on the CPU) and its name."""
    if device.type != "cuda":
        return None, NOT_ON_CPU
    name = torch.cuda.get_device_name(device)
    return peak_for_name(name), name


def step_flops(cfg: Config, num_classes: int) -> int:
    """FLOPs of one SFC step's forward and backward at ``cfg`` (loader images + bank draws),
    counted on the meta device (``torch.utils.flop_counter``: convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    t, size, meta = cfg.train, cfg.data.crop_size, torch.device("meta")
    images = t.batch_size + t.bank_draws
    with meta:
        model = build_model(cfg.model, num_classes)
        objective = build_objective(model, torch.ones(num_classes), cfg)
        boxes = torch.tensor([[0, size, 0, size]] * images)
        labels = torch.ones(images, num_classes)
        batch = torch.zeros(images, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        losses, _ = objective(batch, boxes, labels)
        losses["total"].backward()
    return counter.get_total_flops()


def variant_config(cfg: Config, variant: Variant, backend: str) -> Config:
    return Config.from_dict(cfg.to_dict()).override({"runtime.compile": backend if variant.compile else "off",
                                                      "runtime.channels_last": variant.channels_last,
                                                      "runtime.amp": variant.amp})


def make_update(cfg: Config, device: torch.device, max_steps: int) -> SfcTrainer:
    """The training step of ``train`` at ``cfg`` (one process), with the bench's long-tailed
    class weights."""
    num_classes = measure.num_foreground_classes(cfg)
    statistics = measure.class_statistics(num_classes, cfg.train.batch_size, cfg.train.bank_draws)
    weights = torch.as_tensor(distribution_coefficients(*statistics), dtype=torch.float32)
    engine.seed_everything(cfg.runtime.seed)
    return build_trainer(cfg, [str(c) for c in range(num_classes)], weights, device, engine.DistInfo(), max_steps)


def uint8_batches(cfg: Config, count: int, device: torch.device) -> list[dict]:
    """``count`` loader batches as the kit's DataLoader hands them over: uint8 crops, in pinned
    memory on CUDA (``measure.loader_batches``' crops quantised)."""
    t, num_classes = cfg.train, measure.num_foreground_classes(cfg)
    counts = measure.class_statistics(num_classes, t.batch_size, t.bank_draws)[0]
    batches = measure.loader_batches(count, t.batch_size, cfg.data.crop_size, cfg.data.resize_long, counts,
                                   cfg.runtime.seed)
    for batch in batches:
        batch["image"] = (batch["image"] * 40 + 128).clamp(0, 255).to(torch.uint8)
        if device.type == "cuda":
            batch.update({key: value.pin_memory() for key, value in batch.items()})
    return batches


def run_steps(update: SfcTrainer, batches: list[dict], steps: int) -> None:
    for i in range(steps):
        with engine.cudnn_autotune():        # as loop.fit runs each update
            sfc_step(update, batches[i % len(batches)])
        update.state.schedule.step()


def time_step(update: SfcTrainer, batches: list[dict], sizes: Sizes, images_per_step: int) -> dict:
    """First-step seconds, then ``sizes.steps`` steps after the warm-up, one sync at the end."""
    device = update.device
    start = time.perf_counter()
    run_steps(update, batches, 1)
    measure.synchronize(device)
    first = time.perf_counter() - start
    run_steps(update, batches, sizes.warmup - 1)
    measure.synchronize(device)
    start = time.perf_counter()
    run_steps(update, batches, sizes.steps)
    measure.synchronize(device)
    per_step = (time.perf_counter() - start) / sizes.steps
    return {"images_per_s": images_per_step / per_step, "seconds_per_step": per_step, "first_step_s": first}


def syncs_per_step(update: SfcTrainer, batches: list[dict], steps: int) -> float | str:
    """Synchronising CUDA calls per step, as ``set_sync_debug_mode("warn")`` reports them."""
    if update.device.type != "cuda":
        return NOT_ON_CPU
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_steps(update, batches, steps)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def busy_fraction(update: SfcTrainer, batches: list[dict], steps: int) -> float | str:
    """The device's summed kernel time over the wall time of ``steps`` profiled steps."""
    if update.device.type != "cuda":
        return NOT_ON_CPU
    from torch.profiler import ProfilerActivity, profile

    measure.synchronize(update.device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        run_steps(update, batches, steps)
        measure.synchronize(update.device)
        wall_us = (time.perf_counter() - start) * 1e6
    return sum(e.self_device_time_total for e in prof.key_averages()) / wall_us


class Float32Items(Dataset):
    """Today's float32 training items of a TrainDataset (``feed.today_train_item``)."""

    def __init__(self, dataset: TrainDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return feed.today_train_item(self.dataset, key)


def time_loop(update: SfcTrainer, data: Dataset, steps: int, folder: Path) -> dict:
    """images/s of ``loop.fit`` over ``data`` (its DataLoader, workers "auto"), the first step
    (workers starting) not timed, as the loop itself counts."""
    cfg, device = update.cfg.train, update.device
    batch, count, workers = cfg.batch_size, len(data), engine.loader_workers("auto", device)
    order = np.random.default_rng(0).permutation(count)
    update.state.step, seconds = 0, None
    batches = loop.batches(data, lambda epoch: [(epoch, int(i)) for i in order], batch, count // batch,
                           range(steps), workers, device)
    for output in loop.fit(update.state, batches, partial(sfc_step, update), loop.Plan(steps, steps, steps),
                           folder / "last.pt", engine.DistInfo(), desc="report loop"):
        seconds = output["seconds_per_step"]
    return {"images_per_s": (batch + cfg.bank_draws) / seconds if seconds else None, "steps": steps,
            "num_workers": workers}


def measured(result: dict, name: str, part) -> None:
    """``result[name] = part()``, or ``{"error": ...}`` when it fails (a one-shot report keeps
    the parts that worked), and the part's wall seconds in ``result["part_seconds"]``."""
    start = time.perf_counter()
    try:
        result[name] = part()
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        result[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    result.setdefault("part_seconds", {})[name] = time.perf_counter() - start


def step_report(cfg: Config, device: torch.device, sizes: Sizes, flops: int, peak: float | None,
                compiled_update: SfcTrainer) -> dict:
    """Every STEP_VARIANTS entry timed ("all on": ``compiled_update``, not called yet) with its
    MFU (FLOPs per step x steps/s / the device's dense bf16 peak), the first one's syncs and busy
    fraction, and each change's images/s on and off (``CHANGES``)."""
    batches = uint8_batches(cfg, 4, device)
    images_per_step = cfg.train.batch_size + cfg.train.bank_draws
    variants = {}
    for name, variant in STEP_VARIANTS.items():
        vcfg = variant_config(cfg, variant, sizes.compile_backend)
        update = compiled_update if name == "all on" else make_update(vcfg, device, MAX_STEPS)
        figures = time_step(update, batches, sizes, images_per_step)
        figures.update(compile=engine.compile_backend(vcfg.runtime.compile, device),
                       channels_last=variant.channels_last and device.type == "cuda",
                       amp=variant.amp and device.type == "cuda",
                       mfu=None if peak is None else flops * figures["images_per_s"] / images_per_step / peak)
        if variant.compile:
            figures["compile_s"] = figures["first_step_s"] - figures["seconds_per_step"]
        if name == "all on":
            figures["syncs_per_step"] = syncs_per_step(update, batches, sizes.steps)
            figures["busy"] = busy_fraction(update, batches, sizes.profile_steps)
        variants[name] = figures
        del update
    changes = {change: {"on": variants[on]["images_per_s"], "off": variants[off]["images_per_s"],
                        "ratio": variants[on]["images_per_s"] / variants[off]["images_per_s"]}
               for change, (on, off) in CHANGES.items()}
    return {"variants": variants, "changes": changes}


def loop_report(cfg: Config, update: SfcTrainer, sizes: Sizes) -> dict:
    """The real loop with its loader (``loop.fit``) on JPEG files decoded per item,
    ``update`` its step: the kit's uint8 items against today's float32 ones."""
    figures, device = {}, update.device
    with tempfile.TemporaryDirectory() as folder:
        source = feed.JpegImages(Path(folder), sizes.loop_images, sizes.image_size,
                                 measure.num_foreground_classes(cfg))
        kit = TrainDataset(source, "bench", cfg.data.crop_size, tuple(cfg.data.resize_long), seed=cfg.runtime.seed)
        run_steps(update, uint8_batches(cfg, 1, device), sizes.warmup)       # compiled before the loops
        for name, data in (("uint8", kit), ("float32", Float32Items(kit))):
            out = Path(folder, name)
            out.mkdir()
            figures[name] = time_loop(update, data, sizes.loop_steps, out)
    figures["uint8_over_float32"] = figures["uint8"]["images_per_s"] / figures["float32"]["images_per_s"]
    return {**figures, "image_size": list(sizes.image_size)}


def training_report(result: dict, cfg: Config, device: torch.device, sizes: Sizes, flops: int,
                    peak: float | None) -> None:
    """``result["step"]`` and ``result["loop"]``, one compiled "all on" step serving both (its
    network freed at the end)."""
    update = make_update(variant_config(cfg, STEP_VARIANTS["all on"], sizes.compile_backend), device, MAX_STEPS)
    measured(result, "step", lambda: step_report(cfg, device, sizes, flops, peak, update))
    measured(result, "loop", lambda: loop_report(cfg, update, sizes))


def gpu_report(cfg: Config, device: torch.device, sizes: Sizes) -> dict:
    """The report's JSON object (module docstring)."""
    cfg = measure.bench_config(cfg).override(dict(sizes.overrides))
    num_classes = measure.num_foreground_classes(cfg)
    peak, name = peak_flops(device)
    flops = step_flops(cfg, num_classes)
    result = {"preset": cfg.preset, "machine": measure.machine_info(device), "dry_run": sizes is DRY_RUN,
              "flops_per_step": flops, "peak_bf16_flops": peak if peak is not None else
              (NOT_ON_CPU if device.type != "cuda" else f"unknown for {name}"),
              "batch_size": cfg.train.batch_size, "bank_draws": cfg.train.bank_draws,
              "crop_size": cfg.data.crop_size, "backbone": cfg.model.backbone}
    started = time.perf_counter()
    training_report(result, cfg, device, sizes, flops, peak)
    measured(result, "cams", lambda: measure.bench_cams(cfg, device, sizes.cam_images, sizes.warmup))
    model = lambda: build_model(cfg.model, num_classes).to(device).eval()  # noqa: E731
    measured(result, "camstage", lambda: feed.bench_camstage(cfg, model(), measure.inference_size(cfg), device,
                                                             sizes.cam_images, sizes.cam_repeats))
    measured(result, "segment", lambda: measure.bench_segment(cfg, device, sizes.segment_steps, sizes.warmup))
    result["seconds"] = time.perf_counter() - started
    return result


def _figure(value, digits: int = 1) -> str:
    if isinstance(value, str):
        return value
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(result: dict) -> str:
    """The report as markdown tables."""
    machine = result["machine"]
    lines = [f"GPU report: {machine['device_name']} ({machine['device']}), torch {machine['torch']}, preset "
             f"{result['preset']} ({result['backbone']}, {result['crop_size']} px, {result['batch_size']} + "
             f"{result['bank_draws']} images a step){', DRY RUN' if result['dry_run'] else ''}; "
             f"{result['flops_per_step'] / 1e12:.3f} TFLOP per step; {result['seconds']:.0f} s", "",
             "| step alone | images/s | s/step | first step s | compile s | MFU | syncs/step | busy |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    step, peak = result["step"], result["peak_bf16_flops"]
    for name, f in step.get("variants", {}).items():
        mfu = peak if f["mfu"] is None else f"{100 * f['mfu']:.1f}%"
        busy = f.get("busy", "")
        lines.append(f"| {name} | {_figure(f['images_per_s'])} | {_figure(f['seconds_per_step'], 4)} | "
                     f"{_figure(f['first_step_s'], 2)} | {_figure(f['compile_s']) if 'compile_s' in f else ''} | "
                     f"{mfu} | {_figure(f.get('syncs_per_step', ''))} | "
                     f"{busy if isinstance(busy, str) else f'{100 * busy:.0f}%'} |")
    lines += ["", "| change | images/s on | images/s off | on / off |", "| --- | --- | --- | --- |"]
    for change, f in step.get("changes", {}).items():
        lines.append(f"| {change} | {_figure(f['on'])} | {_figure(f['off'])} | {f['ratio']:.2f} |")
    loop = result["loop"]
    if "uint8" in loop:
        lines.append(f"| uint8 loader (real loop, {loop['uint8']['num_workers']} workers) | "
                     f"{_figure(loop['uint8']['images_per_s'])} | {_figure(loop['float32']['images_per_s'])} | "
                     f"{loop['uint8_over_float32']:.2f} |")
    lines += ["", "| stage | images/s |", "| --- | --- |"]
    for key, label in (("cams", "CAM inference (network)"), ("segment", "step 3 training")):
        lines.append(f"| {label} | {_figure(result[key].get('images_per_s'))} |")
    if "kit" in result["camstage"]:
        lines.append(f"| CAM stage loop (kit / today) | {_figure(result['camstage']['kit']['images_per_s'])} / "
                     f"{_figure(result['camstage']['today']['images_per_s'])} |")
    errors = [f"{key}: {value['error']}" for key, value in result.items() if isinstance(value, dict)
              and "error" in value]
    return "\n".join(lines + ([""] + [f"error in {e}" for e in errors] if errors else [])) + "\n"
