"""What each stage of a run cost: wall and CPU seconds, appended to ``<run>/stage_times.jsonl``.

    with recorded(run_dir, "train"):        # pipeline.trained, evaluated, pseudo_masks, segmented
        train(cfg, run_dir)
    rows = read_stage_times("runs/synthetic-paper")   # every run's records, oldest first

CPU seconds count this process and its ended children; ``python -m benchmarks.stage_costs``
prints them as BENCHMARKS.md's table.
"""
from __future__ import annotations

import json
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

FILE = "stage_times.jsonl"


def cpu_seconds() -> float:
    """User + system seconds of this process and of its children that have ended."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@contextmanager
def recorded(run_dir: str | Path, stage: str) -> Iterator[None]:
    """Time the block; append its record to ``run_dir/stage_times.jsonl`` once it finishes."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    yield
    record = {"stage": stage, "wall_s": round(time.perf_counter() - wall, 3),
              "cpu_s": round(cpu_seconds() - cpu, 3), "torch_threads": torch.get_num_threads(),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = Path(run_dir) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def read_stage_times(run_root: str | Path) -> list[dict[str, Any]]:
    """Every record under ``run_root`` (one level of run directories), each with its ``run``."""
    rows = []
    for path in sorted(Path(run_root).glob(f"*/{FILE}")):
        for line in path.read_text().splitlines():
            if line.strip():
                rows.append({"run": path.parent.name, **json.loads(line)})
    return rows
