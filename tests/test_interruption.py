"""kill -9 at deterministic points of train, cams, refine and segment, then the same command:
the final outputs equal an uninterrupted run's bit for bit.

The kill points come from SFC_KILL_AT (sfc_core.io): the N-th training step, or the moment a
file's data is in its temporary file, before the rename (a kill during a checkpoint write).
Every process runs one torch thread, so the reference and the interrupted chain compute alike.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sfc_core.io import KILL_AT_ENV

REFERENCE = """
import sys
from sfc_core.cams import make_cams
from sfc_core.config import Config
from sfc_core.refine import refine
from sfc_core.segment import segment
from sfc_core.train import train
cfg = Config.from_preset("synthetic-smoke", {"data.root": sys.argv[1]})
train(cfg, sys.argv[2])
make_cams(sys.argv[2])
refine(sys.argv[2])
segment(sys.argv[2], "crf", save_predictions=True)
"""
# (kill point or None: runs to the end, extra arguments) per run of a verb, in order
KILLS = {
    "train": [("step:7", []),                        # between the checkpoints of steps 5 and 10
              ("write/last.pt:2", ["--resume"]),     # during the write of step 15's (from 5)
              (None, ["--resume"])],
    "cams": [("write/:30", []), (None, [])],          # during the 30th of 80 CAM files
    "refine": [("write/:20", []), (None, [])],        # during a worker's 20th of 80 pseudo masks
    "segment": [("write/last.pt:2", []),             # during step 4's (final) checkpoint write
                ("write/:3", []),                    # from step 2: among the held-out predictions
                (None, [])],
}
TIMING = {"images_per_second", "images_per_s", "train_images_per_s"}


def _env(kill: str | None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.pop(KILL_AT_ENV, None)
    return {**env, KILL_AT_ENV: kill} if kill else env


def _verb_args(verb: str, root: str, run: Path) -> list[str]:
    return {"train": ["train", "--preset", "synthetic-smoke", "--data-root", root, "--out", str(run)],
            "cams": ["cams", "--run", str(run)],
            "refine": ["refine", "--run", str(run)],
            "segment": ["segment", "--run", str(run), "--masks", "crf", "--save-predictions"]}[verb]


def _same(a, b) -> bool:
    """Deep equality of checkpoint contents: tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _untimed(path: Path) -> list[dict]:
    """A JSON or JSON-lines file's records without their timing fields."""
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.suffix == ".jsonl" \
        else [json.loads(path.read_text())]
    return [{k: v for k, v in record.items() if k not in TIMING} if isinstance(record, dict) else record
            for record in records]


def _assert_same_outputs(reference: Path, interrupted: Path) -> None:
    """Every file of the two runs (TensorBoard event files aside) holds the same content."""
    def files(root: Path) -> set[Path]:
        return {p.relative_to(root) for p in root.rglob("*") if p.is_file() and "tb" not in p.parts}

    assert files(interrupted) == files(reference)
    for name in sorted(files(reference)):
        a, b = reference / name, interrupted / name
        if name.suffix == ".pt":
            assert _same(torch.load(a, weights_only=True), torch.load(b, weights_only=True)), name
        elif name.suffix == ".npz":
            with np.load(a) as x, np.load(b) as y:
                assert x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files), name
        elif name.suffix in (".json", ".jsonl"):
            assert _untimed(a) == _untimed(b), name
        else:
            assert a.read_bytes() == b.read_bytes(), name


@pytest.mark.slow
def test_kill_9_then_the_same_command_gives_the_uninterrupted_outputs(smoke_config, smoke_dataset, tmp_path):
    root = smoke_config.data.root
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run([sys.executable, "-c", REFERENCE, root, str(reference)], env=_env(None), check=True,
                   capture_output=True)
    for verb, runs in KILLS.items():
        for kill, extra in runs:
            result = subprocess.run([sys.executable, "-m", "sfc_core", *_verb_args(verb, root, interrupted), *extra],
                                    env=_env(kill), capture_output=True, text=True)
            expected = -9 if kill else 0
            assert result.returncode == expected, f"{verb} {kill}: {result.stderr[-2000:]}"
            if kill and kill.startswith("write/"):      # killed mid-write: the next run cleans up
                assert any(p.name.endswith(".tmp") for p in interrupted.rglob(".*")), kill
    _assert_same_outputs(reference, interrupted)
    assert not [p for p in interrupted.rglob("*") if p.name.endswith(".tmp") or p.name == ".lock"]
