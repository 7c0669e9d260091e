"""`prepare voc` and `prepare coco` on tiny fake downloads in the official layouts."""
from __future__ import annotations

import hashlib
import json
import os
import signal

import numpy as np
import pytest
from PIL import Image

from sfc_core.cli import main
from sfc_core.data.dataset import VOC_CLASSES, SegmentationDataset
from sfc_core.data.prepare import check_disjoint, prepare_voc, read_sbd_mask, trainaug_ids
from sfc_core.data.prepare_coco import annotation_mask, class_mask, prepare_coco
from sfc_core.errors import SfcError
from tests.download_fixtures import (
    SBD_SEG,
    TRAIN_AUG,
    VOC_LISTS,
    VOC_SEG,
    make_coco_download,
    make_sbd_download,
    make_tar,
    make_voc_download,
    mask_of,
    write_sbd_mat,
)


@pytest.fixture
def downloads(tmp_path):
    return make_voc_download(tmp_path / "voc"), make_sbd_download(tmp_path / "sbd")


def read_png(path):
    with Image.open(path) as image:
        assert image.mode == "P"
        return np.asarray(image)


def test_trainaug_is_voc_train_and_sbd_minus_voc_val():
    assert trainaug_ids(["a", "b"], ["c"], ["b", "c", "d"], ["e", "c"]) == ["a", "b", "d", "e"]
    check_disjoint(["a", "b"], ["c"], "x")
    with pytest.raises(SfcError, match="both train_aug and val"):
        check_disjoint(["a", "c"], ["c"], "x")


def test_sbd_mat_reads_gtcls_segmentation(tmp_path):
    mask = mask_of(SBD_SEG["2008_000006"], border=False)
    write_sbd_mat(tmp_path / "a.mat", mask)
    np.testing.assert_array_equal(read_sbd_mask(tmp_path / "a.mat"), mask)


def test_prepare_voc_writes_masks_lists_labels_and_manifest(downloads, tmp_path, capsys):
    voc, sbd = downloads
    out = tmp_path / "prepared"
    manifest = prepare_voc(voc, sbd, out, processes=2)
    lists = out / "ImageSets" / "Segmentation"
    assert (lists / "train_aug.txt").read_text().split() == TRAIN_AUG
    assert (lists / "train.txt").read_text().split() == VOC_LISTS["train"]
    assert (lists / "val.txt").read_text().split() == VOC_LISTS["val"]
    every_id = sorted(set(TRAIN_AUG) | set(VOC_LISTS["val"]))
    for image_id in every_id:   # VOC's own mask (with its 255 border) wins over SBD's
        own = image_id in VOC_SEG
        boxes = VOC_SEG[image_id] if own else SBD_SEG[image_id]
        np.testing.assert_array_equal(read_png(out / "SegmentationClassAug" / f"{image_id}.png"),
                                      mask_of(boxes, border=own))
    labels = json.loads((out / "cls_labels.json").read_text())
    assert labels["2008_000002"] == [7, 11] and labels["2008_000006"] == [8, 14]
    assert labels["2008_000005"] == [6, 14]      # from the XML: its mask has no person (XML_EXTRA)
    assert sorted(labels) == every_id
    assert manifest["counts"] == {"train_aug": 5, "train": 2, "val": 2}
    assert manifest["mask_sources"] == {"voc": 4, "sbd": 3}
    assert manifest["class_counts"]["train_aug"]["person"] == 3     # 000001 (VOC), 000006 (SBD), 000005 (XML)
    assert manifest["inputs"]["labels"]["differ_from_masks"] == [
        {"id": "2008_000005", "xml_only": ["person"], "mask_only": []}]
    assert json.loads((out / "prepare_manifest.json").read_text())["counts"] == manifest["counts"]
    printed = capsys.readouterr().out
    assert "train_aug: 5 images, the official downloads give 10,582 (-10,577)" in printed
    assert "1 image(s) whose XML labels differ from their mask's classes" in printed
    assert "DIFFERS" in printed
    dataset = SegmentationDataset(out)      # the kit reads it: images through the link, labels
    assert dataset.ids("train_aug") == TRAIN_AUG
    np.testing.assert_array_equal(dataset.label("2008_000005")[[6]], [1.0])


def test_xml_labels_are_the_references_rule(tmp_path):
    """Every <name> that is a VOC class, difficult objects included, body parts left out; the
    class counts, and so the distribution coefficients, come from these labels."""
    from sfc_core.data.prepare import xml_classes
    from tests.fixtures import voc_annotation_xml

    path = tmp_path / "a.xml"
    path.write_text(voc_annotation_xml("a", 24, 32, [("person", 0, 5, 0, 5, False, ["head", "hand"]),
                                                     ("dog", 0, 5, 0, 5, True, []), ("person", 1, 4, 1, 4, False, [])]))
    assert xml_classes(path) == [11, 14]
    path.write_text("<annotation><object><name>dog</name>")
    with pytest.raises(SfcError, match="cannot read the annotation") as error:
        xml_classes(path)
    assert error.value.path == path


def test_voc_counts_for_the_coefficients_come_from_the_xml_labels(downloads, tmp_path):
    from sfc_core.data.stats import coefficient_inputs

    voc, sbd = downloads
    out = tmp_path / "prepared"
    prepare_voc(voc, sbd, out)
    dataset = SegmentationDataset(out, labels_file=out / "cls_labels.json")
    counts, _, extra = coefficient_inputs(dataset, "train_aug", "voc", 16, 4)
    person = list(VOC_CLASSES).index("person")
    assert counts[person] == 3 and extra == 396.0      # the mask-derived count would be 2


def test_prepare_voc_resumes_and_keeps_finished_masks(downloads, tmp_path):
    voc, sbd = downloads
    out = tmp_path / "prepared"
    prepare_voc(voc, sbd, out)
    (out / "SegmentationClassAug" / "2008_000005.png").unlink()
    again = prepare_voc(voc, sbd, out)
    assert again["mask_sources"] == {"kept": 6, "sbd": 1}
    assert not list(out.rglob("*.tmp"))


def test_prepare_voc_from_archives_checks_the_checksum(downloads, tmp_path, capsys):
    voc, sbd = downloads
    voc_tar = make_tar(voc.parent, tmp_path / "VOCtrainval_11-May-2012.tar", "VOCdevkit")
    sbd_tgz = make_tar(sbd.parent, tmp_path / "benchmark.tgz", "benchmark_RELEASE")
    out = tmp_path / "prepared"
    rc = main(["prepare", "voc", "--voc", str(voc_tar), "--sbd", str(sbd_tgz), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "differs from the published MD5 of VOCtrainval_11-May-2012.tar" in err
    assert str(voc_tar) in err and "--voc-md5" in err and "Traceback" not in err
    assert not (out / "SegmentationClassAug").exists() and not (out / "extracted").exists()
    md5 = {p: hashlib.md5(p.read_bytes()).hexdigest() for p in (voc_tar, sbd_tgz)}
    rc = main(["prepare", "voc", "--voc", str(voc_tar), "--sbd", str(sbd_tgz), "--out", str(out),
               "--voc-md5", md5[voc_tar], "--sbd-md5", md5[sbd_tgz], "--processes", "1"])
    assert rc == 0
    manifest = json.loads((out / "prepare_manifest.json").read_text())
    assert [a["md5"] for a in manifest["inputs"]["archives"]] == [md5[voc_tar], md5[sbd_tgz]]
    assert (out / "ImageSets/Segmentation/train_aug.txt").read_text().split() == TRAIN_AUG


def _archive(path, members):
    """A tar at ``path`` of (TarInfo fields, bytes) pairs: regular files, links, devices."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for fields, data in members:
            info = tarfile.TarInfo(fields["name"])
            for key, value in fields.items():
                setattr(info, key, value)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


GOOD = [({"name": "VOCdevkit/VOC2012/JPEGImages/a.jpg"}, b"jpeg"),
        ({"name": "VOCdevkit/VOC2012/JPEGImages/b.jpg", "type": b"2", "linkname": "a.jpg"}, b"")]
BAD = {"absolute path": {"name": "/JPEGImages/x.jpg"},
       "dot-dot": {"name": "VOCdevkit/../../JPEGImages/x.jpg"},
       "link out of the tree": {"name": "VOCdevkit/JPEGImages/x.jpg", "type": b"2", "linkname": "../../../etc/passwd"},
       "absolute link": {"name": "VOCdevkit/JPEGImages/x.jpg", "type": b"2", "linkname": "/etc/passwd"},
       "hard link out": {"name": "VOCdevkit/JPEGImages/x.jpg", "type": b"1", "linkname": "../x.jpg"},
       "device": {"name": "VOCdevkit/JPEGImages/x.jpg", "type": b"3"},
       "fifo": {"name": "VOCdevkit/JPEGImages/x.jpg", "type": b"6"}}


@pytest.mark.parametrize("has_filter", [True, False], ids=["data filter", "own checks"])
def test_extraction_refuses_unsafe_members_with_or_without_the_data_filter(tmp_path, monkeypatch, has_filter):
    """Pythons before 3.12 (and before the 3.8.17 / ... / 3.11.4 patch releases) have no "data"
    filter, and their extract() takes no filter argument: the kit's own checks stand in."""
    import tarfile

    from sfc_core.data.prepare import extract_archive

    if not has_filter:
        monkeypatch.delattr(tarfile, "data_filter")
        extract = tarfile.TarFile.extract

        def old_extract(self, member, path="", **kwargs):
            assert "filter" not in kwargs, "this Python's extract() takes no filter"
            return extract(self, member, path, filter="fully_trusted")
        monkeypatch.setattr(tarfile.TarFile, "extract", old_extract)
    good = extract_archive(_archive(tmp_path / "good.tar", GOOD), "voc", tmp_path / "out")
    assert (good / "VOCdevkit/VOC2012/JPEGImages/b.jpg").read_bytes() == b"jpeg"
    for k, (what, fields) in enumerate(BAD.items()):
        archive = _archive(tmp_path / f"bad{k}.tar", [*GOOD, (fields, b"")])
        if has_filter and what == "absolute path":        # the data filter strips the leading /
            inside = extract_archive(archive, "voc", tmp_path / f"bad{k}")
            assert (inside / "JPEGImages/x.jpg").is_file()
            continue
        with pytest.raises(SfcError) as error:
            extract_archive(archive, "voc", tmp_path / f"bad{k}")
        assert error.value.path == archive and "extract it yourself" in error.value.fix, what
        assert not (tmp_path / f"bad{k}" / "extracted" / "voc").exists(), what


def _expect_error(capsys, argv, *needles):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("error:") == 1 and "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_prepare_voc_bad_inputs_name_the_file_and_write_nothing(downloads, tmp_path, capsys):
    voc, sbd = downloads
    out = tmp_path / "prepared"
    base = ["prepare", "voc", "--voc", str(voc), "--sbd", str(sbd), "--out", str(out), "--processes", "1"]
    (sbd / "cls").rename(sbd / "cls_moved")
    _expect_error(capsys, base, "SBD folder has no cls/", "benchmark_RELEASE/dataset")
    (sbd / "cls_moved").rename(sbd / "cls")
    import scipy.io
    scipy.io.savemat(sbd / "cls" / "2008_000007.mat", {"GTinst": {"Segmentation": np.zeros((2, 2))}})
    _expect_error(capsys, base, "no GTcls.Segmentation", "2008_000007.mat", "cls/")
    assert not (out / "ImageSets").exists() and not (out / "cls_labels.json").exists()
    assert not (out / "SegmentationClassAug").exists()      # the masks made so far wait in a hidden folder
    (voc / "SegmentationClass").rename(voc / "moved")
    _expect_error(capsys, base, "has no SegmentationClass/", "VOCtrainval_11-May-2012.tar")
    (voc / "moved").rename(voc / "SegmentationClass")
    (voc / "Annotations" / "2008_000006.xml").unlink()
    _expect_error(capsys, base, "cannot read the annotation", "2008_000006.xml", "Annotations/")
    (voc / "Annotations").rename(voc / "moved")
    _expect_error(capsys, base, "has no Annotations/", "VOCtrainval_11-May-2012.tar")


def test_missing_train_aug_points_to_prepare_voc(downloads, tmp_path):
    voc, _ = downloads
    with pytest.raises(SfcError, match="prepare voc"):
        SegmentationDataset(voc).ids("train_aug")


# -- COCO ----------------------------------------------------------------------------------------

def test_annotation_mask_agrees_with_pycocotools_ann_to_mask(tmp_path):
    from pycocotools.coco import COCO

    coco_root = make_coco_download(tmp_path / "coco")
    for split in ("train2014", "val2014"):
        api = COCO(str(coco_root / "annotations" / f"instances_{split}.json"))
        for ann in api.dataset["annotations"]:
            image = api.imgs[ann["image_id"]]
            np.testing.assert_array_equal(annotation_mask(ann["segmentation"], image["height"], image["width"]),
                                          api.annToMask(ann).astype(bool))


def test_overlap_rule_smaller_instance_wins_and_crowd_only_on_free_pixels():
    big = (1, 0, 100.0, [[0, 0, 10, 0, 10, 10, 0, 10]])
    small = (2, 0, 4.0, [[2, 2, 4, 2, 4, 4, 2, 4]])
    crowd = (3, 1, 50.0, [[0, 0, 12, 0, 12, 12, 0, 12]])
    for order in ([small, big, crowd], [crowd, big, small]):
        mask = class_mask(order, 12, 12)
        assert mask[3, 3] == 2 and mask[6, 6] == 1 and mask[11, 11] == 255


def test_prepare_coco_writes_the_kit_layout(tmp_path, capsys):
    coco_root = make_coco_download(tmp_path / "coco")
    out = tmp_path / "prepared"
    manifest = prepare_coco(coco_root, out, processes=1)
    assert (out / "ImageSets" / "train.txt").read_text().split() == \
        ["COCO_train2014_000000000009", "COCO_train2014_000000000025"]
    assert (out / "ImageSets" / "val.txt").read_text().split() == ["COCO_val2014_000000000042"]
    assert manifest["inputs"]["left_out_without_objects"] == {"train": ["COCO_train2014_000000000030"], "val": []}
    mask = read_png(out / "SegmentationClass" / "train2014" / "COCO_train2014_000000000009.png")
    assert mask[10, 12] == 42 and mask[18, 20] == 61      # cup on the table, table
    assert mask[1, 1] == 255 and mask[3, 5] == 61         # crowd outside the table, table under the crowd
    labels = json.loads((out / "cls_labels.json").read_text())
    assert labels == {"COCO_train2014_000000000009": [41, 60], "COCO_train2014_000000000025": [16],
                      "COCO_val2014_000000000042": [23]}
    from sfc_core.data.coco import CocoDataset
    assert CocoDataset(out).read_image("COCO_val2014_000000000042").shape == (24, 32, 3)
    assert "left out of the lists" in capsys.readouterr().out


def test_prepare_coco_bad_inputs(tmp_path, capsys):
    coco_root = make_coco_download(tmp_path / "coco")
    out = tmp_path / "prepared"
    base = ["prepare", "coco", "--coco", str(coco_root), "--out", str(out), "--processes", "1"]
    path = coco_root / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    path.rename(path.with_suffix(".moved"))
    _expect_error(capsys, base, "annotation file is missing", "instances_val2014.json", "annotations_trainval2014.zip")
    data["categories"][0]["name"] = "unicorn"
    path.write_text(json.dumps(data))
    _expect_error(capsys, base, "unknown COCO category 1 'unicorn'", "instances_val2014.json")
    assert not out.exists()


def test_coco_flat_mask_layout_by_configuration(tmp_path):
    from sfc_core.config import Config
    from sfc_core.data import open_dataset

    coco_root = make_coco_download(tmp_path / "coco")
    out = tmp_path / "prepared"
    prepare_coco(coco_root, out)
    flat = out / "SegmentationClass"
    for split in ("train2014", "val2014"):       # the common mask release: one folder of PNGs
        for png in (flat / split).iterdir():
            png.rename(flat / png.name)
    cfg = Config.from_preset("coco", {"data.root": str(out), "data.coco_mask_layout": "flat"})
    dataset = open_dataset(cfg.data)
    assert dataset.read_mask("COCO_val2014_000000000042").max() == 24


def test_prepare_voc_in_place_writes_into_the_voc_tree(downloads):
    voc, sbd = downloads
    prepare_voc(voc, sbd, voc)
    assert not (voc / "JPEGImages").is_symlink()
    assert (voc / "ImageSets/Segmentation/train.txt").read_text().split() == VOC_LISTS["train"]
    assert SegmentationDataset(voc).ids("train_aug") == TRAIN_AUG


def test_prepare_checks_what_it_wrote_and_names_a_bad_image(downloads, tmp_path, capsys):
    voc, sbd = downloads
    base = ["prepare", "voc", "--voc", str(voc), "--sbd", str(sbd), "--processes", "1"]
    assert main(base + ["--out", str(tmp_path / "good")]) == 0
    assert "every image and mask of train_aug, train, val decodes" in capsys.readouterr().out
    image = voc / "JPEGImages" / f"{VOC_LISTS['val'][0]}.jpg"
    image.write_bytes(image.read_bytes()[:100])                 # a truncated download
    rc = main(base + ["--out", str(tmp_path / "bad")])
    captured = capsys.readouterr()
    assert rc == 2 and captured.err.count("error:") == 1 and "1 problem(s)" in captured.err
    assert image.name in captured.out and "Traceback" not in captured.err


def _killed_worker(job: tuple) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dataset", ["voc", "coco"])
def test_a_mask_worker_killed_is_one_error_naming_the_rerun(downloads, tmp_path, monkeypatch, dataset):
    """prepare's masks go through sfc_core.pool: a killed worker ends prepare promptly."""
    from sfc_core import pool
    from sfc_core.data import prepare
    from sfc_core.data import prepare_coco as coco

    for module in (prepare, coco):
        monkeypatch.setattr(module, "pool_map", lambda task, *args, **kwargs: pool.pool_map(_killed_worker, *args, **kwargs))
    with pytest.raises(SfcError, match="a worker process died") as caught:
        if dataset == "voc":
            prepare_voc(*downloads, tmp_path / "out", processes=2)
        else:
            prepare_coco(make_coco_download(tmp_path / "coco"), tmp_path / "out", processes=2)
    assert caught.value.fix.startswith("run the same command again (finished masks are kept)")


def test_prepare_and_prepare_coco_do_not_import_each_other():
    """What both write lives in data/layout.py, which both import (issue 30: no import cycles)."""
    from test_layers import MODULES, imported_modules

    voc, coco = "sfc_core.data.prepare", "sfc_core.data.prepare_coco"
    assert coco in imported_modules(voc, MODULES[voc])          # the verb dispatches to it
    assert voc not in imported_modules(coco, MODULES[coco])
