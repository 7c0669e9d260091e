"""The SFC training stage (docs/method.md 3): ``train(cfg, out)``, the ``train`` verb and
``sfc_step``, one step on one screen; ``loop.fit`` runs it (exact resume, SIGTERM, DDP).

    python -m sfc_core train --preset synthetic --out runs/sfc [--baseline] [--resume]
    torchrun --nproc_per_node 4 -m sfc_core train --preset voc --data-root VOC2012 --out runs/voc

Under DDP ``train.batch_size`` and ``train.bank_draws`` are global; each rank keeps its own bank.
"""
from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler, Subset
from tqdm import tqdm

from sfc_core import engine, loop
from sfc_core.cli import add_config_arguments, config_from_args
from sfc_core.config import ABLATIONS, Config, TrainConfig, flat_dict, parse_overrides
from sfc_core.data import (
    MultiScaleDataset,
    SegmentationDataset,
    TrainDataset,
    item_loader,
    open_dataset,
    same_size_batches,
)
from sfc_core.data.stats import class_weights
from sfc_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD, device_views, normalize_crops
from sfc_core.errors import SfcError
from sfc_core.io import atomic_write_json
from sfc_core.masks import IGNORE, cam_overlay
from sfc_core.method.bank import ImageBank, append_bank_draws
from sfc_core.method.cam import max_normalise
from sfc_core.method.losses import SfcObjective
from sfc_core.method.network import SfcNet
from sfc_core.metrics import confusion_counts, confusion_from_counts, mean_iou, percent
from sfc_core.model.build import build_model, build_objective, checkpoint_identity, multiscale_cams_batch
from sfc_core.model.pretrained import resolve_backbone_weights
from sfc_core.run_dir import RunDir
from sfc_core.run_lock import claims_run

# what a resumed training must not change (later stages' sections may), but where and how fast
TRAINING_SECTIONS = ("runtime.", "data.", "model.", "loss.", "train.")
RESUMABLE_CHANGES = {"data.root", "runtime.num_workers", "runtime.device", "runtime.compile",
                     "runtime.checkpoint_minutes", "train.log_every"}


def build_optimizer(model: SfcNet, t: TrainConfig, max_steps: int) -> tuple[torch.optim.Optimizer,
                                                                            torch.optim.lr_scheduler.LRScheduler]:
    """The optimiser (new layers at ``t.lr * t.new_layer_lr_mult``) and its schedule."""
    groups = model.parameter_groups()
    optimizer = engine.make_optimizer(t.optimizer, [{"params": groups["backbone"], "lr": t.lr},
                                                    {"params": groups["new"], "lr": t.lr * t.new_layer_lr_mult}],
                                      t.momentum, t.weight_decay)
    return optimizer, engine.make_schedule(optimizer, t.schedule, max_steps, t.poly_power)


@claims_run(lambda cfg, out, *args, **kwargs: out)
def train(cfg: Config, out: str | Path, resume: bool = False, stop_after: int | None = None) -> dict:
    """Train SFC (or the baseline / an ablation, by config) into the run directory ``out``;
    ``resume`` from its last.pt; ``stop_after`` steps, as if interrupted. Returns a summary."""
    cfg = resolve_backbone_weights(cfg)       # "pretrain" -> the pretrained file (never trained here)
    dist = engine.setup_distributed()
    try:
        return _train(cfg, RunDir(out), resume, stop_after, dist)
    finally:
        engine.cleanup_distributed(dist)


def _train(cfg: Config, run: RunDir, resume: bool, stop_after: int | None, dist: engine.DistInfo) -> dict:
    t, device = cfg.train, engine.select_device(cfg.runtime.device, dist, preset=cfg.preset)
    workers = engine.loader_workers(cfg.runtime.num_workers, device)
    engine.announce_runtime("train", device, dist, workers, cfg.runtime.amp,
                            engine.compile_backend(cfg.runtime.compile, device))
    if dist.is_main:
        _claim_run_dir(run, cfg, resume)
    engine.seed_everything(cfg.runtime.seed)
    dataset = open_dataset(cfg.data)
    if dist.is_main:
        cfg.save(run.config_json)
        atomic_write_json(run.class_names_json, list(dataset.class_names))
    engine.barrier(dist)
    train_set = TrainDataset(dataset, cfg.data.train_list, cfg.data.crop_size, cfg.data.resize_long,
                             seed=cfg.runtime.seed)
    sampler = DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                 seed=cfg.runtime.seed, drop_last=True)
    local_batch = engine.per_process(t.batch_size, "train.batch_size", dist)
    steps_per_epoch = len(sampler) // local_batch
    if steps_per_epoch == 0:
        raise SfcError(f"train list {cfg.data.train_list!r} has {len(train_set)} images, fewer than one "
                       f"batch of {t.batch_size}", path=dataset.list_path(cfg.data.train_list),
                       fix="lower train.batch_size or use a longer list")
    plan = loop.Plan(t.max_steps or t.epochs * steps_per_epoch, t.log_every, t.checkpoint_every,
                     cfg.runtime.checkpoint_minutes)
    weights = torch.as_tensor(class_weights(dataset, cfg), dtype=torch.float32)
    sfc = build_trainer(cfg, list(dataset.class_names), weights, device, dist, plan.max_steps)
    if resume:
        sfc.state.resume(run.last_checkpoint, dist)
    start_step, started = sfc.state.step, time.perf_counter()
    batches = loop.batches(train_set, partial(_epoch_order, sampler), local_batch, steps_per_epoch,
                           plan.steps(start_step, stop_after), workers, device)
    rate = _fit(sfc, batches, plan, dataset, run)
    state = sfc.state
    if state.step == plan.max_steps > start_step and t.val_every == 0:   # a finished run reused: nothing
        state.meta["best"] = {"score": None, "step": state.step}         # no validation: best = final
        state.save(run.best_checkpoint, dist, full=False)
    return {"steps": state.step, "max_steps": plan.max_steps, "finished": state.step == plan.max_steps,
            "seconds": time.perf_counter() - started, "images_per_second": rate,
            "best": state.meta["best"], "last_checkpoint": str(run.last_checkpoint),
            "best_checkpoint": str(run.best_checkpoint) if run.best_checkpoint.is_file() else None}


def _fit(sfc: SfcTrainer, batches: Iterable, plan: loop.Plan, dataset: SegmentationDataset, run: RunDir) -> float:
    """``loop.fit`` around ``sfc_step``, logging and validating inline; returns images/s."""
    state, t, dist, rate = sfc.state, sfc.cfg.train, sfc.dist, 0.0
    with engine.MetricsLogger(run.metrics_jsonl, run.tensorboard, enabled=dist.is_main,
                              resume_step=state.step) as logger:
        for output in loop.fit(state, batches, partial(sfc_step, sfc), plan, run.last_checkpoint, dist,
                               desc=f"train {run.root.name}"):
            step, seconds = state.step, output["seconds_per_step"]
            rate = (t.batch_size + t.bank_draws) / seconds if seconds else 0.0  # global: all processes
            if plan.logs(step):
                losses = engine.mean_over_ranks(output["losses"], dist)        # the global batch's
                groups = state.optimizer.param_groups
                logger.log(step, {**{f"loss/{name}": value for name, value in losses.items()},
                                  "lr/backbone": groups[0]["lr"], "lr/new": groups[1]["lr"],
                                  **({} if output["grad_norm"] is None else {"grad_norm": output["grad_norm"].item()}),
                                  "images_per_second": rate})
            if step % (10 * t.log_every) == 0:
                _log_cam_image(logger, step, output["images"][0], output["outputs"])
            if t.val_every == 0 or (step % t.val_every != 0 and step != plan.max_steps):
                continue
            with loop.workers_stopped(run.last_checkpoint):
                scores = validate(state.model, dataset, sfc.cfg, sfc.device, dist)
            logger.log(step, {f"val/{name}": value for name, value in scores.items()})
            score = scores["miou_cam"] + scores["miou_prototype"]
            if score > state.meta["best"]["score"]:
                state.meta["best"] = {"score": score, "step": step, **scores}
                state.save(run.best_checkpoint, dist, full=False)
    return rate


@dataclass
class SfcTrainer:
    """What an SFC step works with: the train state, the objective as the step calls it
    (``step_objective``) and this process's share of ``train.bank_draws``."""

    state: engine.TrainState
    objective: nn.Module
    cfg: Config
    draws: int
    device: torch.device
    dist: engine.DistInfo


def sfc_step(sfc: SfcTrainer, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """One SFC update on a loader batch: uint8 crops ``image`` (B, 3, S, S), ``box`` (B, 4) of the
    real image in each crop, ``label`` (B, C). Returns the loss terms (0-d, ``total`` too), the
    gradient norm before clipping (None with ``train.grad_clip`` 0), the objective's inputs
    (``images``, ``boxes``, ``labels``: the batch and its bank draws) and the scale-1 outputs."""
    state, t, runtime, device = sfc.state, sfc.cfg.train, sfc.cfg.runtime, sfc.device
    # the crops normalised on the device (padding 0); the batch written into the image bank and
    # this process's share of train.bank_draws earlier images drawn from it, appended
    images = normalize_crops(batch["image"], batch["box"], device)
    images, boxes, labels = append_bank_draws(state.extras["bank"], images, batch["box"], batch["label"],
                                              sfc.draws, state.extras["generator"])
    if device.type == "cuda" and runtime.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with engine.out_of_memory_hint("train.batch_size", t.batch_size):
        # the batch at scale 1 and HALF_SCALE through the network; classification (both scales) +
        # loss.prototype_weight x prototype consistency + loss.scale_weight x cross-scale consistency
        with engine.autocast(device, runtime.amp):
            losses, outputs = sfc.objective(images, engine.to_device(boxes, device),
                                            engine.to_device(labels, device))
        state.scaler.scale(losses["total"]).backward()
        state.scaler.unscale_(state.optimizer)
        # the global gradient norm clipped at train.grad_clip, then the optimiser's step
        grad_norm = None
        if t.grad_clip > 0:
            grad_norm = nn.utils.clip_grad_norm_([p for group in state.optimizer.param_groups
                                                  for p in group["params"] if p.grad is not None], t.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.optimizer.zero_grad(set_to_none=True)
    return {"loss": losses["total"], "losses": losses, "grad_norm": grad_norm, "images": images, "boxes": boxes,
            "labels": labels, "outputs": outputs}


def build_trainer(cfg: Config, class_names: list[str], weights: torch.Tensor, device: torch.device,
                  dist: engine.DistInfo, max_steps: int) -> SfcTrainer:
    """SFC's trainer at step 0; weights (C,): the per-class loss weights."""
    t = cfg.train
    model = build_model(cfg.model, len(class_names)).to(device)
    if device.type == "cuda" and cfg.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    objective = build_objective(model, weights, cfg).to(device)
    optimizer, schedule = build_optimizer(model, t, max_steps)
    bank = ImageBank(len(class_names), (3, cfg.data.crop_size, cfg.data.crop_size), device) \
        if t.bank_draws > 0 else None
    generator = torch.Generator().manual_seed(cfg.runtime.seed + dist.rank)
    state = engine.TrainState(model, optimizer, schedule, engine.make_grad_scaler(device, cfg.runtime.amp),
                              checkpoint_identity(cfg.model, class_names), cfg.to_dict(), builds=("model.",),
                              extras={"bank": bank, "generator": generator}, meta={"best": {"score": -math.inf}})
    return SfcTrainer(state, step_objective(objective, cfg, dist, device), cfg,
                      engine.per_process(t.bank_draws, "train.bank_draws", dist), device, dist)


def step_objective(objective: SfcObjective, cfg: Config, dist: engine.DistInfo,
                   device: torch.device) -> nn.Module:
    """``objective`` under DDP (static graph unless a part is switched off; buffers broadcast only
    when the BatchNorm trains), compiled as ``runtime.compile`` says."""
    unused = not objective.uses_prototype_cam or not cfg.model.pcm   # side layers / PCM projection idle
    wrapped = engine.wrap_ddp(objective, dist, device, find_unused_parameters=unused, static_graph=not unused,
                              gradient_as_bucket_view=True,
                              broadcast_buffers=not objective.model.backbone.frozen_bn)
    return engine.compiled(wrapped, cfg.runtime.compile, device)


def _claim_run_dir(run: RunDir, cfg: Config, resume: bool) -> None:
    """Refuse a run with a checkpoint without --resume, or resumed with another configuration."""
    if not run.last_checkpoint.is_file():
        return
    if not resume:
        raise SfcError(f"{run.root} already holds a training run", path=run.root,
                       fix="add --resume to continue it, or choose a fresh --out")
    saved = flat_dict(run.load_config().to_dict())
    wanted = flat_dict(cfg.to_dict())
    differ = sorted(key for key in saved.keys() | wanted.keys()
                    if saved.get(key) != wanted.get(key) and key.startswith(TRAINING_SECTIONS)
                    and key not in RESUMABLE_CHANGES)
    if differ:
        details = ", ".join(f"{key}: {saved.get(key)!r} -> {wanted.get(key)!r}" for key in differ[:5])
        raise SfcError(f"--resume with a configuration that differs from the run's ({details})",
                       path=run.config_json,
                       fix="resume with the run's preset, flags and --set values, or choose a fresh --out")


def _epoch_order(sampler: DistributedSampler, epoch: int) -> list[tuple[int, int]]:
    """This process's (epoch, index) sample keys of ``epoch``."""
    sampler.set_epoch(epoch)
    return [(epoch, index) for index in sampler]


@torch.no_grad()
def validate(model: SfcNet, dataset: SegmentationDataset, cfg: Config, device: torch.device,
             dist: engine.DistInfo | None = None) -> dict[str, float]:
    """Single-scale, no-flip arg-max mIoU of the refined and the prototype CAM on
    ``cfg.data.eval_list`` (the reference's training-time validation), counted on the device."""
    dist = dist or engine.DistInfo()
    list_name, k = cfg.data.eval_list, dataset.num_classes + 1
    items = MultiScaleDataset(dataset, list_name, scales=(1.0,), masks=True)
    shard = Subset(items, range(dist.rank, len(items), dist.world_size))
    loader = item_loader(shard, engine.loader_workers(cfg.runtime.num_workers, device), device.type == "cuda",
                         generator=torch.Generator().manual_seed(0))     # leaves the training's RNG alone
    counts = torch.zeros(2, (IGNORE + 1) * k, dtype=torch.int64, device=device)   # cam, prototype_cam
    was_training = model.training
    model.eval()
    items = tqdm(loader, desc=f"validate ({list_name})", leave=False, disable=not dist.is_main)
    for batch in same_size_batches(items, cfg.cams.batch_size):
        images = device_views(torch.stack([item["images"][0] for item in batch]), device, flip=False)
        labels = engine.to_device(torch.stack([item["label"] for item in batch]), device)
        gt = engine.to_device(torch.stack([item["mask"] for item in batch]), device)
        with engine.autocast(device, cfg.cams.amp):      # float32 unless asked, as the cams stage
            cams = multiscale_cams_batch(model, [images], labels, tuple(gt.shape[-2:]), mask_by_label=True)
        for row, cam in zip(counts, cams):
            row += confusion_counts(cam.argmax(dim=1), gt, k)
    model.train(was_training)
    totals = engine.all_reduce_sum(counts, dist).cpu()
    return {"miou_cam": mean_iou(confusion_from_counts(totals[0], k)),
            "miou_prototype": mean_iou(confusion_from_counts(totals[1], k))}


def _log_cam_image(logger: engine.MetricsLogger, step: int, image: torch.Tensor,
                   outputs: dict[str, torch.Tensor]) -> None:
    """TensorBoard: the batch's first image beside its refined and prototype CAMs."""
    if not logger.enabled:
        return
    rgb = image.detach().float().cpu().numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    rgb = np.clip(rgb * 255, 0, 255).astype(np.uint8)
    panels = [rgb]
    for key in ("cam", "prototype_cam"):
        if key in outputs:
            cam = max_normalise(outputs[key][:1, 1:].detach().float()).amax(dim=1, keepdim=True)
            cam = F.interpolate(cam, size=rgb.shape[:2], mode="bilinear", align_corners=False)
            panels.append(cam_overlay(rgb, cam[0, 0].cpu().numpy()))
    logger.image("cams/image_refined_prototype", step, np.concatenate(panels, axis=1))


def train_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="run directory to create (or resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last.pt")
    for name, overrides in ABLATIONS.items():
        p.add_argument(f"--{name}", action="store_true",
                       help="set " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
    p.add_argument("--backbone-weights", default=None, metavar="PATH",
                   help="local backbone state dict (sets model.backbone_weights)")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                   help="stop after this many steps, as if interrupted (resume with --resume)")


def train_command(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    for name, overrides in ABLATIONS.items():
        if getattr(args, name.replace("-", "_")):
            cfg.override(overrides)
    if args.backbone_weights:
        cfg.override({"model.backbone_weights": args.backbone_weights})
    cfg.override(parse_overrides(args.overrides))       # an explicit --set wins over the flags
    summary = train(cfg, args.out, resume=args.resume, stop_after=args.stop_after)
    best = summary["best"]
    scores = (f"; best at step {best['step']}: mIoU refined CAM {percent(best['miou_cam'])}, "
              f"prototype CAM {percent(best['miou_prototype'])}") if best.get("miou_cam") is not None else ""
    print(f"trained {summary['steps']}/{summary['max_steps']} steps in {summary['seconds']:.0f} s "
          f"({summary['images_per_second']:.1f} images/s){scores}; checkpoints in {Path(args.out) / 'checkpoints'}")
    return 0
