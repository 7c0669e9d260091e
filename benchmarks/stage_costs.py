"""The cost of every stage of a finished run root, from its runs' ``stage_times.jsonl``.

    bash run_all.sh                                     # the default run
    python -m benchmarks.stage_costs runs/synthetic-paper

Prints one markdown table: each stage of each run (the latest record of it: a stage redone by
``--force`` counts once), its wall and CPU seconds, then the CPU seconds per kind of stage
summed over the runs, and the total (``sfc_core.orchestration.stage_times``). Runs side by side
overlap, so wall seconds do not add up to the run's time; CPU seconds do add up to its work.
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


def latest(rows: list[dict]) -> list[dict]:
    """The last record of each (run, stage), in the order those records were written."""
    last: dict[tuple[str, str], dict] = {}
    for row in rows:
        last.pop((row["run"], row["stage"]), None)
        last[(row["run"], row["stage"])] = row
    return list(last.values())


def cost_tables(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(per run and stage, per kind of stage with the total) rows for ``table_markdown``."""
    rows = latest(rows)
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
