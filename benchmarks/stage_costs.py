"""The cost of every stage of a finished run root, from its runs' ``stage_times.jsonl``.

    bash run_all.sh                                     # the default run
    python -m benchmarks.stage_costs runs/synthetic-paper

Prints one markdown table: each stage of each run, its wall and CPU seconds summed over its
records (the call that did the work, and every later call that found it done and reused it:
the cost of one ``run_all.sh`` when the root was made by one), then the CPU seconds per kind of
stage summed over the runs, and the total (``sfc_core.orchestration.stage_times``). Runs side
by side overlap, so wall seconds do not add up to the run's time; CPU seconds add up to its work.
"""
from __future__ import annotations

import argparse
import re
from collections import defaultdict

from sfc_core.analysis.plots import table_markdown
from sfc_core.orchestration.stage_times import read_stage_times


def stage_kind(stage: str) -> str:
    """"cams (train)" -> "cams"; "refine irn" stays: the kinds a cost table groups by."""
    return re.sub(r" \(.*\)$", "", stage)


def summed(rows: list[dict]) -> list[dict]:
    """One record per (run, stage), in the order they first ran, with the wall and CPU seconds
    of all its records added up."""
    out: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (row["run"], row["stage"])
        if key in out:
            out[key] = {**out[key], "wall_s": out[key]["wall_s"] + row["wall_s"],
                        "cpu_s": out[key]["cpu_s"] + row["cpu_s"]}
        else:
            out[key] = dict(row)
    return list(out.values())


def cost_tables(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(per run and stage, per kind of stage with the total) rows for ``table_markdown``."""
    rows = summed(rows)
    per_stage = [{"run": r["run"], "stage": r["stage"], "wall s": r["wall_s"], "CPU s": r["cpu_s"],
                  "threads": r["torch_threads"]} for r in rows]
    kinds: dict[str, float] = defaultdict(float)
    for r in rows:
        kinds[stage_kind(r["stage"])] += r["cpu_s"]
    total = sum(kinds.values())
    per_kind = [{"stage": k, "CPU s": v, "share %": 100 * v / total} for k, v in kinds.items()]
    per_kind.append({"stage": "total", "CPU s": total, "share %": 100.0})
    return per_stage, per_kind


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_root")
    args = p.parse_args(argv)
    rows = read_stage_times(args.run_root)
    if not rows:
        print(f"no stage_times.jsonl under {args.run_root}: run its stages first (bash run_all.sh)")
        return 1
    per_stage, per_kind = cost_tables(rows)
    print(table_markdown(per_stage, digits=1))
    print()
    print(table_markdown(per_kind, digits=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
