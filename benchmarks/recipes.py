"""Baseline and SFC of one synthetic preset over several seeds, every stage, with its cost.

    python -m benchmarks.recipes --preset synthetic-paper --seeds 0 1 2 --out runs/recipes
    python -m benchmarks.recipes --set train.epochs=4 --out runs/recipes-4-epochs   # a variant

For each seed: the dataset (generator seed + s), then baseline and SFC (training seed + s, as
``05_evaluation`` shifts them) side by side: training, CAMs of the evaluation and held-out
lists and their scores, pseudo masks of the training list by each ``--methods`` and their
scores, and step 3 on the masks of the preset's ``refine.method`` (for ``--mask-seeds``; the
other seeds stop after their CAMs); ``--control`` adds the
no-shared-part baseline of seed 0 (``01_long_tail_analysis``'s), ``--ablations`` SFC of seed 0
with each component off (``config.ABLATIONS``, as ``05_evaluation``'s full run), CAMs only. Each stage's wall and CPU
seconds are read from the runs' ``stage_times.jsonl`` (``orchestration.stage_times``).

Writes ``<out>/recipes-<preset>.json`` and prints one markdown table of the figures
(``docs/synthetic.md``) and one of the stage costs (``BENCHMARKS.md``). Runs go to
``<out>/<preset>/<variant>[-seed<s>]``; finished stages are reused, as in the notebooks,
so a second call only re-reads (its costs are then those of re-reading).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench import machine_info
from benchmarks.stage_costs import summed
from sfc_core.analysis import plots
from sfc_core.config import ABLATIONS, Config, parse_overrides
from sfc_core.data import open_dataset
from sfc_core.evaluations import CamEval, FinalEval, SegEval
from sfc_core.model.pretrained import resolve_backbone_weights
from sfc_core.orchestration import pipeline
from sfc_core.orchestration.parallel import run_side_by_side
from sfc_core.orchestration.stage_times import cpu_seconds, read_stage_times


def run_chain(cfg: Config, run_dir: Path, methods: list[str], step3: list[str]) -> dict[str, dict]:
    """Every stage of one run in this process, one after the other (each records its cost in
    the run's stage_times.jsonl); their results by stage."""
    pipeline.trained(cfg, run_dir)
    out = {"cams + eval": pipeline.evaluated(run_dir).data}
    out |= {f"pseudo masks {m}": pipeline.pseudo_masks(run_dir, m).data for m in methods}
    out |= {f"step 3 on {m}": pipeline.segmented(run_dir, m).data for m in step3}
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
           **{f"{k} CAM mIoU % (eval)": 100 * (cam.miou(k) or 0.0) for k in ("classifier", "prototype", "fused")},
           "mIoU % (held-out)": 100 * cam.heldout.miou(kind) if cam.heldout else None,
           "Spearman": plots.as_float(calib.spearman),
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="synthetic-paper")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=None,
                   help="pseudo-mask methods (default: the preset's refine.method, then the other one)")
    p.add_argument("--mask-seeds", type=int, nargs="*", default=None,
                   help="seeds that also get pseudo masks and step 3 (default: all; the others: CAMs only)")
    p.add_argument("--step3", nargs="*", default=None,
                   help="masks step 3 trains on for --mask-seeds (default: the preset's refine.method; none: no step 3)")
    p.add_argument("--control", action="store_true", help="also the no-shared-part baseline of seed 0")
    p.add_argument("--ablations", action="store_true",
                   help="also SFC with each component off (config.ABLATIONS), seed 0, CAMs only")
    p.add_argument("--gt", action="store_true", help="also step 3 on ground truth, seed 0 (the upper bound)")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override the preset for every run (repeatable), e.g. train.epochs=4")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--out", default="runs/recipes")
    args = p.parse_args(argv)

    cfg = Config.from_preset(args.preset).override(parse_overrides(args.set))
    methods = args.methods or [cfg.refine.method, *({"irn", "crf"} - {cfg.refine.method})]
    root = Path(args.out) / args.preset
    costs: list[dict] = []
    wall, cpu = time.perf_counter(), cpu_seconds()
    datasets = {seed: open_dataset(seeded(cfg, {}, seed).data) for seed in args.seeds}
    costs.append({"stage": "datasets", "runs": len(args.seeds), "wall_s": time.perf_counter() - wall,
                  "cpu_s": cpu_seconds() - cpu})
    wall, cpu = time.perf_counter(), cpu_seconds()
    cfg = resolve_backbone_weights(cfg)        # the one-off pretraining (cached), before the runs
    costs.append({"stage": "pretraining", "runs": 1, "wall_s": time.perf_counter() - wall,
                  "cpu_s": cpu_seconds() - cpu})

    jobs: dict[str, tuple[Config, Path, list[str], list[str]]] = {}
    mask_seeds = args.seeds if args.mask_seeds is None else args.mask_seeds
    step3 = [cfg.refine.method] if args.step3 is None else [m for m in args.step3 if m != "none"]
    for seed in args.seeds:
        suffix = "" if seed == 0 else f"-seed{seed}"
        masks = seed in mask_seeds
        for variant, overrides in (("sfc", {}), ("baseline", ABLATIONS["baseline"])):
            jobs[f"{variant}{suffix}"] = (seeded(cfg, overrides, seed), root / f"{variant}{suffix}",
                                          methods if masks else [], step3 if masks else [])
    if args.control and 0 in args.seeds:
        jobs["baseline-control"] = (seeded(cfg, {**ABLATIONS["baseline"], "data.shared_parts": False}, 0),
                                    root / "baseline-control", [], [])
    ablations = [name for name in ABLATIONS if name != "baseline"] if args.ablations and 0 in args.seeds else []
    for name in ablations:
        jobs[f"sfc-{name}"] = (seeded(cfg, ABLATIONS[name], 0), root / f"sfc-{name}", [], [])
    if args.gt and 0 in args.seeds:
        jobs["sfc"] = (*jobs["sfc"][:3], [*jobs["sfc"][3], "gt"])
    started = time.perf_counter()
    results = run_side_by_side([partial(run_chain, *job) for job in jobs.values()], args.processes)
    elapsed = time.perf_counter() - started
    by_name = dict(zip(jobs, results))

    rows = []
    for seed in args.seeds:
        suffix = "" if seed == 0 else f"-seed{seed}"
        base = CamEval(by_name[f"baseline{suffix}"]["cams + eval"])
        for variant in ("baseline", "sfc"):
            name = f"{variant}{suffix}"
            rows.append({"seed": seed, **figures(variant, jobs[name][1], by_name[name], datasets[seed],
                                                 base if variant == "sfc" else None)})
    base0 = CamEval(by_name["baseline"]["cams + eval"]) if 0 in args.seeds else None
    for name in ablations:
        rows.append({"seed": 0, **figures(f"sfc-{name}", jobs[f"sfc-{name}"][1], by_name[f"sfc-{name}"],
                                          datasets[0], base0)})
    if "baseline-control" in by_name:
        control_data = open_dataset(jobs["baseline-control"][0].data)
        rows.append({"seed": 0, **figures("baseline-control", jobs["baseline-control"][1],
                                          by_name["baseline-control"], control_data, None)})
    costs += [{"stage": r["stage"], "run": r["run"], "wall_s": r["wall_s"], "cpu_s": r["cpu_s"]}
              for r in summed(read_stage_times(root))]

    report = {"preset": args.preset, "overrides": args.set or [], "seeds": args.seeds, "methods": methods, "rows": rows, "costs": costs,
              "side_by_side_wall_s": elapsed, "processes": args.processes,
              "machine": {**machine_info(torch.device("cpu")),
                          "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
                          "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA")}}
    root.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) / f"recipes-{args.preset}.json"
    out.write_text(json.dumps(report, indent=1, default=str))
    print(plots.table_markdown(rows, digits=1))
    print()
    print(plots.table_markdown(costs, digits=1))
    print(f"\nside by side ({args.processes} processes): {elapsed:.0f} s wall; report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
