"""The evaluation stages: CAMs (`eval-cams`) and pseudo masks (`eval-seg`).

`eval_cams` scores every CAM kind (``cam_files.CAM_KINDS``) at every background threshold and
under the reference's "0.4 pad" rule, from one read of each image: the authors' protocol (the
rows to compare with the paper), rows tuned on the list (optimistic), held-out rows at those
settings, and calibration per class. `eval_seg` scores the pseudo masks, uncertain (255)
pixels as background (the reference) and as ignored. Scores are fractions.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sfc_core.cam_files import CAM_KINDS, CamRecord, kind_cam, load_cam
from sfc_core.cli import add_override_arguments, overrides_from_args
from sfc_core.config import Config
from sfc_core.data import SegmentationDataset, open_dataset
from sfc_core.data.stats import class_counts
from sfc_core.errors import SfcError
from sfc_core.eval_files import read_cam_eval, read_seg_eval
from sfc_core.io import atomic_write_json
from sfc_core.masks import IGNORE, read_pseudo_mask
from sfc_core.method.fusion import background_score, best_foreground
from sfc_core.metrics import (
    activation_ratio,
    confusion_matrix,
    error_shares,
    finite_or_none,
    mean_iou,
    per_class,
    percent,
    scores,
    spearman_vs_count,
    threshold_confusions,
)
from sfc_core.provenance import digest, is_fresh, read_record
from sfc_core.run_dir import RunDir, check_cams, check_files
from sfc_core.run_lock import claims_run

# -- per-image work (what a benchmark times) --------------------------------------------------


def cam_variants(lambdas: Sequence[float]) -> list[tuple[str, float]]:
    """The maps a CAM evaluation scores: (kind, lambda) per kind, a swept kind at every lambda."""
    return [(kind, float(lam)) for kind, spec in CAM_KINDS.items() for lam in (lambdas if spec.swept else [0.0])]


def image_confusions(record: CamRecord, gt: np.ndarray, num_classes: int, lambdas: Sequence[float],
                     thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """All confusions one image adds to a CAM evaluation: int64 (M, T, K, K) (threshold rule,
    ascending thresholds) and (M, K, K) (reference rule), M maps, K = C + 1; gt uint8 (H, W), 255 ignored."""
    valid = gt.ravel() != IGNORE
    gt_valid = gt.ravel()[valid]
    rows = len(record.keys)
    flat = dataclasses.replace(record, maps={n: m.reshape(rows, -1)[:, valid] for n, m in record.maps.items()})
    variants = cam_variants(lambdas)
    by_threshold = np.empty((len(variants), len(thresholds), num_classes, num_classes), np.int64)
    by_reference = np.empty((len(variants), num_classes, num_classes), np.int64)
    for m, (kind, lam) in enumerate(variants):
        cam = kind_cam(flat, kind, lam)                                  # (K', P)
        fg_row, fg_score = best_foreground(cam)                          # once per map
        fg_class = record.keys[fg_row]
        by_threshold[m] = threshold_confusions(fg_class, fg_score, gt_valid, thresholds, num_classes)
        reference = np.where(fg_score > background_score(cam, "reference"), fg_class, 0)
        by_reference[m] = confusion_matrix(reference.astype(np.uint8), gt_valid, num_classes)
    return by_threshold, by_reference


# -- list-level checks and accumulation -------------------------------------------------------


def _check_masks(dataset: SegmentationDataset, ids: list[str], list_name: str) -> None:
    check_files({i: dataset.mask_path(i) for i in ids}, "ground-truth mask", list_name,
                fix=f"evaluate on a list with masks (the list {list_name!r} needs "
                    f"{dataset.mask_dir.name}/<id>.png for every image)")


def _read_gt(dataset: SegmentationDataset, image_id: str, shape: tuple[int, ...], path: Path) -> np.ndarray:
    gt = dataset.read_mask(image_id)
    if gt.shape != tuple(shape):
        raise SfcError(f"{path.name} is {shape[1]}x{shape[0]} but the mask of {image_id} is "
                       f"{gt.shape[1]}x{gt.shape[0]}", path=path,
                       fix="the file comes from another dataset: remake it for this run's dataset")
    return gt


def accumulate_cam_confusions(run: RunDir, dataset: SegmentationDataset, list_name: str,
                              num_foreground: int, lambdas: Sequence[float], thresholds: Sequence[float]
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Sum of `image_confusions` over a list, K = C + 1 (CAM files of another C refused)."""
    ids = dataset.ids(list_name)
    check_cams(run, ids, list_name)
    _check_masks(dataset, ids, list_name)
    k, m = num_foreground + 1, len(cam_variants(lambdas))
    by_threshold = np.zeros((m, len(thresholds), k, k), np.int64)
    by_reference = np.zeros((m, k, k), np.int64)
    for image_id in tqdm(ids, desc=f"eval-cams {run.root.name}: {list_name}", unit="img"):
        record = load_cam(run, image_id, num_classes=num_foreground)
        gt = _read_gt(dataset, image_id, record.size, run.cam_file(image_id))
        t, r = image_confusions(record, gt, k, lambdas, thresholds)
        by_threshold += t
        by_reference += r
    return by_threshold, by_reference


# -- scores -------------------------------------------------------------------------------------


def calibration(conf: np.ndarray, class_names: Sequence[str], counts: np.ndarray) -> dict[str, Any]:
    """Over-/under-activation per foreground class of conf (C+1, C+1) against counts (C,)."""
    ratio = activation_ratio(conf)[1:]
    fp, fn = error_shares(conf)
    rho, p = spearman_vs_count(ratio, counts)
    order = np.argsort(-np.asarray(counts), kind="stable")
    group = max(1, min(3, len(order) // 2))

    def mean_ratio(classes: np.ndarray) -> float | None:
        values = ratio[classes][np.isfinite(ratio[classes])]
        return finite_or_none(values.mean()) if len(values) else None

    return {"activation_ratio": per_class(ratio, class_names),
            "fp_share": per_class(fp[1:], class_names),
            "fn_share": per_class(fn[1:], class_names),
            "spearman_ratio_vs_log_count": finite_or_none(rho), "spearman_p": finite_or_none(p),
            "head_classes": [class_names[i] for i in order[:group]],
            "head_mean_ratio": mean_ratio(order[:group]),
            "tail_classes": [class_names[i] for i in order[-group:]],
            "tail_mean_ratio": mean_ratio(order[-group:])}


def variant_name(kind: str, lam: float) -> str:
    return f"{kind}@{lam:g}" if CAM_KINDS[kind].swept else kind


def _variant_index(kind: str, lam: float | None, lambdas: Sequence[float]) -> int:
    return cam_variants(lambdas).index((kind, 0.0 if lam is None else float(lam)))


def choose_settings(sweep_miou: np.ndarray, lambdas: Sequence[float],
                    thresholds: Sequence[float]) -> dict[str, tuple[float | None, float]]:
    """Per kind, the (lambda, threshold) of the best mIoU of sweep_miou (M, T); ties: lowest."""
    miou = np.where(np.isfinite(sweep_miou), sweep_miou, -1.0)
    variants, best = cam_variants(lambdas), {}
    for kind, spec in CAM_KINDS.items():
        first = variants.index((kind, float(lambdas[0]) if spec.swept else 0.0))
        at = int(np.argmax(miou[first:first + (len(lambdas) if spec.swept else 1)]))
        best[kind] = (lambdas[at // len(thresholds)] if spec.swept else None, thresholds[at % len(thresholds)])
    return best


AUTHORS_PROTOCOL = ("the authors' eval_cam.py rule: background + 0.4 against 2 x foreground, lambda fixed "
                    "in advance (cams.fusion_lambda); nothing chosen on the list it reports")


def authors_protocol(by_reference: np.ndarray, lambdas: Sequence[float], reference_lambda: float,
                     names: Sequence[str]) -> dict[str, Any]:
    """The paper's rows: the prototype and fused CAMs under the authors' 0.4 rule (eval_cam.py)."""
    fused = by_reference[_variant_index("fused", reference_lambda, lambdas)]
    return {"rule": AUTHORS_PROTOCOL,
            "rows": {"prototype": {"lambda": None, **scores(by_reference[_variant_index("prototype", None, lambdas)], names)},
                     "fused": {"lambda": reference_lambda, **scores(fused, names)}}}


def cam_rows(by_threshold: np.ndarray, by_reference: np.ndarray, lambdas: Sequence[float],
             thresholds: Sequence[float], settings: dict[str, tuple[float | None, float]],
             reference_lambda: float, names: Sequence[str], counts: np.ndarray) -> dict[str, Any]:
    """A row per kind at the given settings (tuned on the list), the reference rule beside each,
    the calibration block and the authors' protocol. by_threshold (M, T, K, K), by_reference (M, K, K)."""
    rows, calib = {}, {}
    for kind, spec in CAM_KINDS.items():
        lam, threshold = settings[kind]
        conf = by_threshold[_variant_index(kind, lam, lambdas), list(thresholds).index(threshold)]
        ref_lam = reference_lambda if spec.swept else None
        rows[kind] = {"background": "threshold", "threshold": threshold, "lambda": lam,
                      **scores(conf, names),
                      "reference_rule": {"lambda": ref_lam, **scores(
                          by_reference[_variant_index(kind, ref_lam, lambdas)], names)}}
        calib[kind] = calibration(conf, names[1:], counts)
    return {"rows": rows, "calibration": calib,
            "authors_protocol": authors_protocol(by_reference, lambdas, reference_lambda, names)}


# -- eval-cams ------------------------------------------------------------------------------


def _open(run: RunDir, overrides: dict | None = None) -> tuple[Config, list[str], SegmentationDataset]:
    cfg = run.load_config(overrides)
    class_names = run.class_names()
    dataset = open_dataset(cfg.data)
    if dataset.num_classes != len(class_names):
        raise SfcError(f"the run has {len(class_names)} classes, the dataset {dataset.num_classes}",
                       path=run.class_names_json,
                       fix="point data.root at the dataset the run was trained on")
    return cfg, class_names, dataset


CAM_EVAL_LAYOUT = 2     # 2: the authors' protocol rows


def files_fingerprint(paths: Sequence[Path]) -> str | None:
    """A digest of the files' names, sizes and mtimes (None if one is missing): staleness."""
    try:
        stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    except OSError:
        return None
    return digest(stats)


def cam_eval_record(run: RunDir, cfg: Config, list_name: str, held: str | None,
                    ids: Sequence[str]) -> dict[str, Any]:
    """What cam_eval.json is made from: the CAMs' record, file ids, sweep settings, layout."""
    return {"layout": CAM_EVAL_LAYOUT, "cams": digest(read_record(run.cams)), "cam_files": files_fingerprint([run.cam_file(i) for i in ids]),
            "list": list_name, "heldout": held, "threshold_sweep": sorted(set(cfg.cams.threshold_sweep)),
            "lambda_sweep": sorted(set(cfg.cams.lambda_sweep)), "fusion_lambda": cfg.cams.fusion_lambda}


@claims_run()
def eval_cams(run: str | Path | RunDir, list_name: str | None = None,
              overrides: dict | None = None) -> dict[str, Any]:
    """Score every CAM kind on the evaluation list (and the held-out list if its CAMs exist) into
    RUN_DIR/cam_eval.json, print the tables, return the dict; an up-to-date file is read back instead."""
    run = RunDir(run)
    cfg, class_names, dataset = _open(run, overrides)
    list_name = list_name or cfg.data.eval_list
    held = cfg.data.heldout_list
    held_ids = dataset.ids(held) if held != list_name and dataset.list_path(held).is_file() else []
    score_held = any(run.cam_file(i).is_file() for i in held_ids)
    if score_held:                       # some held-out CAMs: all of them, checked before the work
        check_cams(run, held_ids, held)
    made_from = cam_eval_record(run, cfg, list_name, held if score_held else None,
                                [*dataset.ids(list_name), *(held_ids if score_held else [])])
    if run.cam_eval_json.is_file():
        previous = read_cam_eval(run.cam_eval_json)
        if is_fresh(previous.made_from, made_from) and previous.kinds == list(CAM_KINDS):
            print(f"eval-cams: {run.cam_eval_json} is up to date (same CAM files and settings)")
            print(format_cam_eval(previous.data))
            return previous.data
    result, settings = _score_cams(run, cfg, dataset, class_names, list_name)
    if score_held:   # at the settings chosen above; only the lambdas they name are needed
        result["heldout"] = _score_heldout(run, cfg, dataset, result, held, settings)
    elif held_ids:
        result["heldout"] = {"list": held, "note": "no CAMs for the held-out list: python -m "
                             f"sfc_core cams --run {run.root} --list {held}"}
    result["made_from"] = made_from
    atomic_write_json(run.cam_eval_json, result)
    print(format_cam_eval(result))
    return result


def _score_cams(run: RunDir, cfg: Config, dataset: SegmentationDataset, class_names: list[str],
                list_name: str) -> tuple[dict[str, Any], dict[str, tuple[float | None, float]]]:
    """cam_eval.json's figures on ``list_name`` and the (lambda, threshold) chosen per kind."""
    names = ["background", *class_names]
    thresholds = sorted(set(cfg.cams.threshold_sweep))
    lambdas = sorted(set(cfg.cams.lambda_sweep) | {cfg.cams.fusion_lambda})
    counts = class_counts(dataset, cfg.data.train_list)
    by_threshold, by_reference = accumulate_cam_confusions(run, dataset, list_name, len(class_names),
                                                           lambdas, thresholds)
    sweep_miou = np.array([[mean_iou(c) for c in per_threshold] for per_threshold in by_threshold])
    settings = choose_settings(sweep_miou, lambdas, thresholds)
    variants = cam_variants(lambdas)
    result = {"list": list_name, "num_images": len(dataset.ids(list_name)), "classes": names,
              "thresholds": thresholds, "lambdas": lambdas, "fusion_lambda": cfg.cams.fusion_lambda,
              "image_counts": dict(zip(class_names, counts.tolist())),
              "image_counts_list": cfg.data.train_list,
              **cam_rows(by_threshold, by_reference, lambdas, thresholds, settings,
                         cfg.cams.fusion_lambda, names, counts),
              "sweep": {"threshold_rule": {variant_name(*v): [finite_or_none(x) for x in sweep_miou[m]]
                                           for m, v in enumerate(variants)},
                        "reference_rule": {variant_name(*v): finite_or_none(mean_iou(by_reference[m]))
                                           for m, v in enumerate(variants)}},
              "heldout": None}
    return result, settings


def _score_heldout(run: RunDir, cfg: Config, dataset: SegmentationDataset, result: dict[str, Any],
                   held: str, settings: dict[str, tuple[float | None, float]]) -> dict[str, Any]:
    """The rows and calibration on the held-out list at the ``settings`` chosen for ``result``."""
    names, thresholds = result["classes"], result["thresholds"]
    class_names = names[1:]
    counts = np.array([result["image_counts"][name] for name in class_names])
    held_lambdas = sorted({lam for lam, _ in settings.values() if lam is not None} | {cfg.cams.fusion_lambda})
    held_confusions = accumulate_cam_confusions(run, dataset, held, len(class_names), held_lambdas, thresholds)
    return {"list": held, "num_images": len(dataset.ids(held)),
            **cam_rows(*held_confusions, held_lambdas, thresholds, settings, cfg.cams.fusion_lambda,
                       names, counts)}


# -- eval-seg -------------------------------------------------------------------------------


def seg_eval_record(run: RunDir, method: str, ids: Sequence[str]) -> dict[str, Any]:
    """What one method's scores in seg_eval.json are made from: its masks' record and files."""
    folder = run.pseudo_masks(method)
    return {"pseudo": digest(read_record(folder.parent)),
            "files": files_fingerprint([folder / f"{i}.png" for i in ids])}


def _fresh_scores(run: RunDir, list_name: str, ids: Sequence[str]) -> dict[str, Any]:
    """The scores in seg_eval.json (same list) whose masks are still what they were scored from."""
    if not run.seg_eval_json.is_file():
        return {}
    previous = read_seg_eval(run.seg_eval_json)
    if previous.list_name != list_name:
        return {}
    return {m: previous.method(m) for m in previous.methods if m in run.pseudo_methods()
            and is_fresh(previous.method(m).get("made_from"), seg_eval_record(run, m, ids))}


def score_pseudo_masks(run: RunDir, dataset: SegmentationDataset, method: str, list_name: str,
                       names: Sequence[str]) -> dict[str, Any]:
    """One method's block of seg_eval.json: uncertain (255) pixels as background and as ignored."""
    folder, k, ids = run.pseudo_masks(method), len(names), dataset.ids(list_name)
    paths = {i: folder / f"{i}.png" for i in ids}
    check_files(paths, f"pseudo mask ({method})", list_name,
                fix=f"run: python -m sfc_core refine --run {run.root} --method {method}")
    as_background = np.zeros((k, k), np.int64)
    as_ignored = np.zeros((k, k), np.int64)
    uncertain = 0
    for image_id in tqdm(ids, desc=f"eval-seg {method}", unit="img"):
        pred = read_pseudo_mask(paths[image_id])
        gt = _read_gt(dataset, image_id, pred.shape, paths[image_id])
        unsure = (pred == IGNORE) & (gt != IGNORE)
        uncertain += int(unsure.sum())
        filled = np.where(pred == IGNORE, 0, pred).astype(np.uint8)
        as_background += confusion_matrix(filled, gt, k)
        as_ignored += confusion_matrix(filled, np.where(unsure, IGNORE, gt).astype(np.uint8), k)
    scored = int(as_background.sum())
    return {"uncertain_pixels": uncertain, "scored_pixels": scored,
            "uncertain_share": uncertain / scored if scored else None,
            "uncertain_as_background": scores(as_background, names),
            "uncertain_ignored": scores(as_ignored, names),
            "made_from": seg_eval_record(run, method, ids)}


@claims_run()
def eval_seg(run: str | Path | RunDir, methods: Sequence[str] | None = None,
             overrides: dict | None = None) -> dict[str, Any]:
    """Score the pseudo masks of ``methods`` (default: all) into RUN_DIR/seg_eval.json, keeping
    the scores of masks unchanged since (``made_from``)."""
    run = RunDir(run)
    cfg, class_names, dataset = _open(run, overrides)
    names = ["background", *class_names]
    methods = list(methods or run.pseudo_methods())
    if not methods:
        raise SfcError("the run has no pseudo masks", path=run.root / "pseudo",
                       fix=f"run: python -m sfc_core refine --run {run.root}")
    list_name = cfg.data.eval_list
    ids = dataset.ids(list_name)
    _check_masks(dataset, ids, list_name)
    result: dict[str, Any] = {"list": list_name, "num_images": len(ids), "classes": names,
                              "methods": _fresh_scores(run, list_name, ids)}
    for method in methods:
        if method not in result["methods"]:
            result["methods"][method] = score_pseudo_masks(run, dataset, method, list_name, names)
    if run.cam_eval_json.is_file():
        cam_eval = read_cam_eval(run.cam_eval_json)
        fused = cam_eval.row("fused")
        result["fused_cam"] = {"list": cam_eval.list_name, "lambda": fused["lambda"],
                               "threshold": fused["threshold"], "miou": fused["miou"], "iou": fused["iou"]}
    atomic_write_json(run.seg_eval_json, result)
    print(format_seg_eval(result))
    return result


# -- tables ---------------------------------------------------------------------------------


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned text table: first column left-aligned, the rest right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [" ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _number(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _authors_table(block: dict[str, Any]) -> str:
    rows = [[kind, _number(row["lambda"], "g"), percent(row["miou"])]
            for kind, row in block["authors_protocol"]["rows"].items()]
    return format_table(["CAM", "lambda", "mIoU %"], rows)


def _rows_table(block: dict[str, Any]) -> str:
    rows = []
    for kind, row in block["rows"].items():
        lam = _number(row["lambda"], "g")
        ref = row["reference_rule"]
        ref_lam = "" if ref["lambda"] is None else f" (lambda {ref['lambda']:g})"
        rows.append([kind, lam, f"{row['threshold']:g}", percent(row["miou"]), percent(ref["miou"]) + ref_lam])
    return format_table(["CAM", "lambda", "bg threshold", "mIoU %", "reference rule mIoU %"], rows)


def format_cam_eval(result: dict[str, Any]) -> str:
    """The eval-cams report: a row per kind, the sweep, per-class IoU and calibration."""
    rows, calib = result["rows"], result["calibration"]
    kinds = list(rows)
    short = [{"classifier": "cls", "prototype": "proto"}.get(kind, kind) for kind in kinds]
    out = [f"CAM evaluation on list {result['list']!r} ({result['num_images']} images)",
           f"authors' protocol ({result['authors_protocol']['rule']}): the rows to compare with the "
           f"paper (VOC train: fused 64.7; the authors' released log, prototype: 63.1)",
           _authors_table(result), "",
           "tuned on the list it reports (threshold and lambda with the best mIoU on this list: optimistic)",
           _rows_table(result), ""]
    sweep = result["sweep"]["threshold_rule"]
    out += ["mIoU % by background threshold (threshold rule)",
            format_table(["CAM", *[f"{t:g}" for t in result["thresholds"]]],
                         [[name, *[percent(v) for v in values]] for name, values in sweep.items()]), ""]
    counts = result["image_counts"]
    per_class = []
    for name in result["classes"]:
        line = [name, counts.get(name, "-")]
        line += [percent(rows[kind]["iou"][name]) for kind in kinds]
        line += [_number(calib[kind]["activation_ratio"][name], ".2f") if name in counts else ""
                 for kind in kinds]
        per_class.append(line)
    out += ["per class: IoU % and activation ratio (predicted / GT area) at the chosen settings",
            format_table(["class", "train images", *[f"IoU {a}" for a in short], *[f"ratio {a}" for a in short]],
                         per_class), ""]
    spear = [[kind, _number(calib[kind]["spearman_ratio_vs_log_count"], "+.2f"),
              _number(calib[kind]["head_mean_ratio"], ".2f"), _number(calib[kind]["tail_mean_ratio"], ".2f")]
             for kind in kinds]
    out += ["calibration: Spearman(activation ratio, log train image count); mean ratio of the "
            "most / least frequent classes",
            format_table(["CAM", "Spearman", "head ratio", "tail ratio"], spear)]
    held = result.get("heldout")
    if held:
        out += [""]
        out += ([f"held-out list {held['list']!r} ({held.get('num_images')} images): the authors' protocol, "
                 "and the settings tuned above", _authors_table(held), _rows_table(held)]
                if "rows" in held else [f"held-out: {held['note']}"])
    return "\n".join(out)


def format_seg_eval(result: dict[str, Any]) -> str:
    rows = [[method, percent(m["uncertain_as_background"]["miou"]), percent(m["uncertain_ignored"]["miou"]),
             percent(m["uncertain_share"])] for method, m in result["methods"].items()]
    if "fused_cam" in result:
        f = result["fused_cam"]
        rows.append([f"fused CAM (lambda {f['lambda']:g}, t {f['threshold']:g})", percent(f["miou"]), "", ""])
    return "\n".join([f"pseudo-mask evaluation on list {result['list']!r} ({result['num_images']} images)",
                      format_table(["masks", "mIoU % (uncertain = bg)", "mIoU % (uncertain ignored)",
                                    "uncertain %"], rows)])


# -- verbs ----------------------------------------------------------------------------------


def eval_cams_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory with cams/")
    p.add_argument("--list", dest="list_name", default=None,
                   help="list to choose thresholds on (default: data.eval_list)")
    add_override_arguments(p)


def eval_cams_command(args: argparse.Namespace) -> int:
    eval_cams(args.run, args.list_name, overrides_from_args(args))
    return 0


def eval_seg_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory with pseudo masks")
    p.add_argument("--methods", default=None,
                   help="comma-separated refinement methods (default: every method present)")
    add_override_arguments(p)


def eval_seg_command(args: argparse.Namespace) -> int:
    eval_seg(args.run, args.methods.split(",") if args.methods else None, overrides_from_args(args))
    return 0
