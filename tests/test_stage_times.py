"""Stage cost records (orchestration.stage_times) and their table (benchmarks.stage_costs)."""
from __future__ import annotations

import json
import time

import pytest

from benchmarks.stage_costs import cost_tables, stage_kind
from sfc_core.orchestration.stage_times import cpu_seconds, read_stage_times, recorded


def _busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_finished_stage_records_its_wall_and_cpu_seconds(tmp_path):
    with recorded(tmp_path / "sfc", "train"):
        _busy(0.2)
    with pytest.raises(RuntimeError):
        with recorded(tmp_path / "sfc", "cams (train)"):
            raise RuntimeError("interrupted")          # an unfinished stage records nothing
    rows = read_stage_times(tmp_path)
    assert [(r["run"], r["stage"]) for r in rows] == [("sfc", "train")]
    assert 0.2 <= rows[0]["cpu_s"] < 1.0 and rows[0]["wall_s"] >= 0.2 * 0.9


def test_cpu_seconds_counts_finished_children():
    import subprocess
    import sys

    before = cpu_seconds()
    subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                    "while time.process_time() < end: pass"], check=True)
    assert cpu_seconds() - before >= 0.3


def test_the_table_adds_up_each_stage_and_sums_by_kind(tmp_path):
    records = {"sfc": [("train", 10.0), ("cams (train)", 2.0), ("train", 0.5)],     # made, then reused
               "baseline": [("train", 3.0), ("cams (val)", 1.0)]}
    for run, stages in records.items():
        (tmp_path / run).mkdir()
        (tmp_path / run / "stage_times.jsonl").write_text("".join(
            json.dumps({"stage": s, "wall_s": c, "cpu_s": c, "torch_threads": 1}) + "\n" for s, c in stages))
    per_stage, per_kind = cost_tables(read_stage_times(tmp_path))
    assert [(r["run"], r["stage"], r["CPU s"]) for r in per_stage] == [
        ("baseline", "train", 3.0), ("baseline", "cams (val)", 1.0), ("sfc", "train", 10.5), ("sfc", "cams (train)", 2.0)]
    assert {r["stage"]: r["CPU s"] for r in per_kind} == {"train": 13.5, "cams": 3.0, "total": 16.5}
    assert stage_kind("refine irn") == "refine irn"
