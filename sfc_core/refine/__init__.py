"""The `refine` stage: pseudo masks from the CAMs (docs/method.md 5, docs/reference.md 5).

    python -m sfc_core refine --run RUN_DIR --method irn|crf

``crf`` (COCO): the CRF-smoothed confident labels of the fused CAM (255 where uncertain).
``irn`` (VOC): those labels train IRN's boundary network (``irn.py``), whose boundaries carry the
hybrid random walk of the fused CAM (``random_walk.py``). Resumable while provenance.json records
the same CAMs and settings.
"""
from __future__ import annotations

import argparse
import dataclasses
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sfc_core.cam_files import kind_cam, load_cam
from sfc_core.cli import add_override_arguments, overrides_from_args
from sfc_core.config import Config
from sfc_core.crf import confidence_scores, confident_labels, rule_scores
from sfc_core.data import SegmentationDataset, open_dataset
from sfc_core.engine import DistInfo, announce_runtime, loader_workers, select_device
from sfc_core.errors import SfcError
from sfc_core.io import atomic_write_text
from sfc_core.masks import save_mask
from sfc_core.pool import pool_map
from sfc_core.provenance import claim_folder, digest, png_complete, read_record, unfinished
from sfc_core.refine.irn import load_boundary_net, train_irn, walk_scores
from sfc_core.run_dir import RunDir, check_cams
from sfc_core.run_lock import claims_run

METHODS = ("irn", "crf")


@claims_run()
def refine(run: str | Path | RunDir, method: str | None = None, device: str | torch.device | None = None,
           overrides: dict | None = None) -> Path:
    """Pseudo masks of every training image by ``method`` (default: ``refine.method``); returns
    their folder. ``overrides``: dotted config keys on top of the run's config.json."""
    run = RunDir(run)
    if method is not None and method not in METHODS:     # refine.method itself is checked by the config
        raise SfcError(f"unknown refinement method {method!r}",
                       fix=f"use --method {' or '.join(METHODS)} (or set refine.method to one of them)")
    cfg = run.load_config(overrides)
    method = method or cfg.refine.method
    dataset = open_dataset(cfg.data)
    list_name = cfg.data.train_list
    ids = dataset.ids(list_name)
    check_cams(run, ids, list_name)
    device = select_device(str(device or cfg.runtime.device), option="--device",
                           preset=cfg.preset if method == "irn" else None)      # the CRF runs no network
    made_by = refine_record(run, cfg, method)
    claim_folder(run.pseudo_masks(method).parent, made_by, f"refine {method}")
    if method == "crf":
        write_confident_labels(run, cfg, dataset, ids, run.pseudo_masks("crf"))
    else:
        claim_folder(run.refine_dir("irn"), made_by, "refine irn (relation labels, boundary network)")
        announce_runtime("refine irn", device, DistInfo(), loader_workers(cfg.runtime.num_workers, device),
                         cfg.runtime.amp)
        write_confident_labels(run, cfg, dataset, ids, run.relation_labels)
        train_irn(run, cfg, dataset, ids, device)
        write_walk_masks(run, cfg, dataset, ids, device)
    masks = run.pseudo_masks(method)
    lines = [f"/{dataset.image_path(i).relative_to(dataset.root)} /{masks.name}/{i}.png" for i in ids]
    atomic_write_text(run.pseudo_list(method, list_name), "\n".join(lines) + "\n")
    print(f"refine {method}: {len(ids)} pseudo masks -> {masks}")
    return masks


def refine_record(run: RunDir, cfg: Config, method: str) -> dict:
    """What a method's pseudo masks (and IRN's work files) are made from."""
    return {"method": method, "cams": digest(read_record(run.cams)), "list": cfg.data.train_list,
            "refine": dataclasses.asdict(cfg.refine), "background": cfg.cams.background,
            "bg_threshold": cfg.cams.bg_threshold, "seed": cfg.runtime.seed}


def _unfinished(out_dir: Path, ids: list[str], what: str) -> list[str]:
    return unfinished({i: out_dir / f"{i}.png" for i in ids}, png_complete, what, "PNG(s)")


def _confident_label_task(run: RunDir, cfg: Config, dataset: SegmentationDataset, out_dir: Path,
                          image_id: str) -> None:
    record = load_cam(run, image_id, dataset.num_classes)
    image = dataset.read_image(image_id)
    if image.shape[:2] != record.size:
        raise SfcError(f"CAM of {image_id} is {record.size} but the image is {image.shape[:2]}",
                       path=run.cam_file(image_id), fix=f"delete it and run: python -m sfc_core cams --run {run.root}")
    fg_scores, bg_scores = confidence_scores(kind_cam(record, "fused", cfg.refine.relation_lambda), cfg.refine)
    save_mask(out_dir / f"{image_id}.png", confident_labels(image, fg_scores, bg_scores, record.keys, cfg.refine))


def crf_processes(setting: int | str) -> int:
    """Processes for the CRF: ``runtime.num_workers``; ``"auto"``: this process's torch threads
    (its share of the cores; one: no processes started)."""
    return int(setting) if setting != "auto" else torch.get_num_threads()


def write_confident_labels(run: RunDir, cfg: Config, dataset: SegmentationDataset, ids: list[str],
                           out_dir: Path) -> None:
    """CRF-smoothed confident labels of ``ids`` into ``out_dir`` (skips finished images)."""
    todo = _unfinished(out_dir, ids, "refine: confident labels")
    pool_map(partial(_confident_label_task, run, cfg, dataset, out_dir), todo, crf_processes(cfg.runtime.num_workers),
             f"refine: confident labels -> {out_dir.name}", path=out_dir,
             fix=f"run the same command again (finished masks are kept), or lower runtime.num_workers "
                 f"(now {cfg.runtime.num_workers})")


def write_walk_masks(run: RunDir, cfg: Config, dataset: SegmentationDataset, ids: list[str],
                     device: torch.device) -> None:
    """IRN pseudo masks: the hybrid random walk of each image's fused CAM on its boundary map."""
    out_dir = run.pseudo_masks("irn")
    todo = _unfinished(out_dir, ids, "refine: random walk")
    if not todo:
        return
    net = load_boundary_net(run, cfg, device)
    threads = torch.get_num_threads()
    if device.type == "cpu":    # 2^k small sequential products: one thread
        torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for image_id in tqdm(todo, desc="refine: random walk", unit="img"):
                record = load_cam(run, image_id, dataset.num_classes)
                mask = np.zeros(record.size, np.uint8)          # no foreground class: all background
                if len(record.keys) > 1:
                    fused = kind_cam(record, "fused", cfg.refine.walk_lambda)
                    scores = torch.from_numpy(rule_scores(fused, cfg.cams.background, cfg.cams.bg_threshold))
                    walked = walk_scores(net, dataset.read_image(image_id), scores.to(device), cfg.refine,
                                         cfg.runtime.amp)
                    mask = record.keys[walked.argmax(0).cpu().numpy()].astype(np.uint8)
                save_mask(out_dir / f"{image_id}.png", mask)
    finally:
        torch.set_num_threads(threads)


def refine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory with CAMs (made by `cams`)")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="irn: relation labels + boundary net + random walk (VOC); crf: dense CRF (COCO); "
                        "default: the run's refine.method")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: runtime.device)")
    add_override_arguments(p)


def refine_command(args: argparse.Namespace) -> int:
    refine(args.run, args.method, args.device, overrides_from_args(args))
    return 0
