"""The figures of many seeds of ``benchmarks.recipes`` as one table: per seed, mean ± sd and
min..max, and how many seeds meet each target of docs/synthetic.md ("Targets").

Every number comes from the rows ``recipes.figures`` made (one "baseline" and one "sfc" row per
seed, a "baseline-control" row where ``--control`` ran, one row per other variant and seed it
ran on: ``--variants``, the ablations); nothing is read twice or kept here.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

KINDS = ("classifier", "prototype", "fused")

# (figure, what it reads from a seed's rows); b: the baseline's row, s: SFC's, c: the control's
Reading = Callable[[dict, dict, dict | None], float | None]
FIGURES: list[tuple[str, Reading]] = [
    *[(f"baseline {k} CAM mIoU % (eval)", lambda b, s, c, k=k: b[f"{k} CAM mIoU % (eval)"]) for k in KINDS],
    *[(f"SFC {k} CAM mIoU % (eval)", lambda b, s, c, k=k: s[f"{k} CAM mIoU % (eval)"]) for k in KINDS],
    ("baseline classifier CAM mIoU % (held-out)", lambda b, s, c: b["mIoU % (held-out)"]),
    ("SFC fused CAM mIoU % (held-out)", lambda b, s, c: s["mIoU % (held-out)"]),
    ("gain: SFC fused - baseline classifier", lambda b, s, c: s["fused CAM mIoU % (eval)"]
     - b["classifier CAM mIoU % (eval)"]),
    ("of it, prototypes at inference: baseline prototype - baseline classifier",
     lambda b, s, c: b["prototype CAM mIoU % (eval)"] - b["classifier CAM mIoU % (eval)"]),
    ("of it, fusion at inference: baseline fused - baseline classifier",
     lambda b, s, c: b["fused CAM mIoU % (eval)"] - b["classifier CAM mIoU % (eval)"]),
    ("SFC's training: SFC fused - baseline fused", lambda b, s, c: s["fused CAM mIoU % (eval)"]
     - b["fused CAM mIoU % (eval)"]),
    ("SFC's training: SFC prototype - baseline prototype", lambda b, s, c: s["prototype CAM mIoU % (eval)"]
     - b["prototype CAM mIoU % (eval)"]),
    ("SFC fused - SFC prototype", lambda b, s, c: s["fused CAM mIoU % (eval)"] - s["prototype CAM mIoU % (eval)"]),
    ("baseline fused - baseline prototype", lambda b, s, c: b["fused CAM mIoU % (eval)"]
     - b["prototype CAM mIoU % (eval)"]),
    *[(f"baseline {k} Spearman", lambda b, s, c, k=k: b[f"Spearman {k}"]) for k in KINDS],
    *[(f"SFC {k} Spearman", lambda b, s, c, k=k: s[f"Spearman {k}"]) for k in KINDS],
    ("chosen lambda: baseline fused", lambda b, s, c: b["lambda (fused)"]),
    ("chosen lambda: SFC fused", lambda b, s, c: s["lambda (fused)"]),
    *[(f"chosen threshold: baseline {k}", lambda b, s, c, k=k: b.get(f"threshold ({k})")) for k in KINDS],
    *[(f"chosen threshold: SFC {k}", lambda b, s, c, k=k: s.get(f"threshold ({k})")) for k in KINDS],
    ("baseline head-3 / tail-3 ratio: head", lambda b, s, c: b["head ratio"]),
    ("baseline head-3 / tail-3 ratio: tail", lambda b, s, c: b["tail ratio"]),
    ("SFC head-3 ratio (fused)", lambda b, s, c: s["head ratio"]),
    ("SFC tail-3 ratio (fused)", lambda b, s, c: s["tail ratio"]),
    ("baseline heads' shared-part recall", lambda b, s, c: b["heads' shared-part recall"]),
    ("control heads' shared-part recall", lambda b, s, c: c and c["heads' shared-part recall"]),
    ("control classifier Spearman", lambda b, s, c: c and c["Spearman"]),
    ("baseline non-head px lost to head %", lambda b, s, c: b["non-head lost to head %"]),
    ("SFC non-head px lost to head %", lambda b, s, c: s["non-head lost to head %"]),
    ("control non-head px lost to head %", lambda b, s, c: c and c["non-head lost to head %"]),
    ("SFC IoU gain, most frequent third", lambda b, s, c: s["head-third IoU gain"]),
    ("SFC IoU gain, least frequent third", lambda b, s, c: s["tail-third IoU gain"]),
]

# (target, scope, test) as docs/synthetic.md ("Targets") states them
TARGETS: list[tuple[str, str, Callable[[dict, dict, dict | None], bool | None]]] = [
    ("Spearman >= 0.6", "symptom (baseline)", lambda b, s, c: b["Spearman"] >= 0.6),
    ("head-3 ratio > 1.1", "symptom (baseline)", lambda b, s, c: b["head ratio"] > 1.1),
    ("tail-3 ratio < 0.9", "symptom (baseline)", lambda b, s, c: b["tail ratio"] < 0.9),
    ("heads' shared-part recall >= 0.7", "mechanism (baseline)",
     lambda b, s, c: b["heads' shared-part recall"] >= 0.7),
    ("non-head px lost to head >= 15%", "mechanism (baseline)", lambda b, s, c: b["non-head lost to head %"] >= 15),
    ("lost to head >= 10 points above the control", "mechanism (baseline)",
     lambda b, s, c: None if c is None else b["non-head lost to head %"] - c["non-head lost to head %"] >= 10),
    ("heads' shared-part recall >= 0.1 above the control", "mechanism (baseline)",
     lambda b, s, c: None if c is None else b["heads' shared-part recall"] - c["heads' shared-part recall"] >= 0.1),
    ("CAM mIoU gain >= 3 points", "fix (SFC fused vs baseline classifier)",
     lambda b, s, c: s["fused CAM mIoU % (eval)"] - b["classifier CAM mIoU % (eval)"] >= 3),
    ("Spearman lower", "fix", lambda b, s, c: s["Spearman"] < b["Spearman"]),
    ("least frequent third gains more than the most frequent", "fix",
     lambda b, s, c: s["tail-third IoU gain"] > s["head-third IoU gain"]),
    ("fewer non-head px lost to head", "fix", lambda b, s, c: s["non-head lost to head %"] < b["non-head lost to head %"]),
]


OWN_ROWS = ("baseline", "sfc", "baseline-control")   # what FIGURES reads; any other variant: variant_figures


def by_seed(rows: list[dict[str, Any]]) -> dict[int, tuple[dict, dict, dict | None]]:
    """(baseline, SFC, control or None) rows of each seed that has both a baseline and an SFC row."""
    out: dict[int, dict[str, dict]] = {}
    for row in rows:
        out.setdefault(row["seed"], {})[row["variant"]] = row
    return {seed: (v["baseline"], v["sfc"], v.get("baseline-control"))
            for seed, v in out.items() if "baseline" in v and "sfc" in v}


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def spread(values: list[float]) -> dict[str, Any]:
    """n, mean, sd (ddof 1), min, max of the finite values."""
    array = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if not len(array):
        return {"n": 0, "mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan}
    return {"n": len(array), "mean": float(array.mean()), "sd": float(array.std(ddof=1)) if len(array) > 1 else math.nan,
            "min": float(array.min()), "max": float(array.max())}


def extra_figures(rows: list[dict[str, Any]]) -> list[str]:
    """The pseudo-mask and step-3 columns some rows have (seeds given ``--mask-seeds``)."""
    return [key for key in dict.fromkeys(k for row in rows for k in row)
            if key.endswith("pseudo-mask mIoU %") or key.startswith("step 3 (")]


def variant_figures(rows: list[dict[str, Any]], seeds: dict[int, tuple]) -> dict[str, dict[int, float]]:
    """Each other variant's figures on the seeds it ran (``--variants``, the ablations): its three
    CAMs, its CAM (``"CAM"``: classifier for "baseline...", else fused) against the seed's
    baseline classifier CAM and SFC's fused CAM, the same split as SFC's (what its training adds:
    its prototype and fused CAMs against the baseline's own; its fusion against its prototype
    CAM), its Spearman, its pseudo masks and step 3."""
    out: dict[str, dict[int, float]] = {}
    for row in rows:
        variant, seed, kind = row["variant"], row["seed"], row.get("CAM", "fused")
        if variant in OWN_ROWS or seed not in seeds:
            continue
        mine, base = row[f"{kind} CAM mIoU % (eval)"], seeds[seed][0]
        values = {**{f"{variant} {k} CAM mIoU % (eval)": row[f"{k} CAM mIoU % (eval)"] for k in KINDS},
                  f"gain: {variant} {kind} - baseline classifier": mine - base["classifier CAM mIoU % (eval)"],
                  **{f"{variant}'s training: {variant} {k} - baseline {k}": row[f"{k} CAM mIoU % (eval)"]
                     - base[f"{k} CAM mIoU % (eval)"] for k in ("prototype", "fused")},
                  f"{variant} fused - {variant} prototype": row["fused CAM mIoU % (eval)"]
                  - row["prototype CAM mIoU % (eval)"],
                  f"{variant} {kind} - SFC fused": mine - seeds[seed][1]["fused CAM mIoU % (eval)"],
                  f"{variant} {kind} Spearman": row["Spearman"],
                  **{f"{variant} {key}": row[key] for key in extra_figures(rows) if key in row}}
        for name, value in values.items():
            out.setdefault(name, {})[seed] = _number(value)
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure: its value on each seed and their spread; per target: the seeds meeting it."""
    seeds = by_seed(rows)
    figures = {name: {seed: _number(read(*trio)) for seed, trio in seeds.items()} for name, read in FIGURES}
    for key in extra_figures(rows):
        for variant, index in (("baseline", 0), ("SFC", 1)):
            figures[f"{variant} {key}"] = {seed: _number(trio[index].get(key)) for seed, trio in seeds.items()}
    figures |= variant_figures(rows, seeds)
    targets = []
    for target, scope, test in TARGETS:
        results = {seed: test(*trio) for seed, trio in seeds.items()}
        measured = [seed for seed, ok in results.items() if ok is not None]
        targets.append({"target": target, "scope": scope, "seeds measured": len(measured),
                        "seeds meeting it": sum(bool(results[seed]) for seed in measured),
                        "missed on seeds": [seed for seed in measured if not results[seed]]})
    fused_not_above = {variant: [seed for seed, trio in seeds.items() if trio[index]["fused CAM mIoU % (eval)"]
                                 <= trio[index]["prototype CAM mIoU % (eval)"]]
                       for variant, index in (("baseline", 0), ("SFC", 1))}
    return {"seeds": list(seeds), "figures": {name: {"per seed": values, **spread(list(values.values()))}
                                              for name, values in figures.items()},
            "targets": targets, "fused CAM not above the prototype CAM": fused_not_above,
            "sweep edges": edges_by_note(rows)}


def edges_by_note(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[int]]]:
    """Each sweep-edge note (``plots.sweep_edges``) -> variant -> the seeds whose run has it."""
    out: dict[str, dict[str, list[int]]] = {}
    for row in rows:
        for note in row.get("sweep edges") or []:
            out.setdefault(note, {}).setdefault(row["variant"], []).append(row["seed"])
    return out


def _cell(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def markdown(result: dict[str, Any], planned: list[int]) -> str:
    """The summary as Markdown: which seeds, one table of figures, one of targets, the sweep edges."""
    seeds = result["seeds"]
    missing = [seed for seed in planned if seed not in seeds]
    lines = [f"Seeds: {len(seeds)} of the {len(planned)} planned ({' '.join(map(str, seeds)) or 'none'})"
             + (f"; not finished: {' '.join(map(str, missing))}" if missing else "") + ".", "",
             "| figure | mean ± sd | min..max | seeds | " + " | ".join(map(str, seeds)) + " |",
             "| --- | --- | --- | --- |" + " --- |" * len(seeds)]
    for name, fig in result["figures"].items():
        digits = 3 if "threshold" in name else 2 if any(
            word in name for word in ("Spearman", "recall", "ratio", "lambda")) else 1
        values = " | ".join(_cell(fig["per seed"].get(seed, math.nan), digits) for seed in seeds)
        lines.append(f"| {name} | {_cell(fig['mean'], digits)} ± {_cell(fig['sd'], digits)} | "
                     f"{_cell(fig['min'], digits)}..{_cell(fig['max'], digits)} | {fig['n']} | {values} |")
    lines += ["", "| target | scope | seeds meeting it | missed on seeds |", "| --- | --- | --- | --- |"]
    for t in result["targets"]:
        met = f"{t['seeds meeting it']} of {t['seeds measured']}" if t["seeds measured"] else "not measured"
        lines.append(f"| {t['target']} | {t['scope']} | {met} | {' '.join(map(str, t['missed on seeds'])) or '-'} |")
    lines += ["", "Fused CAM not above the prototype CAM alone (the lambda sweep's limit): " + "; ".join(
        f"{variant} on {len(found)} of {len(seeds)} seeds" + (f" ({' '.join(map(str, found))})" if found else "")
        for variant, found in result["fused CAM not above the prototype CAM"].items()) + "."]
    edges = result["sweep edges"]
    lines += ["", "Chosen settings at an end of their sweep" + (":" if edges else ": none.")]
    lines += [f"- {note}: " + "; ".join(f"{variant} on seeds {' '.join(map(str, found))}"
                                        for variant, found in by_variant.items())
              for note, by_variant in edges.items()]
    return "\n".join(lines) + "\n"
