"""Step 3: a segmentation network trained on one kind of mask, scored on the held-out list.

    python -m sfc_core segment --run RUN_DIR --masks irn|crf|cam|gt [--crf] [--save-predictions]
    torchrun --nproc_per_node 4 -m sfc_core -- segment --run RUN_DIR --masks irn   (-- keeps --run ours)

Masks: ``irn`` / ``crf`` (refine's pseudo masks), ``cam`` (the fused CAM's arg-max at eval-cams'
choice), ``gt`` (the fully supervised upper bound). Output: ``RUN_DIR/segment/<masks>/``, laid out
like a run directory; a killed run resumes to the same weights (docs/architecture.md, docs/method.md 5).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from sfc_core import engine, loop
from sfc_core.cam_files import load_cam, predict_mask
from sfc_core.cli import add_override_arguments, overrides_from_args
from sfc_core.config import Config, RefineConfig, SegmentConfig
from sfc_core.data import MultiScaleDataset, SegmentationDataset, item_loader, open_dataset, same_size_batches
from sfc_core.data.transforms import augment, device_views, normalize_crops
from sfc_core.errors import SfcError
from sfc_core.eval_files import FinalEval, read_cam_eval
from sfc_core.io import atomic_write_json
from sfc_core.masks import IGNORE, read_pseudo_mask, save_mask
from sfc_core.metrics import confusion_counts, confusion_from_counts, percent, scores
from sfc_core.model.build import for_inference, inference_layout
from sfc_core.model.deeplab_v2 import NAME as DEEPLAB_V2
from sfc_core.model.deeplab_v2 import DeepLabV2
from sfc_core.provenance import claim_folder, digest, read_record, refuse_other_inputs
from sfc_core.run_dir import RunDir, check_files
from sfc_core.run_lock import claims_run

MASK_SOURCES = ("irn", "crf", "cam", "gt")


@dataclass(frozen=True)
class MaskSource:
    name: str
    read: Callable[[str], np.ndarray]   # image id -> uint8 (H, W): 0 bg, 1..C, 255 ignored
    path: Callable[[str], Path]         # image id -> the file its mask is made from
    fix: str                            # how to make the masks that are missing
    settings: dict[str, Any]            # what chose these masks (recorded in final_eval.json)


def _pseudo_path(folder: Path, image_id: str) -> Path:
    return folder / f"{image_id}.png"


def _read_pseudo(folder: Path, image_id: str) -> np.ndarray:
    return read_pseudo_mask(_pseudo_path(folder, image_id))


def _read_cam_mask(run: RunDir, num_classes: int, setting: dict[str, Any], image_id: str) -> np.ndarray:
    return predict_mask(load_cam(run, image_id, num_classes), "fused", setting["lambda"],
                        setting["background"], setting["threshold"])


def cam_mask_settings(run: RunDir, cfg: Config) -> dict[str, Any]:
    """Lambda and background rule of the fused CAM: what eval-cams chose, else the reference's."""
    if run.cam_eval_json.is_file():
        chosen = read_cam_eval(run.cam_eval_json).setting("fused")
        return {"lambda": chosen["lam"], "background": chosen["background"], "threshold": chosen["threshold"],
                "from": "cam_eval.json"}
    return {"lambda": cfg.cams.fusion_lambda, "background": "reference", "threshold": None,
            "from": "reference rule (no cam_eval.json)"}


def mask_source(run: RunDir, dataset: SegmentationDataset, masks: str, cfg: Config) -> MaskSource:
    if masks == "gt":
        return MaskSource("gt", dataset.read_mask, dataset.mask_path,
                          "the dataset has no masks for these images: train on --masks irn|crf|cam", {})
    if masks in ("irn", "crf"):
        folder = run.pseudo_masks(masks)
        return MaskSource(masks, partial(_read_pseudo, folder), partial(_pseudo_path, folder),
                          f"run: python -m sfc_core refine --run {run.root} --method {masks}", {})
    if masks == "cam":
        s = cam_mask_settings(run, cfg)
        return MaskSource("cam", partial(_read_cam_mask, run, dataset.num_classes, s), run.cam_file,
                          f"run: python -m sfc_core cams --run {run.root}", s)
    raise SfcError(f"unknown mask source {masks!r}", fix=f"use --masks {'|'.join(MASK_SOURCES)}")


def check_masks(source: MaskSource, dataset: SegmentationDataset, list_name: str) -> None:
    """Read every training mask once: all present, each the size of its image, classes 0..C."""
    ids = dataset.ids(list_name)
    check_files({i: source.path(i) for i in ids}, f"{source.name} mask", list_name, source.fix)
    for image_id in tqdm(ids, desc=f"check {source.name} masks", unit="img", leave=False):
        mask = source.read(image_id)
        with Image.open(dataset.image_path(image_id)) as image:
            width, height = image.size
        if mask.shape != (height, width):
            raise SfcError(f"the {source.name} mask of {image_id} is {mask.shape[1]}x{mask.shape[0]} "
                           f"but its image is {width}x{height}", path=source.path(image_id),
                           fix=source.fix)
        wrong = (mask > dataset.num_classes) & (mask != IGNORE)
        if wrong.any():
            raise SfcError(f"the {source.name} mask of {image_id} has class index {int(mask[wrong].max())}, "
                           f"but the dataset has classes 0..{dataset.num_classes} (and 255 = ignore)",
                           path=source.path(image_id), fix=source.fix)


class MaskedCrops(Dataset):
    """Images with their masks under the joint `augment` (mask padded with 255), a pure function
    of (seed, epoch, index). Item: image uint8 (3, S, S), mask uint8 (S, S), box int64 (4,)."""

    def __init__(self, dataset: SegmentationDataset, ids: list[str], read_mask: Callable[[str], np.ndarray],
                 seg: SegmentConfig, seed: int):
        self.dataset, self.ids, self.read_mask, self.seg, self.seed = dataset, ids, read_mask, seg, seed

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        epoch, index = key
        image_id = self.ids[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        image, mask, box = augment(self.dataset.read_image(image_id), self.read_mask(image_id), rng,
                                   self.seg.crop_size, crop_scale(rng, self.seg),
                                   self.seg.flip, IGNORE, normalise=False)
        return (torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(mask.astype(np.uint8)),
                torch.from_numpy(box))


def crop_scale(rng: np.random.Generator, seg: SegmentConfig) -> float:
    """A crop's rescale factor: U(segment.scale_range), or uniform on its segment.scale_step grid."""
    if seg.scale_step == 0:
        return float(rng.uniform(*seg.scale_range))
    low, high = seg.scale_range
    grid = low + seg.scale_step * np.arange(int((high - low) / seg.scale_step + 1e-6) + 1)
    return float(rng.choice(grid))


def build_network(name: str, num_classes: int, backbone_weights: str) -> nn.Module:
    """A torchvision segmentation network (or DeepLab-v2) without auxiliary head; backbone_weights:
    "imagenet", "none" or a torchvision ImageNet checkpoint."""
    names = [*torchvision.models.list_models(module=torchvision.models.segmentation), DEEPLAB_V2]
    if name not in names:
        raise SfcError(f"unknown segmentation network {name!r}",
                       fix=f"set segment.network to one of torchvision's: {', '.join(names)}")
    imagenet = backbone_weights == "imagenet"
    try:
        if name == DEEPLAB_V2:
            model = DeepLabV2(num_classes, "imagenet" if imagenet else "none")
        else:   # the builder's default backbone weights: ImageNet
            model = torchvision.models.get_model_builder(name)(
                weights=None, num_classes=num_classes, aux_loss=False, **({} if imagenet else {"weights_backbone": None}))
    except (urllib.error.URLError, OSError) as e:
        raise SfcError(f"cannot download the ImageNet weights of {name}'s backbone ({e})",
                       fix="copy torchvision's ImageNet checkpoint of the backbone to this machine "
                           "and pass --set segment.backbone_weights=PATH") from None
    if backbone_weights not in ("imagenet", "none"):
        load_backbone(model, Path(backbone_weights))
    return model


def load_backbone(model: nn.Module, path: Path) -> None:
    """An ImageNet classifier's state dict into ``model.backbone`` (head ignored, ``features.`` stripped)."""
    fix = "pass the torchvision ImageNet checkpoint of this network's backbone: --set segment.backbone_weights=PATH"
    if not path.is_file():
        raise SfcError("backbone weights file not found", path=path, fix=fix)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file: say which one
        raise SfcError(f"backbone weights cannot be read ({type(e).__name__}: {str(e)[:200]})",
                       path=path, fix=fix) from None
    state = {key.removeprefix("features."): value for key, value in state.items()}
    own = model.backbone.state_dict()
    missing = [key for key in own if key not in state]
    wrong = [key for key in own if key in state and state[key].shape != own[key].shape]
    if missing or wrong:
        raise SfcError(f"backbone weights do not fit: {len(missing)} tensors missing, {len(wrong)} of another "
                       f"shape, first: {', '.join((missing + wrong)[:3])}", path=path, fix=fix)
    model.backbone.load_state_dict({key: state[key] for key in own})


def parameter_groups(model: nn.Module, seg: SegmentConfig) -> list[dict[str, Any]]:
    """Backbone at lr x backbone_lr_mult, the head at lr (DeepLab-v2: ``deeplab_v2_groups``)."""
    if isinstance(model, DeepLabV2):
        return deeplab_v2_groups(model, seg)
    backbone = list(model.backbone.parameters())
    ids = {id(p) for p in backbone}
    head = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": backbone, "lr": seg.lr * seg.backbone_lr_mult}, {"params": head, "lr": seg.lr}]


def deeplab_v2_groups(model: DeepLabV2, seg: SegmentConfig) -> list[dict[str, Any]]:
    """deeplab-pytorch's groups; the ASPP weights last, so the logged lr is the head's."""
    kinds = model.parameter_kinds()
    return [{"params": kinds["backbone"], "lr": seg.lr * seg.backbone_lr_mult},
            {"params": kinds["head_biases"], "lr": seg.lr * seg.head_bias_lr_mult,
             "weight_decay": seg.head_bias_weight_decay},
            {"params": kinds["head_weights"], "lr": seg.lr}]


def pixel_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over pixels not 255 (0 when none): (N, K, H, W), int64 (N, H, W) -> ()."""
    total = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE, reduction="sum")
    return total / (masks != IGNORE).sum().clamp(min=1)


def msc_loss(output: dict[str, Any], masks: torch.Tensor) -> torch.Tensor:
    """DeepLab-v2's loss: ``pixel_loss`` summed over its four outputs, masks resized (nearest)."""
    total = torch.zeros((), device=masks.device)
    for logits in (*output["scales"], output["out"]):
        resized = F.interpolate(masks[:, None].float(), size=logits.shape[-2:], mode="nearest-exact")
        total = total + pixel_loss(logits, resized[:, 0].long())
    return total


def network_loss(output: dict[str, Any], masks: torch.Tensor) -> torch.Tensor:
    """Step 3's training loss of one network output: ``msc_loss`` for DeepLab-v2, else ``pixel_loss``."""
    return msc_loss(output, masks) if "scales" in output else pixel_loss(output["out"], masks)


def train_step(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, amp: bool, accumulation: int = 1) -> torch.Tensor:
    """One update on images (N, 3, S, S), masks (N, S, S) in ``accumulation`` equal chunks
    (deeplab-pytorch's ITER_SIZE); returns the loss (0-d)."""
    loss = torch.zeros((), device=images.device)
    for chunk, chunk_masks in zip(images.chunk(accumulation), masks.chunk(accumulation)):
        with engine.autocast(images.device, amp):
            output = model(chunk)
        chunk_loss = network_loss(output, chunk_masks) / accumulation
        scaler.scale(chunk_loss).backward()
        loss = loss + chunk_loss.detach()
    scaler.step(optimizer)                  # DeepLab: no gradient clipping
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss


@torch.no_grad()
def scale_probabilities(model: nn.Module, views: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Softmax of one scale's views (B images then their flips), flips undone, upsampled:
    (2B, 3, h, w) -> (2B, K, H, W)."""
    logits = model(views)["out"].float()
    half = len(logits) // 2
    logits = torch.cat([logits[:half], logits[half:].flip(-1)])
    return F.interpolate(logits, size, mode="bilinear", align_corners=False).softmax(1)


def crf_prediction(image: np.ndarray, pred: np.ndarray, refine_cfg: RefineConfig) -> np.ndarray:
    """The dense CRF of the refinement stage over a prediction's own classes: uint8 (H, W)."""
    from sfc_core.crf import crf_labels

    keys, rows = np.unique(pred, return_inverse=True)
    return keys[crf_labels(image, [rows.reshape(pred.shape)], len(keys), refine_cfg)[0]].astype(np.uint8)


def evaluate_network(model: nn.Module, dataset: SegmentationDataset, list_name: str, cfg: Config,
                     device: torch.device, dist: engine.DistInfo,
                     predictions: Path | None = None) -> dict[str, np.ndarray]:
    """Confusions (K, K) on a list per kind ("single_scale", "multi_scale_flip", with eval_crf
    "multi_scale_flip_crf"), counted on the device; with `predictions`, the last kind's PNGs."""
    seg, k = cfg.segment, dataset.num_classes + 1
    layout = inference_layout(cfg.runtime.channels_last)
    model = for_inference(model, cfg.runtime.channels_last)
    scales = tuple(seg.eval_scales) if 1.0 in seg.eval_scales else (1.0, *seg.eval_scales)
    views = MultiScaleDataset(dataset, list_name, scales=scales, masks=True)
    shard = Subset(views, range(dist.rank, len(views), dist.world_size))
    loader = item_loader(shard, engine.loader_workers(cfg.runtime.num_workers, device), device.type == "cuda")
    kinds = ["single_scale", "multi_scale_flip"] + (["multi_scale_flip_crf"] if seg.eval_crf else [])
    counts = torch.zeros(len(kinds), (IGNORE + 1) * k, dtype=torch.int64, device=device)
    items = tqdm(loader, desc=f"evaluate on {list_name}", unit="img", disable=not dist.is_main)
    for batch in same_size_batches(items, seg.batch_size):
        gt = engine.to_device(torch.stack([item["mask"] for item in batch]), device)
        with engine.autocast(device, cfg.runtime.amp):
            labels = batch_labels(model, [item["images"] for item in batch], scales, seg.eval_scales,
                                  tuple(gt.shape[-2:]), device, layout)
        if seg.eval_crf:
            multi = labels["multi_scale_flip"].cpu().numpy().astype(np.uint8)
            crf = [crf_prediction(dataset.read_image(item["name"]), m, cfg.refine) for item, m in zip(batch, multi)]
            labels["multi_scale_flip_crf"] = torch.from_numpy(np.stack(crf)).to(device)
        for row, kind in zip(counts, kinds):
            row += confusion_counts(labels[kind], gt, k)
        if predictions is not None:
            for item, label in zip(batch, labels[kinds[-1]].cpu().numpy().astype(np.uint8)):
                save_mask(predictions / f"{item['name']}.png", label)
    totals = engine.all_reduce_sum(counts, dist).cpu()
    return {kind: confusion_from_counts(row, k) for kind, row in zip(kinds, totals)}


@torch.no_grad()
def batch_labels(model: nn.Module, images: list[list[torch.Tensor]], scales: tuple[float, ...],
                 eval_scales: tuple[float, ...], size: tuple[int, int], device: torch.device,
                 layout: torch.memory_format) -> dict[str, torch.Tensor]:
    """Label maps int64 (B, H, W) "single_scale" and "multi_scale_flip" of B same-size images;
    ``images[b][s]``: image b at ``scales[s]``, uint8 (3, h_s, w_s)."""
    single, total = None, None
    for s, scale in enumerate(scales):
        stacked = torch.stack([views[s] for views in images])
        probs = scale_probabilities(model, device_views(stacked, device).contiguous(memory_format=layout), size)
        probs = probs[:len(images)], probs[len(images):]
        if scale == 1.0:
            single = probs[0].argmax(1)
        if scale in eval_scales:
            total = probs[0] + probs[1] if total is None else total + (probs[0] + probs[1])
    return {"single_scale": single, "multi_scale_flip": total.argmax(1)}


def segment_record(run: RunDir, cfg: Config, masks: str) -> dict[str, Any]:
    """What a step-3 run is made from (provenance.json, ``made_from``); not the ``eval_*`` settings."""
    if masks in ("irn", "crf"):
        source: Any = digest(read_record(run.pseudo_masks(masks).parent))
    elif masks == "cam":
        source = {"cams": digest(read_record(run.cams)), "setting": cam_mask_settings(run, cfg)}
    else:
        source = {"dataset": cfg.data.root}
    settings = {k: v for k, v in dataclasses.asdict(cfg.segment).items() if not k.startswith("eval_")}
    return {"masks": masks, "source": source, "list": cfg.data.train_list, "seed": cfg.runtime.seed,
            "segment": settings}


def _resume_from_same_inputs(state: engine.TrainState, run: RunDir, out: RunDir, masks: str,
                             made_from: dict[str, Any], force: bool, dist: engine.DistInfo) -> None:
    """Resume ``state`` only when provenance.json equals ``made_from`` (else SfcError; ``force`` empties)."""
    if force and dist.is_main:
        claim_folder(out.root, made_from, f"segment {masks}")
    engine.gather_objects(None, dist)
    state.resume(out.last_checkpoint, dist)
    if out.last_checkpoint.is_file():
        refuse_other_inputs(out.root, made_from, f"the step-3 run on {masks} masks",
                            fix=f"add --force to train it again: python -m sfc_core segment --run {run.root} "
                                f"--masks {masks} --force (deletes {out.root})")
    if dist.is_main:
        claim_folder(out.root, made_from, f"segment {masks}")


@claims_run(lambda run, masks, *args, **kwargs: RunDir(run).segment_dir(masks))
def segment(run: str | Path | RunDir, masks: str, overrides: dict[str, Any] | None = None,
            save_predictions: bool = False, force: bool = False) -> dict[str, Any]:
    """Train cfg.segment.network on `masks` (resumed when provenance.json records the same inputs,
    else refused, or trained again with ``force``), score it; returns final_eval.json."""
    run = RunDir(run)
    cfg = run.load_config().override(overrides or {})
    seg = cfg.segment
    out = RunDir(run.segment_dir(masks))
    dataset = open_dataset(cfg.data)
    ids = dataset.ids(cfg.data.train_list)

    # every check before anything is written
    source = mask_source(run, dataset, masks, cfg)
    check_masks(source, dataset, cfg.data.train_list)
    if not dataset.has_masks(cfg.data.heldout_list):
        raise SfcError(f"the held-out list {cfg.data.heldout_list!r} lacks ground-truth masks",
                       path=dataset.list_path(cfg.data.heldout_list),
                       fix="set data.heldout_list to a list with masks (VOC: val)")
    made_from = segment_record(run, cfg, masks)
    dist = engine.setup_distributed()
    check_accumulation(seg, dist)
    device = engine.select_device(cfg.runtime.device, dist, preset=cfg.preset)
    engine.announce_runtime("segment", device, dist, engine.loader_workers(cfg.runtime.num_workers, device),
                            cfg.runtime.amp)
    state = _train_state(cfg, dataset, masks, device)
    _resume_from_same_inputs(state, run, out, masks, made_from, force, dist)
    if dist.is_main:
        cfg.save(out.config_json)

    throughput = None
    if state.step < seg.iterations:
        crops = MaskedCrops(dataset, ids, source.read, seg, cfg.runtime.seed)
        throughput = _train(state, cfg, crops, out, device, dist, source.name)

    predictions = run.segment_predictions(masks) if save_predictions else None
    conf = evaluate_network(state.model, dataset, cfg.data.heldout_list, cfg, device, dist, predictions)
    names = ["background", *dataset.class_names]
    result = {"masks": masks, "mask_settings": source.settings, "network": seg.network,
              "network_title": network_title(seg),
              "train_list": cfg.data.train_list, "steps": state.step,
              "train_images_per_s": throughput, "list": cfg.data.heldout_list,
              "num_images": len(dataset.ids(cfg.data.heldout_list)), "classes": names,
              "eval_scales": list(seg.eval_scales),
              **{kind: scores(c, names) for kind, c in conf.items()}, "made_from": made_from}
    if dist.is_main:
        atomic_write_json(run.final_eval_json(masks), result)
    engine.cleanup_distributed(dist)
    return result


def check_accumulation(seg: SegmentConfig, dist: engine.DistInfo) -> None:
    """Each process's share of segment.batch_size splits into segment.accumulation_steps equal chunks."""
    local = seg.batch_size // dist.world_size
    if local % seg.accumulation_steps:
        raise SfcError(f"segment.batch_size={seg.batch_size} gives {local} images per process, which "
                       f"segment.accumulation_steps={seg.accumulation_steps} does not divide",
                       fix="set segment.accumulation_steps to a divisor of that number (1: no accumulation)")


def network_title(seg: SegmentConfig) -> str:
    """What step 3's figure came from, in words: the network, its recipe and its initial weights."""
    weights = {"imagenet": "ImageNet init", "none": "from scratch"}.get(seg.backbone_weights,
                                                                       f"init {Path(seg.backbone_weights).name}")
    if seg.network == DEEPLAB_V2:
        return f"DeepLab-v2 ResNet-101 + MSC, deeplab-pytorch's VOC recipe; {weights} (its own: a COCO init)"
    return f"{seg.network}; {weights}"


def _memory_format(cfg: Config, device: torch.device) -> torch.memory_format:
    return torch.channels_last if cfg.runtime.channels_last and device.type == "cuda" else torch.contiguous_format


def _train_state(cfg: Config, dataset: SegmentationDataset, masks: str, device: torch.device) -> engine.TrainState:
    seg = cfg.segment
    engine.seed_everything(cfg.runtime.seed)
    model = build_network(seg.network, dataset.num_classes + 1, seg.backbone_weights)
    model = model.to(device, memory_format=_memory_format(cfg, device))
    optimizer = engine.make_optimizer(seg.optimizer, parameter_groups(model, seg), seg.momentum,
                                      seg.weight_decay)
    schedule = engine.make_schedule(optimizer, "poly", seg.iterations, seg.poly_power)
    expected = {"architecture": seg.network, "num_classes": dataset.num_classes,    # checked on resume
                "class_names": list(dataset.class_names), "masks": masks}
    return engine.TrainState(model, optimizer, schedule, engine.make_grad_scaler(device, cfg.runtime.amp),
                             expected, cfg.to_dict(), builds=("segment.network",))


def _train(state: engine.TrainState, cfg: Config, crops: MaskedCrops, out: RunDir, device: torch.device,
           dist: engine.DistInfo, name: str) -> float | None:
    """Train from ``state.step`` to cfg.segment.iterations; returns images/s (None: untimed)."""
    seg, seed = cfg.segment, cfg.runtime.seed
    local_batch = engine.per_process(seg.batch_size, "segment.batch_size", dist)
    steps_per_epoch = len(loop.epoch_keys(len(crops), seed, 0, dist)) // local_batch
    if steps_per_epoch == 0:
        raise SfcError(f"the training list has {len(crops)} images, fewer than one batch of "
                       f"{seg.batch_size}", fix="lower segment.batch_size")
    # a static graph; a training BatchNorm keeps DDP's buffer broadcast from rank 0
    state.model = sync_batchnorm(state.model, dist, device)
    ddp_model = engine.wrap_ddp(state.model, dist, device, gradient_as_bucket_view=True, static_graph=True)
    ddp_model.train()
    plan = loop.Plan(seg.iterations, seg.log_every, seg.checkpoint_every, cfg.runtime.checkpoint_minutes)
    batches = loop.batches(crops, partial(loop.epoch_keys, len(crops), seed, dist=dist), local_batch, steps_per_epoch,
                           plan.steps(state.step), engine.loader_workers(cfg.runtime.num_workers, device), device)
    losses, rate = [], None
    with engine.MetricsLogger(out.metrics_jsonl, out.tensorboard, enabled=dist.is_main,
                              resume_step=state.step) as logger:
        for output in loop.fit(state, batches, partial(segment_step, ddp_model, state, cfg, device), plan,
                               out.last_checkpoint, dist, desc=f"segment {name}"):
            losses.append(output["loss"])          # kept on the device: no host read between logs
            seconds = output["seconds_per_step"]
            rate = seg.batch_size / seconds if seconds else None     # global: every process takes 1/N
            if plan.logs(state.step):             # the mean loss since the last log, the head's lr
                mean = float(np.mean(torch.stack(losses).cpu().double().numpy()))   # one copy
                logger.log(state.step, {"loss": mean, "lr": output["lr"], "images_per_s": rate or 0.0})
                losses.clear()
    return rate


def segment_step(model: nn.Module, state: engine.TrainState, cfg: Config, device: torch.device,
                 batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """One step-3 update on a batch of crops, masks and boxes; returns its loss and the head's lr."""
    images, masks, boxes = batch
    images = normalize_crops(images, boxes, device).contiguous(memory_format=_memory_format(cfg, device))
    lr = state.schedule.get_last_lr()[-1]
    with engine.out_of_memory_hint("segment.batch_size", cfg.segment.batch_size):
        masks = masks.to(device, non_blocking=True).long()
        loss = train_step(model, images, masks, state.optimizer, state.scaler, cfg.runtime.amp,
                          cfg.segment.accumulation_steps)
    return {"loss": loss, "lr": lr}


def sync_batchnorm(model: nn.Module, dist: engine.DistInfo, device: torch.device) -> nn.Module:
    """SyncBatchNorm under torchrun on GPUs when a BatchNorm trains (global batch statistics, as
    one GPU sees; the same checkpoint keys); CPU (gloo) jobs keep per-process statistics."""
    trains = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None
                 and m.weight.requires_grad for m in model.modules())
    if not (dist.distributed and device.type == "cuda" and trains):
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def segment_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory (made by train; cams / refine as needed)")
    p.add_argument("--masks", required=True, choices=MASK_SOURCES,
                   help="training masks: pseudo masks of refine (irn, crf), the fused CAM (cam), "
                        "or the ground truth (gt: the fully supervised upper bound)")
    p.add_argument("--crf", action="store_true",
                   help="also score multi-scale predictions after the dense CRF (segment.eval_crf)")
    p.add_argument("--save-predictions", action="store_true",
                   help="write the held-out predictions as palette PNGs to segment/<masks>/predictions/")
    p.add_argument("--force", action="store_true",
                   help="train again when segment/<masks>/ was made from other masks or settings")
    add_override_arguments(p)


def segment_command(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = overrides_from_args(args)
    if args.crf:
        overrides["segment.eval_crf"] = True
    result = FinalEval(segment(args.run, args.masks, overrides, args.save_predictions, args.force))
    if os.environ.get("RANK", "0") != "0":   # under torchrun, rank 0 reports
        return 0
    print(f"step 3 on {args.masks} masks, {result.network}, held-out list {result.list_name!r} "
          f"({result.num_images} images):")
    print(f"  network: {result.data.get('network_title', result.network)}")
    for kind in result.kinds:
        print(f"  {kind:<22} mIoU {percent(result.miou(kind))}")
    print(f"  written: {RunDir(args.run).final_eval_json(args.masks)}")
    return 0
