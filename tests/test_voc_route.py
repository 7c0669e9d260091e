"""The README's "Reproduce SFC on VOC" commands, end to end, on tiny fake VOC 2012 + SBD archives.

Only the documented commands run, with one documented `--config` file of sizes that fit
24x32 images and a CPU (the tiny backbone, 32 px crops, a few steps).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from sfc_core.cli import main
from tests.download_fixtures import TRAIN_AUG, make_sbd_download, make_tar, make_voc_download
from tests.fixtures import trained_model
from tests.reference_layout import reference_state

SMALL = Path(__file__).parent / "data" / "voc_route_small.txt"     # a documented --config file


README = Path(__file__).resolve().parents[1] / "README.md"


def run(*argv: str) -> None:
    """One command of the README's section (its verb appears there), which must succeed."""
    section = README.read_text().split("## Reproduce SFC on VOC")[1].split("\n## ")[0]
    assert f"python -m sfc_core {argv[0]} " in section, argv[0]
    assert main(list(argv)) == 0, argv


@pytest.mark.slow
def test_reproduce_sfc_on_voc_commands_on_fake_downloads(tmp_path, capsys):
    voc_tar = make_tar(make_voc_download(tmp_path / "dl" / "voc").parent,
                       tmp_path / "VOCtrainval_11-May-2012.tar", "VOCdevkit")
    sbd_tgz = make_tar(make_sbd_download(tmp_path / "dl" / "sbd").parent, tmp_path / "benchmark.tgz",
                       "benchmark_RELEASE")
    md5 = {p: hashlib.md5(p.read_bytes()).hexdigest() for p in (voc_tar, sbd_tgz)}
    data, sfc = str(tmp_path / "data" / "voc"), str(tmp_path / "runs" / "voc" / "sfc")

    # the fake archives are not the published ones: their checksums are passed, as a user would
    run("prepare", "voc", "--voc", str(voc_tar), "--sbd", str(sbd_tgz), "--out", data,
        "--voc-md5", md5[voc_tar], "--sbd-md5", md5[sbd_tgz], "--processes", "1")
    assert "train_aug        5 images (official: 10,582)" in capsys.readouterr().out
    run("stats", "--preset", "voc", "--data-root", data)
    assert json.loads(capsys.readouterr().out)["num_images"] == len(TRAIN_AUG)
    run("train", "--preset", "voc", "--data-root", data, "--out", sfc, "--backbone-weights", "none",
        "--config", str(SMALL))
    run("cams", "--run", sfc)
    run("eval-cams", "--run", sfc)
    run("refine", "--run", sfc)
    run("eval-seg", "--run", sfc)
    run("segment", "--run", sfc, "--masks", "irn")
    out = capsys.readouterr().out
    assert "step 3 on irn masks" in out

    # the authors' checkpoint layout, imported, serves cams and eval-cams as the kit's own run
    torch.save({"net": reference_state(trained_model(sfc))}, tmp_path / "res50_SFC.pth")
    authors = str(tmp_path / "runs" / "voc" / "authors")
    run("import-checkpoint", "--format", "sfc-reference", str(tmp_path / "res50_SFC.pth"), "--out", authors,
        "--config", str(SMALL), "--data-root", data)
    run("cams", "--run", authors)
    run("eval-cams", "--run", authors)
    mine, theirs = (json.loads((Path(r) / "cam_eval.json").read_text())["rows"]["fused"] for r in (sfc, authors))
    assert theirs["miou"] == mine["miou"]
    final = json.loads((tmp_path / "runs" / "voc" / "sfc" / "segment" / "irn" / "final_eval.json").read_text())
    assert final["list"] == "val" and final["num_images"] == 2
    assert json.loads((tmp_path / "runs" / "voc" / "sfc" / "config.json").read_text())["preset"] == "voc"
