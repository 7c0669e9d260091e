"""Every bad dataset input ends in an SfcError that names the file and says how to fix it."""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from fixtures import write_palette_png, write_voc_tree

from sfc_core.cli import main
from sfc_core.config import DataConfig
from sfc_core.data import SegmentationDataset, open_dataset
from sfc_core.errors import SfcError


@contextlib.contextmanager
def raises_naming(path, match: str):
    """pytest.raises(SfcError) whose message matches `match`, names `path` and has a fix."""
    with pytest.raises(SfcError, match=match) as info:
        yield info
    assert str(info.value.path) == str(path) and str(path) in str(info.value) and info.value.fix


def test_missing_root(tmp_path):
    with raises_naming(tmp_path / "nowhere", "does not exist"):
        SegmentationDataset(tmp_path / "nowhere")


def test_root_without_the_expected_folders(tmp_path):
    root = write_voc_tree(tmp_path)
    (root / "ImageSets" / "Segmentation" / "train.txt").unlink()
    (root / "ImageSets" / "Segmentation" / "val.txt").unlink()
    (root / "ImageSets" / "Segmentation").rmdir()
    with raises_naming(root, "ImageSets/Segmentation") as info:
        SegmentationDataset(root)
    assert "JPEGImages" not in info.value.problem


def test_missing_list_file(tmp_path):
    ds = SegmentationDataset(write_voc_tree(tmp_path))
    with raises_naming(ds.list_dir / "trainaug.txt", "no image list 'trainaug'") as info:
        ds.ids("trainaug")
    assert "train, val" in info.value.fix


def test_list_naming_missing_images(tmp_path):
    root = write_voc_tree(tmp_path)
    (root / "JPEGImages" / "2007_000002.jpg").unlink()
    (root / "JPEGImages" / "2007_000004.jpg").unlink()
    ds = SegmentationDataset(root)
    with raises_naming(ds.list_path("train"), "2 missing image.*2007_000002, 2007_000004"):
        ds.ids("train")
    assert ds.ids("val") == ["2007_000006"]


def test_list_naming_an_image_twice(tmp_path):
    root = write_voc_tree(tmp_path)
    path = root / "ImageSets" / "Segmentation" / "train.txt"
    ids = path.read_text().split()
    path.write_text("\n".join([*ids, ids[3], ids[1], ids[3]]) + "\n")
    ds = SegmentationDataset(root)
    with raises_naming(path, f"'train' names {ids[3]} twice \\(entries 4 and 6\\); 3 repeated entries"):
        ds.ids("train")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_unreadable_jpeg(tmp_path, damage):
    root = write_voc_tree(tmp_path)
    path = root / "JPEGImages" / "2007_000001.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a jpeg at all")
    ds = SegmentationDataset(root)
    with raises_naming(path, "cannot read image") as info:
        ds.read_image("2007_000001")
    assert "re-extract" in info.value.fix


def test_mask_of_another_size_than_its_image(tmp_path):
    root = write_voc_tree(tmp_path)
    path = root / "SegmentationClass" / "2007_000001.png"
    write_palette_png(np.zeros((21, 30), dtype=np.uint8), path)
    ds = SegmentationDataset(root)
    with raises_naming(path, "mask is 30x21 but its image is 30x20"):
        ds.read_mask("2007_000001")


def test_mask_with_a_class_index_beyond_the_class_list(tmp_path):
    root = write_voc_tree(tmp_path)
    path = root / "SegmentationClass" / "2007_000001.png"
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[5, 5] = 7
    write_palette_png(mask, path)
    with raises_naming(path, "class index 7 but the dataset has 3 classes"):
        SegmentationDataset(root).label("2007_000001")


def test_label_file_missing_an_image(tmp_path):
    root = write_voc_tree(tmp_path, labels="json")
    path = root / "cls_labels.json"
    table = json.loads(path.read_text())
    del table["2007_000003"]
    path.write_text(json.dumps(table))
    ds = SegmentationDataset(root)
    with raises_naming(path, "no entry for 1 image.*2007_000003"):
        ds.labels("train")
    with raises_naming(path, "no entry for image 2007_000003"):
        ds.label("2007_000003")


def test_label_file_with_the_wrong_class_count(tmp_path):
    root = write_voc_tree(tmp_path, labels="npy")
    path = root / "cls_labels.npy"
    np.save(path, {"2007_000001": np.zeros(4, dtype=np.float32)})
    with raises_naming(path, "has 4 entries but the dataset has 3 classes"):
        SegmentationDataset(root, labels_file=path, allow_pickle=True).label("2007_000001")
    json_path = root / "cls_labels.json"
    json_path.write_text(json.dumps({"2007_000001": [0, 3]}))
    with raises_naming(json_path, "class index 3 but the dataset has 3 classes"):
        SegmentationDataset(root).label("2007_000001")


def test_pickled_label_file_needs_an_explicit_opt_in(tmp_path):
    root = write_voc_tree(tmp_path, labels="npy")
    with raises_naming(root / "cls_labels.npy", "can execute code") as info:
        SegmentationDataset(root, labels_file=root / "cls_labels.npy").label("2007_000001")
    assert "--set data.allow_pickled_labels=true" in info.value.fix


@pytest.mark.parametrize("names,match", [("cat\ndog\ncat\n", "repeats cat"), ("cat\n\ndog\n", "empty line")])
def test_bad_class_names(tmp_path, names, match):
    root = write_voc_tree(tmp_path)
    (root / "class_names.txt").write_text(names)
    with raises_naming(root / "class_names.txt", match):
        SegmentationDataset(root)


def test_unknown_dataset_kind(tmp_path):
    with pytest.raises(SfcError, match="unknown dataset kind 'pascal'") as info:
        open_dataset(DataConfig(dataset="pascal", root=str(tmp_path)))
    assert "voc, coco, synthetic" in info.value.fix


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["stats", "--preset", "voc", "--data-root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in err and "Traceback" not in err


def test_missing_label_file(tmp_path):
    root = write_voc_tree(tmp_path)
    with raises_naming(root / "cls_labels.npy", "label file does not exist"):
        SegmentationDataset(root, labels_file=root / "cls_labels.npy")
