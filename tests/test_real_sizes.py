"""Every stage of the `voc` preset at its real sizes, on the CPU: what a GPU run will meet.

The README's VOC route (prepare, train, cams, eval-cams, refine, eval-seg, segment) on fake
VOC 2012 + SBD archives of 500x375 images, with the preset's networks (torchvision ResNet-50 for
SFC and IRN, DeepLab-v2 ResNet-101 for step 3; random weights), crops (512 with the bank, IRN's
512, step 3's 321), scales (CAMs at 4 scales + flip, step 3's MSC and its evaluation scales + flip)
and thresholds; only the counts are cut: 2 SFC steps, one IRN step, one step-3 step, and the
batches (``REDUCED``). Each stage runs as its own process, so its peak resident memory is its
own (``os.wait4``'s ``ru_maxrss``); ``-s`` prints the table BENCHMARKS.md quotes:

    flock /tmp/sfc-cpu.lock .venv/bin/python -m pytest tests/test_real_sizes.py -s
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest
from PIL import Image

from tests import download_fixtures as fake

SIZE = (375, 500)                    # (H, W): most VOC images
SCALE = 15                           # the fixture's 24x32 boxes, drawn 15x larger
# The batches cut to fit 2 cores and 24 GiB in CI time (the preset's in the comments).
REDUCED = {
    "train.batch_size": 4,           # voc: 16 loader images ...
    "train.bank_draws": 1,           # ... + 4 bank draws (the bank itself as the preset's)
    "refine.irn_batch_size": 5,      # voc: 32; the fake train_aug has 5 images: one step
    "segment.batch_size": 2,         # voc: 10 per update, 5 per pass (accumulation 2 kept)
}
COUNTS = {"train.max_steps": 2, "train.val_every": 0, "train.checkpoint_every": 2, "refine.irn_epochs": 1,
          "segment.iterations": 1, "segment.checkpoint_every": 1,
          "model.backbone_weights": "none", "refine.irn_backbone_weights": "none",
          "segment.backbone_weights": "none", "runtime.device": "cpu", "runtime.num_workers": 0}


def large_fixtures(monkeypatch) -> None:
    """The fake downloads' tables at 500x375: every box SCALE times larger."""
    monkeypatch.setattr(fake, "H", SIZE[0])
    monkeypatch.setattr(fake, "W", SIZE[1])
    for table in ("VOC_SEG", "SBD_SEG"):
        monkeypatch.setattr(fake, table, {i: [(c, *(SCALE * v for v in box)) for c, *box in boxes]
                                          for i, boxes in getattr(fake, table).items()})


def run_stage(argv: list[str]) -> dict:
    """``python -m sfc_core ARGV`` in its own process: seconds and peak resident MiB."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "sfc_core", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, output[-3000:]
    return {"stage": argv[0], "seconds": time.perf_counter() - start, "peak_rss_mib": usage.ru_maxrss / 1024,
            "output": output}


@pytest.mark.slow
def test_voc_preset_at_real_sizes_on_the_cpu(tmp_path, monkeypatch):
    large_fixtures(monkeypatch)
    voc_tar = fake.make_tar(fake.make_voc_download(tmp_path / "dl" / "voc").parent,
                            tmp_path / "VOCtrainval_11-May-2012.tar", "VOCdevkit")
    sbd_tgz = fake.make_tar(fake.make_sbd_download(tmp_path / "dl" / "sbd").parent, tmp_path / "benchmark.tgz",
                            "benchmark_RELEASE")
    md5 = {p: hashlib.md5(p.read_bytes()).hexdigest() for p in (voc_tar, sbd_tgz)}
    data, sfc = tmp_path / "data" / "voc", tmp_path / "runs" / "voc"
    settings = [arg for key, value in {**REDUCED, **COUNTS}.items() for arg in ("--set", f"{key}={value}")]
    stages = [
        ["prepare", "voc", "--voc", str(voc_tar), "--sbd", str(sbd_tgz), "--out", str(data),
         "--voc-md5", md5[voc_tar], "--sbd-md5", md5[sbd_tgz], "--processes", "1"],
        ["train", "--preset", "voc", "--data-root", str(data), "--out", str(sfc), *settings],
        ["cams", "--run", str(sfc)], ["eval-cams", "--run", str(sfc)], ["refine", "--run", str(sfc)],
        ["eval-seg", "--run", str(sfc)], ["segment", "--run", str(sfc), "--masks", "irn"],
    ]
    rows = [run_stage(argv) for argv in stages]
    with Image.open(next((data / "JPEGImages").glob("*.jpg"))) as image:
        assert image.size == (SIZE[1], SIZE[0])
    cfg = json.loads((sfc / "config.json").read_text())
    assert (cfg["model"]["backbone"], cfg["refine"]["irn_backbone"]) == ("resnet50", "resnet50")
    assert (cfg["data"]["crop_size"], cfg["refine"]["irn_crop_size"], cfg["segment"]["crop_size"]) == (512, 512, 321)
    assert cfg["cams"]["scales"] == [1.0, 0.5, 1.5, 2.0] and cfg["cams"]["flip"]
    assert cfg["segment"]["network"] == "deeplabv2_resnet101"
    final = json.loads((sfc / "segment" / "irn" / "final_eval.json").read_text())
    assert final["steps"] == 1 and final["num_images"] == 2
    assert "DeepLab-v2 ResNet-101" in rows[-1]["output"]
    print("\n| stage | seconds | peak RSS (MiB) |\n| --- | --- | --- |")
    for row in rows:
        print(f"| {row['stage']} | {row['seconds']:.0f} | {row['peak_rss_mib']:,.0f} |")
    print(f"| all | {sum(row['seconds'] for row in rows):.0f} | |")
