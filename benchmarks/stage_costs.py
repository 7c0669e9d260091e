"""The cost of every stage of a finished run root, from its runs' ``stage_times.jsonl``.

    bash run_all.sh                                     # the default run
    python -m benchmarks.stage_costs runs/synthetic-paper

Prints two markdown tables: each stage of each run, its wall and CPU seconds summed over its
records (the call that did the work and later calls that reused it), then the CPU seconds per kind
of stage and the total. Runs side by side overlap: wall seconds do not add up, CPU seconds do.
"""
from __future__ import annotations

import argparse
import re

import pandas as pd

from sfc_core.analysis.plots import table_markdown
from sfc_core.orchestration.stage_times import read_stage_times


def stage_kind(stage: str) -> str:
    """"cams (train)" -> "cams"; "refine irn" stays: the kinds a cost table groups by."""
    return re.sub(r" \(.*\)$", "", stage)


def summed(rows: list[dict]) -> list[dict]:
    """One record per (run, stage), in the order they first ran, with the wall and CPU seconds
    of all its records added up."""
    if not rows:
        return []
    frame = pd.DataFrame(rows)
    how = {c: "sum" if c in ("wall_s", "cpu_s") else "first" for c in frame.columns if c not in ("run", "stage")}
    return frame.groupby(["run", "stage"], sort=False, as_index=False).agg(how).to_dict("records")


def cost_tables(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(per run and stage, per kind of stage with the total) rows for ``table_markdown``."""
    frame = pd.DataFrame(summed(rows))
    per_stage = frame.rename(columns={"wall_s": "wall s", "cpu_s": "CPU s", "torch_threads": "threads"})
    kinds = frame.groupby(frame["stage"].map(stage_kind), sort=False)["cpu_s"].sum()
    kinds["total"] = kinds.sum()
    per_kind = pd.DataFrame({"stage": kinds.index, "CPU s": kinds.values, "share %": 100 * kinds.values / kinds["total"]})
    return per_stage[["run", "stage", "wall s", "CPU s", "threads"]].to_dict("records"), per_kind.to_dict("records")


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
