"""Baseline and SFC of one synthetic preset over several seeds, every stage, with its cost.

    python -m benchmarks.recipes --preset synthetic-paper --seeds 0 1 2 --out runs/recipes
    python -m benchmarks.recipes --set train.epochs=4 --out runs/recipes-4-epochs   # a variant
    python -m benchmarks.recipes --seeds reporting --mask-seeds --step3 none \
        --out runs/reporting --table docs/synthetic_reporting_seeds.md   # the headline table
    python -m benchmarks.recipes --seeds 0 1 2 --variants sfc-no-bank   # a registered variant

``--seeds`` names seeds or a seed set (``SEED_SETS``: the development seeds every choice was
made on, the reporting seeds the headline figures come from). For each seed: the dataset
(generator seed + s), then baseline and SFC (training seed + s, as ``05_evaluation`` shifts
them) side by side: training, CAMs of the evaluation and held-out lists and their scores,
pseudo masks of the training list by each ``--methods`` and their scores, and step 3 on the
masks of the preset's ``refine.method`` (for ``--mask-seeds``; the other seeds stop after their
CAMs). Every run is a variant of ``VARIANTS`` (name -> config overrides): ``--variants NAME ...``
adds those beside SFC and the baseline on every seed, with the same stages; ``--control`` adds
the no-shared-part baseline of each seed (``01_long_tail_analysis``'s), ``--ablations`` SFC of
seed 0 with each component off (``config.ABLATIONS``, as ``05_evaluation``'s full run), both
CAMs only. Each stage's wall and CPU seconds are read from the runs' ``stage_times.jsonl``.

Writes ``<out>/recipes-<preset>.json`` and prints one markdown table of the figures
(``docs/synthetic.md``), the seeds' summary (``benchmarks.seed_table``: mean ± sd, min..max,
seeds meeting each target, chosen settings at a sweep's end; ``--table`` writes it too) and one
table of the stage costs (``BENCHMARKS.md``). Runs go to ``<out>/<preset>/<variant>[-seed<s>]``;
finished stages are reused, as in the notebooks, so a second call only re-reads (its costs are
then those of re-reading), and an interrupted call, run again, goes on from the finished runs.
A changed evaluation setting (``cams.*``: a wider sweep) re-scores the finished runs' CAMs
without training them again: the training stage finds each run finished and its CAM files are
kept; only ``eval-cams``, whose record names its sweeps, runs again.
``--finished-only`` reports the seeds whose runs are finished, read from their evaluation files
(nothing runs, so it may be called while a run is going on).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch

from benchmarks import seed_table
from benchmarks.bench import machine_info
from benchmarks.stage_costs import summed
from sfc_core.analysis import plots
from sfc_core.cam_files import CAM_KINDS
from sfc_core.config import ABLATIONS, Config, parse_overrides
from sfc_core.data import open_dataset
from sfc_core.errors import SfcError
from sfc_core.eval_files import (
    CamEval,
    FinalEval,
    SegEval,
    read_cam_eval,
    read_final_eval,
    read_seg_eval,
)
from sfc_core.io import atomic_write_json, atomic_write_text
from sfc_core.model.pretrained import resolve_backbone_weights
from sfc_core.orchestration import pipeline
from sfc_core.orchestration.parallel import run_side_by_side
from sfc_core.orchestration.stage_times import cpu_seconds, read_stage_times
from sfc_core.run_dir import RunDir

# Every recipe choice so far (epochs, constants, the targets' thresholds) was measured on the
# development seeds; the headline figures come from the reporting seeds, on which no choice is
# made. A seed never moves from one set to the other (docs/synthetic.md, "Development and
# reporting seeds").
DEVELOPMENT_SEEDS = (0, 1, 2)
REPORTING_SEEDS = tuple(range(100, 110))
SEED_SETS = {"development": DEVELOPMENT_SEEDS, "reporting": REPORTING_SEEDS}

# The methods the harness compares, by name: config overrides on top of the preset. A method of
# your own is one more entry (docs/extending.md), run by --variants NAME beside SFC and
# the baseline; a run "baseline..." is read through its classifier CAM, any other its fused CAM.
VARIANTS: dict[str, dict[str, Any]] = {
    "sfc": {},
    "baseline": ABLATIONS["baseline"],
    "baseline-control": {**ABLATIONS["baseline"], "data.shared_parts": False},   # --control
    **{f"sfc-{name}": overrides for name, overrides in ABLATIONS.items() if name != "baseline"},  # --ablations
}


class Job(NamedTuple):
    """One run of the plan: which variant on which seed, its config and folder, the pseudo-mask
    methods and step-3 masks it goes on to."""
    variant: str
    seed: int
    cfg: Config
    run_dir: Path
    methods: list[str]
    step3: list[str]


def run_chain(cfg: Config, run_dir: Path, methods: list[str], step3: list[str]) -> dict[str, dict]:
    """Every stage of one run in this process, one after the other (each records its cost in
    the run's stage_times.jsonl); their results by stage."""
    pipeline.trained(cfg, run_dir)
    out = {"cams + eval": pipeline.evaluated(run_dir).data}
    out |= {f"pseudo masks {m}": pipeline.pseudo_masks(run_dir, m).data for m in methods}
    out |= {f"step 3 on {m}": pipeline.segmented(run_dir, m).data for m in step3}
    return out


def stored_results(run_dir: Path, methods: list[str], step3: list[str]) -> dict[str, dict]:
    """What ``run_chain`` returns, read from a run's evaluation files without running (or
    locking) anything: the pseudo masks and step 3 only where they were evaluated."""
    run = RunDir(run_dir)
    out = {"cams + eval": read_cam_eval(run.cam_eval_json).data}
    seg = read_seg_eval(run.seg_eval_json) if run.seg_eval_json.is_file() else None
    out |= {f"pseudo masks {m}": seg.data for m in methods if seg is not None and m in seg.methods}
    out |= {f"step 3 on {m}": read_final_eval(run.final_eval_json(m)).data for m in step3
            if run.final_eval_json(m).is_file()}
    return out


def seeded(cfg: Config, overrides: dict[str, Any], seed: int) -> Config:
    return copy.deepcopy(cfg).override({**overrides, "data.synthetic_seed": cfg.data.synthetic_seed + seed,
                                         "runtime.seed": cfg.runtime.seed + seed})


def figures(variant: str, run_dir: Path, by_stage: dict[str, dict], dataset,
            baseline_cam: CamEval | None) -> dict[str, Any]:
    """The figures of one run: CAM mIoU (eval, held-out), calibration, mechanism, pseudo-mask
    and step-3 mIoU."""
    cam = CamEval(by_stage["cams + eval"])
    kind = "classifier" if variant.startswith("baseline") else "fused"
    calib = cam.calibration(kind)
    mech = plots.run_mechanism(run_dir, dataset, kind)
    row = {"variant": variant, "CAM": kind,
           **{f"{k} CAM mIoU % (eval)": 100 * (cam.miou(k) or 0.0) for k in CAM_KINDS},
           "mIoU % (held-out)": 100 * cam.heldout.miou(kind) if cam.heldout else None,
           "Spearman": plots.as_float(calib.spearman),
           **{f"Spearman {k}": plots.as_float(cam.calibration(k).spearman) for k in CAM_KINDS},
           "lambda (fused)": cam.chosen_lambda("fused"),
           **{f"threshold ({k})": cam.chosen_threshold(k) for k in CAM_KINDS}, "sweep edges": plots.sweep_edges(cam),
           "head ratio": plots.as_float(calib.head_mean_ratio), "tail ratio": plots.as_float(calib.tail_mean_ratio),
           "heads' shared-part recall": mech["heads_shared_part_recall"],
           "non-head lost to head %": 100 * mech["non_head_lost_to_head"]}
    if baseline_cam is not None:
        names = cam.classes[1:]
        gains = plots.iou_gain_by_frequency(plots.class_values(cam.image_counts, names),
                                            plots.class_values(baseline_cam.iou("classifier"), names),
                                            plots.class_values(cam.iou(kind), names))
        row["head-third IoU gain"] = 100 * gains["head_third_gain"]
        row["tail-third IoU gain"] = 100 * gains["tail_third_gain"]
    for stage, result in by_stage.items():
        if stage.startswith("pseudo masks "):
            method = stage.removeprefix("pseudo masks ")
            row[f"{method} pseudo-mask mIoU %"] = 100 * (SegEval(result).miou(method) or 0.0)
        if stage.startswith("step 3 on "):
            row[f"step 3 ({stage.removeprefix('step 3 on ')}) mIoU %"] = 100 * (FinalEval(result).miou() or 0.0)
    return row


def parse_seeds(values: list[str]) -> list[int]:
    """``--seeds``: integers, or one seed set's name (``SEED_SETS``)."""
    if len(values) == 1 and values[0] in SEED_SETS:
        return list(SEED_SETS[values[0]])
    try:
        return [int(value) for value in values]
    except ValueError:
        raise SfcError(f"--seeds takes integers or one of {', '.join(SEED_SETS)}, got: {' '.join(values)}",
                       fix="e.g. --seeds 0 1 2, or --seeds reporting") from None


def run_name(variant: str, seed: int) -> str:
    """A run's folder under ``<out>/<preset>``: seed 0 has no suffix (the notebooks' names)."""
    return variant if seed == 0 else f"{variant}-seed{seed}"


def check_variants(names: list[str]) -> None:
    """One SfcError for a name ``VARIANTS`` does not hold, or one a run's folder cannot take."""
    for name in names:
        if name not in VARIANTS:
            raise SfcError(f"--variants: no variant named {name!r}; registered: {', '.join(VARIANTS)}",
                           fix="add it to VARIANTS in benchmarks/recipes.py (docs/extending.md)")
        if not name.replace("-", "").replace("_", "").isalnum() or "-seed" in name:
            raise SfcError(f"variant name {name!r} cannot name a run's folder",
                           fix="name it with letters, digits, - and _ only, without '-seed'")


def plan(cfg: Config, args: argparse.Namespace, root: Path, methods: list[str]) -> dict[str, Job]:
    """The runs to make, by name: SFC, the baseline and ``--variants`` of each seed (pseudo masks
    and step 3 on ``--mask-seeds``), then the ablations of seed 0 and the controls, CAMs only."""
    check_variants(args.variants)
    if (args.ablations or args.gt) and 0 not in args.seeds:
        raise SfcError(f"--ablations and --gt run on seed 0 only, which --seeds ({' '.join(map(str, args.seeds))}) "
                       "does not name", fix="add 0 to --seeds, or drop --ablations / --gt")
    mask_seeds = args.seeds if args.mask_seeds is None else args.mask_seeds
    step3 = [cfg.refine.method] if args.step3 is None else [m for m in args.step3 if m != "none"]
    jobs: dict[str, Job] = {}

    def add(variant: str, seed: int, masks: bool) -> None:   # the first asked of a name is kept
        jobs.setdefault(run_name(variant, seed), Job(variant, seed, seeded(cfg, VARIANTS[variant], seed),
                                                     root / run_name(variant, seed),
                                                     methods if masks else [], step3 if masks else []))
    for seed in args.seeds:
        for variant in ("sfc", "baseline", *args.variants):
            add(variant, seed, seed in mask_seeds)
    for name in (ablation_variants() if args.ablations else []):
        add(name, 0, False)
    for seed in (args.seeds if args.control else []):
        add("baseline-control", seed, False)
    if args.gt:
        jobs["sfc"] = jobs["sfc"]._replace(step3=[*jobs["sfc"].step3, "gt"])
    return jobs


def ablation_variants() -> list[str]:
    """The variants ``--ablations`` runs: SFC with one component off (``config.ABLATIONS``)."""
    return [f"sfc-{name}" for name in ABLATIONS if name != "baseline"]


def finished_seeds(root: Path, seeds: list[int], variants: list[str]) -> list[int]:
    """The seeds whose runs of every one of ``variants`` have their CAM evaluation."""
    return [seed for seed in seeds
            if all(RunDir(root / run_name(v, seed)).cam_eval_json.is_file() for v in variants)]


def report_rows(jobs: dict[str, Job], by_name: dict[str, dict], datasets: dict) -> list[dict[str, Any]]:
    """``figures`` of every run: baseline and SFC per seed (``datasets``: by seed), then the
    others in the plan's order; each compared with its seed's baseline where it has its data."""
    baselines = {seed: jobs[run_name("baseline", seed)] for seed in datasets}
    first = [run_name(v, seed) for seed in datasets for v in ("baseline", "sfc")]
    rows = []
    for name in [*first, *(name for name in jobs if name not in first)]:
        job, base = jobs[name], baselines[jobs[name].seed]
        same_data = job.cfg.data == base.cfg.data
        base_cam = CamEval(by_name[run_name("baseline", job.seed)]["cams + eval"]) \
            if same_data and job.variant != "baseline" else None
        dataset = datasets[job.seed] if same_data else open_dataset(job.cfg.data)
        rows.append({"seed": job.seed, **figures(job.variant, job.run_dir, by_name[name], dataset, base_cam)})
    return rows


def arguments() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="synthetic-paper")
    p.add_argument("--seeds", nargs="+", default=["development"],
                   help=f"integers, or a seed set: {', '.join(f'{k} = {v}' for k, v in SEED_SETS.items())} "
                        "(default: development)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="pseudo-mask methods (default: the preset's refine.method, then the other one)")
    p.add_argument("--mask-seeds", type=int, nargs="*", default=None,
                   help="seeds that also get pseudo masks and step 3 (default: all; the others: CAMs only)")
    p.add_argument("--step3", nargs="*", default=None,
                   help="masks step 3 trains on for --mask-seeds (default: the preset's refine.method; none: no step 3)")
    p.add_argument("--variants", nargs="+", default=[], metavar="NAME",
                   help=f"also these registered variants on every seed, as SFC and the baseline (VARIANTS: "
                        f"{', '.join(VARIANTS)})")
    p.add_argument("--control", action="store_true", help="also the no-shared-part baseline of each seed")
    p.add_argument("--ablations", action="store_true",
                   help="also SFC with each component off (config.ABLATIONS), seed 0, CAMs only")
    p.add_argument("--gt", action="store_true", help="also step 3 on ground truth, seed 0 (the upper bound)")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override the preset for every run (repeatable), e.g. train.epochs=4")
    p.add_argument("--finished-only", action="store_true",
                   help="report only the seeds whose runs are finished (their CAMs evaluated), read from their "
                        "evaluation files: nothing runs (pseudo masks and step 3 where evaluated)")
    p.add_argument("--table", default=None, metavar="FILE.md",
                   help="also write the seeds' summary (benchmarks.seed_table) to FILE.md and FILE.json")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--out", default="runs/recipes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    cfg = Config.from_preset(args.preset).override(parse_overrides(args.set))
    planned = args.seeds = parse_seeds(args.seeds)
    methods = args.methods or [cfg.refine.method, *({"irn", "crf"} - {cfg.refine.method})]
    root = Path(args.out) / args.preset
    if args.finished_only:
        check_variants(args.variants)
        args.seeds = finished_seeds(root, planned, ["sfc", "baseline", *args.variants,
                                                    *(["baseline-control"] if args.control else [])])
    costs: list[dict] = []
    wall, cpu = time.perf_counter(), cpu_seconds()
    datasets = {seed: open_dataset(seeded(cfg, {}, seed).data, generate=True) for seed in args.seeds}   # before the runs
    costs.append({"stage": "datasets", "runs": len(args.seeds), "wall_s": time.perf_counter() - wall,
                  "cpu_s": cpu_seconds() - cpu})
    wall, cpu = time.perf_counter(), cpu_seconds()
    cfg = resolve_backbone_weights(cfg)        # the one-off pretraining (cached), before the runs
    costs.append({"stage": "pretraining", "runs": 1, "wall_s": time.perf_counter() - wall,
                  "cpu_s": cpu_seconds() - cpu})
    jobs = plan(cfg, args, root, methods) if args.seeds else {}
    started = time.perf_counter()
    if args.finished_only:
        results = [stored_results(job.run_dir, job.methods, job.step3) for job in jobs.values()]
    else:
        results = run_side_by_side([partial(run_chain, job.cfg, job.run_dir, job.methods, job.step3)
                                    for job in jobs.values()], args.processes)
    elapsed = time.perf_counter() - started
    rows = report_rows(jobs, dict(zip(jobs, results)), datasets)
    costs += [{"stage": r["stage"], "run": r["run"], "wall_s": r["wall_s"], "cpu_s": r["cpu_s"]}
              for r in summed(read_stage_times(root))]
    seeds_summary = seed_table.summary(rows)
    report = {"preset": args.preset, "overrides": args.set or [], "seeds": args.seeds, "planned seeds": planned,
              "methods": methods, "rows": rows, "summary": seeds_summary, "costs": costs,
              "side_by_side_wall_s": elapsed, "processes": args.processes,
              "machine": {**machine_info(torch.device("cpu")),
                          "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
                          "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA")}}
    root.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) / f"recipes-{args.preset}.json"
    out.write_text(json.dumps(report, indent=1, default=str))
    table = seed_table.markdown(seeds_summary, planned)
    if args.table:
        atomic_write_text(args.table, table)
        atomic_write_json(Path(args.table).with_suffix(".json"), json.loads(json.dumps(seeds_summary, default=str)))
    print(plots.table_markdown([{k: v for k, v in r.items() if k != "sweep edges"} for r in rows], digits=1))
    print()
    print(table)
    print(plots.table_markdown(costs, digits=1))
    print(f"\nside by side ({args.processes} processes): {elapsed:.0f} s wall; report: {out}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except SfcError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
