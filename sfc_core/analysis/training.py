"""SFC's training for notebook 02: one step taken apart and a run with a live loss plot.

``take_step`` takes the train stage's own step (``train.build_trainer``, ``train.sfc_step``) and
keeps what the loop does not show; ``class_terms`` splits the two consistency losses by class
(both are linear in the class weights): tests/test_training_view.py checks both.

    step = take_step(cfg, dataset, torch.device("cpu"))    # {"batch_images", "losses", ...}
    with live_losses(RunDir(run_dir).metrics_jsonl):        # the curves redrawn while it trains
        pipeline.trained(cfg, run_dir)                      # what `python -m sfc_core train` runs
"""
from __future__ import annotations

import copy
import io
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch.utils.data import default_collate

from sfc_core import engine
from sfc_core.analysis import plots
from sfc_core.config import Config
from sfc_core.data import SegmentationDataset, TrainDataset
from sfc_core.data.stats import class_weights
from sfc_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_crops
from sfc_core.method.losses import HALF_SCALE, SfcObjective
from sfc_core.model.pretrained import resolve_backbone_weights
from sfc_core.train import build_trainer, sfc_step

WARM_BATCHES = 3      # loader batches written into the image bank before the step shown


def take_step(cfg: Config, dataset: SegmentationDataset, device: torch.device,
              warm_batches: int = WARM_BATCHES) -> dict[str, Any]:
    """One SFC training step from the start of training (eager), its parts kept: the bank filled
    by ``warm_batches`` batches, then the train stage's step on one batch. Returns ``batch_images``
    (draws last), ``labels``, ``draws``, ``losses``, ``terms``, ``grad_norm``, ``lr``, ``loss_after``,
    ``half_images`` and ``grids`` (CAM grid per scale)."""
    cfg = resolve_backbone_weights(copy.deepcopy(cfg)).override({"runtime.compile": "off"})
    engine.seed_everything(cfg.runtime.seed)
    t = cfg.train
    train_set = TrainDataset(dataset, cfg.data.train_list, cfg.data.crop_size, cfg.data.resize_long,
                             seed=cfg.runtime.seed)
    max_steps = t.max_steps or t.epochs * (len(train_set) // t.batch_size)
    weights = torch.as_tensor(class_weights(dataset, cfg), dtype=torch.float32)
    sfc = build_trainer(cfg, list(dataset.class_names), weights, device, engine.DistInfo(), max_steps)
    bank, generator = sfc.state.extras["bank"], sfc.state.extras["generator"]
    batches = [default_collate([train_set[(0, i % len(train_set))]
                                for i in range(b * t.batch_size, (b + 1) * t.batch_size)])
               for b in range(warm_batches + 1)]
    for batch in batches[:-1] if bank is not None else []:
        bank.update(normalize_crops(batch["image"], batch["box"], device), batch["box"], batch["label"], generator)
    before = copy.deepcopy(sfc.objective)          # the network before the step: the per-class terms
    out = sfc_step(sfc, batches[-1])
    sfc.state.schedule.step()
    images, labels = out["images"], out["labels"]
    on_device = engine.to_device(out["boxes"], device), engine.to_device(labels, device)
    with torch.no_grad(), engine.autocast(device, cfg.runtime.amp):
        terms = class_terms(before, images, *on_device, list(dataset.class_names))
        after, _ = sfc.objective(images, *on_device)
    half = F.interpolate(images, scale_factor=HALF_SCALE, mode="bilinear", align_corners=True)
    return {"batch_images": crops_to_rgb(images), "labels": labels, "draws": len(labels) - t.batch_size,
            "losses": {name: float(value.detach()) for name, value in out["losses"].items()}, "terms": terms,
            "grad_norm": None if out["grad_norm"] is None else float(out["grad_norm"]),
            "lr": [group["lr"] for group in sfc.state.optimizer.param_groups],
            "loss_after": float(after["total"]), "half_images": crops_to_rgb(half),
            "grids": [sfc.state.model.feature_size(*x.shape[-2:]) for x in (images, half)]}


@torch.no_grad()
def class_terms(objective: SfcObjective, images: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                class_names: Sequence[str]) -> list[dict[str, Any]]:
    """The prototype and cross-scale losses on a batch split by class (``split_by_class``)."""
    weights = objective.class_weights.clone()

    def losses_at(w: torch.Tensor) -> tuple[float, float]:
        objective.class_weights.copy_(w)
        losses, _ = objective(images, boxes, labels)
        return (float(losses.get("prototype", torch.tensor(float("nan")))),
                float(losses.get("scale", torch.tensor(float("nan")))))

    try:
        present = np.flatnonzero(labels.cpu().numpy().max(axis=0) > 0.5)
        return split_by_class(losses_at, weights, present, class_names)
    finally:
        objective.class_weights.copy_(weights)


def split_by_class(losses_at: Callable[[torch.Tensor], tuple[float, float]], weights: torch.Tensor,
                   classes: Sequence[int], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of the two consistency losses split by class from ``losses_at(class weights (C,))``
    (linear in them): the background, each of ``classes``, and ``total`` at ``weights``."""
    background, _ = losses_at(torch.zeros_like(weights))
    rows = [{"class": "background", "w_k": 1.0, "prototype term": background,
             "w_k x prototype term": background, "scale term": 0.0, "w_k x scale term": 0.0}]
    for k in classes:
        one_hot = torch.zeros_like(weights)
        one_hot[k] = 1
        prototype, scale = losses_at(one_hot)
        w_k, p_k = float(weights[k]), prototype - background
        rows.append({"class": class_names[k], "w_k": w_k, "prototype term": p_k,
                     "w_k x prototype term": w_k * p_k, "scale term": scale, "w_k x scale term": w_k * scale})
    prototype, scale = losses_at(weights)
    rows.append({"class": "total (the loss)", "w_k": float("nan"), "prototype term": float("nan"),
                 "w_k x prototype term": prototype, "scale term": float("nan"), "w_k x scale term": scale})
    return rows


def crops_to_rgb(images: torch.Tensor) -> np.ndarray:
    """Normalised crops (N, 3, S, S) back to (N, S, S, 3) uint8 for display (padding: the mean colour)."""
    rgb = images.detach().float().cpu().numpy().transpose(0, 2, 3, 1) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def read_records(metrics: str | Path) -> list[dict[str, float]]:
    """The records of a metrics.jsonl (none while it does not exist; a line being written is skipped)."""
    records = []
    for line in Path(metrics).read_text().splitlines() if Path(metrics).is_file() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def loss_png(records: list[dict[str, float]], title: str) -> bytes:
    """The loss curves of ``records`` as a PNG, drawn without pyplot (safe off the main thread)."""
    fig = Figure(figsize=(7.0, 3.6), dpi=80)
    keys = sorted({key for r in records for key in r if key.startswith("loss")})
    plots.curves(records, keys, title=title, ax=fig.subplots())
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


@contextmanager
def live_losses(metrics: str | Path, every: float = 2.0, handle: Any = None,
                title: str = "training losses, as logged") -> Iterator[Any]:
    """While the block runs, ``metrics``' loss curves redrawn every ``every`` seconds into ``handle``."""
    if handle is None:
        from IPython.display import Markdown, display

        handle = display(Markdown("*(the loss plot appears at the first logged step)*"), display_id=True)
    stop, shown = threading.Event(), [0]

    def redraw() -> None:
        records = read_records(metrics)
        if len(records) != shown[0]:
            from IPython.display import Image

            handle.update(Image(loss_png(records, f"{title}: step {records[-1].get('step', '?')}")))
            shown[0] = len(records)

    def watch() -> None:
        while not stop.wait(every):
            redraw()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield handle
    finally:
        stop.set()
        watcher.join()
        redraw()
