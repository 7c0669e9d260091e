"""check_dataset / the `check` verb: every problem of a tree reported, not only the first."""
from __future__ import annotations

import json

import numpy as np
from fixtures import VOC_LISTS, write_palette_png, write_voc_tree
from PIL import Image

from sfc_core.cli import main
from sfc_core.data import SegmentationDataset
from sfc_core.data.check import check_dataset


def _damage(root):
    """Five bad files among the train list's images; returns {image id: expected problem}."""
    images, masks = root / "JPEGImages", root / "SegmentationClass"
    data = (images / "2007_000001.jpg").read_bytes()
    (images / "2007_000001.jpg").write_bytes(data[: len(data) // 2])                 # truncated
    (images / "2007_000002.jpg").write_bytes(b"<html>not a jpeg</html>")              # not an image
    write_palette_png(np.zeros((21, 30), np.uint8), masks / "2007_000003.png")        # 30x21, image 20x30
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(masks / "2007_000004.png")  # RGB
    write_palette_png(np.full((20, 30), 9, np.uint8), masks / "2007_000005.png")      # class 9 of 3
    return {"2007_000001": "cannot read image", "2007_000002": "cannot read image",
            "2007_000003": "mask is 30x21 but its image is 20x30", "2007_000004": "PIL mode RGB",
            "2007_000005": "class index 9"}


def test_every_problem_is_reported_with_its_file(tmp_path):
    root = write_voc_tree(tmp_path)
    expected = _damage(root)
    problems = check_dataset(SegmentationDataset(root), ["train", "val"], workers=2, progress=False)
    found = {p.image_id: p for p in problems}
    assert len(problems) == len(expected) and found.keys() == expected.keys()
    for image_id, text in expected.items():
        assert text in found[image_id].problem and found[image_id].list_name == "train"
    assert found["2007_000001"].path.endswith("JPEGImages/2007_000001.jpg")
    assert found["2007_000003"].path.endswith("SegmentationClass/2007_000003.png")


def test_bad_lists_and_labels_are_reported_and_the_rest_still_checked(tmp_path):
    root = write_voc_tree(tmp_path, labels="json")
    lists = root / "ImageSets" / "Segmentation"
    (lists / "twice.txt").write_text("2007_000006\n2007_000006\n")
    (lists / "missing.txt").write_text("2007_000009\n")
    labels = json.loads((root / "cls_labels.json").read_text())
    del labels["2007_000006"]
    (root / "cls_labels.json").write_text(json.dumps(labels))
    (root / "SegmentationClass" / "2007_000002.png").unlink()
    problems = check_dataset(SegmentationDataset(root), ["twice", "missing", "train", "val", "nope"],
                             progress=False)
    text = [str(p) for p in problems]
    assert [p.list_name for p in problems if p.image_id is None] == ["twice", "missing", "nope"]
    assert any("names 2007_000006 twice" in t for t in text)
    assert any("1 missing image" in t for t in text) and any("no image list 'nope'" in t for t in text)
    assert any("mask file is missing" in t and "2007_000002" in t for t in text)
    assert any("label file has no entry for image 2007_000006" in t for t in text)
    assert len(problems) == 5


def test_the_verb_prints_every_problem_then_one_error(tmp_path, capsys):
    root = write_voc_tree(tmp_path)
    (root / "JPEGImages" / "2007_000003.jpg").write_bytes(b"")
    (root / "JPEGImages" / "2007_000006.jpg").write_bytes(b"x")
    args = ["check", "--preset", "voc", "--data-root", str(root), "--lists", "train,val"]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out.count("cannot read image") == 2 and "2007_000006.jpg" in out
    assert err.count("error:") == 1 and "2 problem(s)" in err and "Traceback" not in err


def test_the_verb_passes_a_sound_tree(tmp_path, capsys):
    root = write_voc_tree(tmp_path)
    assert main(["check", "--preset", "voc", "--data-root", str(root), "--lists", "train,val"]) == 0
    n = len(VOC_LISTS["train"]) + len(VOC_LISTS["val"])
    assert f"all {n} image(s)" in capsys.readouterr().out
