"""Each failure of issue 18 ends in one `error:` message, exit code 2, no traceback and no
half-written output (the end-to-end side of test_config, test_check, test_errors, test_run_lock)."""
from __future__ import annotations

import pytest
import torch
from fixtures import write_voc_tree

from sfc_core.cli import main


def _fails_cleanly(argv: list[str], capfd, *expected: str) -> str:
    """main(argv) exits 2 with one error message holding ``expected``; returns stderr."""
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err and "Caught" not in err, err
    assert all(text in err for text in expected), err
    return err


def _leftovers(folder) -> list:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name == ".lock"]


@pytest.mark.parametrize("setting, allowed", [("train.batch_size=0", "a value >= 1"),
                                              ("data.crop_size=0", "a value >= 32"),
                                              ("train.epochs=0", "a value >= 1"),
                                              ("runtime.device=gpu0", "auto, cpu, cuda or cuda:N")])
def test_a_bad_value_stops_train_before_anything_is_written(tmp_path, capfd, setting, allowed):
    out = tmp_path / "run"
    _fails_cleanly(["train", "--preset", "synthetic-smoke", "--data-root", str(tmp_path / "data"),
                    "--out", str(out), "--set", setting], capfd, setting.split("=")[0], allowed)
    assert not out.exists() and not (tmp_path / "data").exists()


def test_an_image_unreadable_in_a_dataloader_worker_is_one_message(tmp_path, capfd):
    root = write_voc_tree(tmp_path / "tree")
    image = root / "JPEGImages" / "2007_000003.jpg"
    image.write_bytes(image.read_bytes()[:100])
    out = tmp_path / "run"
    err = _fails_cleanly(["train", "--preset", "synthetic-smoke", "--data-root", str(root), "--out", str(out),
                          "--set", "data.dataset=voc", "--set", "data.train_list=train",
                          "--set", "train.batch_size=2", "--set", "runtime.num_workers=1"],
                         capfd, "error: cannot read image", f"file: {image}", "fix:  ")
    assert len(err[err.index("error:"):].strip().splitlines()) == 3 and not _leftovers(out)


def test_a_list_naming_an_image_twice_is_one_message(tmp_path, capfd):
    root = write_voc_tree(tmp_path)
    path = root / "ImageSets" / "Segmentation" / "train.txt"
    path.write_text(path.read_text() + "2007_000001\n")
    _fails_cleanly(["stats", "--preset", "voc", "--data-root", str(root), "--list", "train"], capfd,
                   "'train' names 2007_000001 twice", str(path))


@pytest.mark.slow
def test_a_bad_device_for_cams_is_one_message_and_writes_nothing(trained_run, capfd):
    before = sorted(trained_run.root.rglob("*"))
    _fails_cleanly(["cams", "--run", str(trained_run.root), "--device", "gpu0"], capfd,
                   "--device='gpu0' is not a device", "give --device as auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        _fails_cleanly(["cams", "--run", str(trained_run.root), "--device", "cuda"], capfd,
                       "no usable CUDA GPU", "use --device cpu")
    assert sorted(trained_run.root.rglob("*")) == before
