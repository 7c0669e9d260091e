"""The stages chained for one run, and several runs side by side: what the notebooks call.

    prepare_runs({"baseline": base_cfg, "sfc": cfg}, "runs/synthetic-paper")   # train + CAMs + eval
    pseudo_mask_runs(["runs/synthetic-paper/baseline", "runs/synthetic-paper/sfc"])  # step 2 + eval-seg
    segment_runs([("runs/synthetic-paper/sfc", "crf"), ("runs/synthetic-paper/sfc", "gt")])   # step 3

Each stage skips finished work, so calling these again is cheap. Independent runs go through
``sfc_core.orchestration.parallel.run_side_by_side``.
"""
from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

from sfc_core.cams import make_cams
from sfc_core.config import Config
from sfc_core.eval_files import CamEval, FinalEval, SegEval, read_final_eval
from sfc_core.evaluate import eval_cams, eval_seg
from sfc_core.orchestration.parallel import run_side_by_side
from sfc_core.orchestration.stage_times import recorded
from sfc_core.provenance import is_fresh
from sfc_core.refine import refine
from sfc_core.run_dir import RunDir
from sfc_core.segment import segment, segment_record
from sfc_core.train import train


def trained(cfg: Config, run_dir: str | Path, force: bool = False) -> None:
    """Train one run into ``run_dir`` (resume or reuse; start over with ``force``)."""
    if force:
        shutil.rmtree(run_dir, ignore_errors=True)
    with recorded(run_dir, "train"):
        train(cfg, run_dir, resume=True)


def evaluated(run_dir: str | Path) -> CamEval:
    """CAMs of a trained run's evaluation and held-out lists, and ``eval_cams`` on them."""
    run = RunDir(run_dir)
    cfg = run.load_config()
    for list_name in (cfg.data.eval_list, cfg.data.heldout_list):
        with recorded(run_dir, f"cams ({list_name})"):
            make_cams(run, list_name)
    with recorded(run_dir, "eval-cams"):
        return CamEval(eval_cams(run))


def prepare_runs(configs: dict[str, Config], run_root: str | Path, force: bool = False,
                 processes: int = 2) -> dict[str, CamEval]:
    """Train each ``{name: config}`` into ``run_root/name``, make and score its CAMs, side
    by side (longest first); returns ``{name: CamEval}``. With one run left, all runs here."""
    jobs = [(partial(trained, cfg, Path(run_root) / name, force), partial(evaluated, Path(run_root) / name))
            for name, cfg in configs.items()]
    if not force:
        left = sum(not RunDir(Path(run_root) / name).cam_eval_json.is_file() for name in configs)
        processes = min(processes, max(1, left))
    return dict(zip(configs, run_side_by_side(jobs, processes)))


def pseudo_masks(run_dir: str | Path, method: str | None = None, force: bool = False) -> SegEval:
    """Step 2 for one run: training-list CAMs, pseudo masks by ``method`` and their evaluation."""
    run = RunDir(run_dir)
    method = method or run.load_config().refine.method
    if force:
        for folder in (run.refine_dir(method), run.pseudo_masks(method).parent):
            shutil.rmtree(folder, ignore_errors=True)
        run.seg_eval_json.unlink(missing_ok=True)
    with recorded(run_dir, f"cams ({run.load_config().data.train_list})"):
        make_cams(run)
    with recorded(run_dir, f"refine {method}"):
        refine(run, method)
    with recorded(run_dir, f"eval-seg {method}"):
        return SegEval(eval_seg(run, [method]))   # keeps (and reuses) the scores of unchanged masks


def pseudo_mask_runs(run_dirs: list[str | Path], method: str | None = None, force: bool = False,
                     processes: int = 2) -> list[SegEval]:
    """``pseudo_masks`` for several runs, side by side."""
    return run_side_by_side([partial(pseudo_masks, run_dir, method, force) for run_dir in run_dirs], processes)


def segmented(run_dir: str | Path, masks: str, force: bool = False) -> FinalEval:
    """Step 3 for one run: a segmentation network trained on ``masks`` and scored held out."""
    run = RunDir(run_dir)
    if force:
        shutil.rmtree(run.segment_dir(masks), ignore_errors=True)
    if run.final_eval_json(masks).is_file():
        final = read_final_eval(run.final_eval_json(masks))
        if is_fresh(final.made_from, segment_record(run, run.load_config(), masks)):
            return final
    with recorded(run_dir, f"step 3 on {masks}"):
        return FinalEval(segment(run, masks, force=True))   # other masks or settings: trained again


def segment_runs(jobs: list[tuple[str | Path, str]], force: bool = False, processes: int = 3) -> list[FinalEval]:
    """``segmented`` for each (run directory, masks), side by side."""
    return run_side_by_side([partial(segmented, run_dir, masks, force) for run_dir, masks in jobs], processes)
