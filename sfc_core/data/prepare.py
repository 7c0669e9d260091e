"""From the official downloads to the kit's dataset layout (verb: ``prepare``; COCO: prepare_coco.py).

    python -m sfc_core prepare voc --voc VOCtrainval_11-May-2012.tar --sbd benchmark.tgz --out data/voc

VOC 2012 trainval and SBD (folders or archives, checked against their published MD5) -> under
ROOT: a JPEGImages/ link, SegmentationClassAug/ (VOC's masks, else SBD's cls/*.mat), the lists
train_aug (VOC train + SBD train + val, minus VOC val), train and val, cls_labels.json from the
XML annotations and prepare_manifest.json. Atomic writes; a rerun keeps the masks written.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import posixpath
import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from PIL import Image
from tqdm import tqdm

from sfc_core.config import Config
from sfc_core.data import open_dataset
from sfc_core.data.check import check_dataset, raise_on_problems
from sfc_core.data.dataset import VOC_CLASSES, read_list
from sfc_core.data.layout import (
    commit_folder,
    keep_or_write,
    link_images,
    read_index_png,
    staging_path,
    write_layout,
)
from sfc_core.data.prepare_coco import prepare_coco
from sfc_core.errors import SfcError
from sfc_core.pool import pool_map

# The published MD5 of each official archive (as torchvision's VOC and SBD datasets check).
PUBLISHED_MD5 = {"voc": ("VOCtrainval_11-May-2012.tar", "6cd6e144f989b92b3379bac3b3de84fd"),
                 "sbd": ("benchmark.tgz", "82b4d87ceb2ed10f6038a1cba92111cb")}
# What the official downloads give (docs/reference.md 1.1).
VOC_EXPECTED = {"train_aug": 10582, "train": 1464, "val": 1449}
RERUN = "run the same command again (finished masks are kept), or pass --processes 1"
# What an archive must hold for the kit (members outside these are not extracted).
ARCHIVE_PARTS = {"voc": ("JPEGImages/", "SegmentationClass/", "ImageSets/Segmentation/", "Annotations/"),
                 "sbd": ("dataset/cls/", "dataset/train.txt", "dataset/val.txt")}


# -- archives --------------------------------------------------------------------------------
def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                     desc=f"md5 {path.name}", leave=False) as bar:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def extract_archive(path: Path, kind: str, out: Path) -> Path:
    """Extract the members the kit needs into ``out``/extracted/<kind> once; returns that folder."""
    final = out / "extracted" / kind
    if (final / ".complete").is_file():
        return final
    partial = out / "extracted" / f".{kind}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with tarfile.open(path) as tar:
            for member in tqdm(tar, desc=f"extract {path.name}", unit="file"):
                if any(part in member.name for part in ARCHIVE_PARTS[kind]):
                    extract_member(tar, member, partial, path)
    except (tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise SfcError(f"cannot extract the archive ({type(e).__name__}: {e})", path=path,
                       fix="download the archive again, or extract it yourself and pass the folder") from None
    (partial / ".complete").touch()
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return final


def unsafe_member(member: tarfile.TarInfo) -> str | None:
    """What is wrong with extracting ``member`` (None: nothing): an absolute path, "..", a
    device or FIFO, or a link leaving the folder (for tarfiles without the "data" filter)."""
    name = posixpath.normpath(member.name)
    if posixpath.isabs(member.name) or name == ".." or name.startswith("../"):
        return "its path leaves the extraction folder"
    if member.ischr() or member.isblk() or member.isfifo():
        return "it is a device or FIFO"
    if member.issym() or member.islnk():
        base = posixpath.dirname(name) if member.issym() else ""
        target = posixpath.normpath(posixpath.join(base, member.linkname))
        if posixpath.isabs(member.linkname) or target == ".." or target.startswith("../"):
            return f"it links to {member.linkname}, outside the extraction folder"
    return None


def extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, into: Path, archive: Path) -> None:
    """Extract one member under ``into``: tarfile's "data" filter where present, else ``unsafe_member``."""
    if hasattr(tarfile, "data_filter"):
        tar.extract(member, into, filter="data")
        return
    problem = unsafe_member(member)
    if problem:
        raise SfcError(f"the archive member {member.name!r} is not extracted: {problem}", path=archive,
                       fix="download the official archive again (this one was altered), or extract it "
                           "yourself and pass the folder")
    tar.extract(member, into)


def open_source(path: str | Path, kind: str, out: Path, expected_md5: str | None,
                flag: str) -> tuple[Path, dict | None]:
    """A download as a folder: itself, or the archive MD5-checked and extracted; and its record."""
    path = Path(path)
    if path.is_dir():
        return path, None
    name, published = PUBLISHED_MD5[kind]
    if not path.is_file() or not tarfile.is_tarfile(path):
        problem = "not a folder and not a tar archive" if path.is_file() else f"{flag} path does not exist"
        raise SfcError(problem, path=path, fix=f"give the {name} archive or its extracted folder")
    expected, actual = (expected_md5 or published).lower(), md5sum(path)
    if actual != expected:
        source = f"the MD5 given with {flag}-md5" if expected_md5 else f"the published MD5 of {name}"
        raise SfcError(f"archive checksum {actual} differs from {source} ({expected})", path=path,
                       fix=f"download {name} again (the file is truncated or another one), or pass "
                           f"{flag}-md5 HASH with the checksum of an archive you trust")
    record = {"file": str(path), "md5": actual, "checked_against": "given" if expected_md5 else "published"}
    return extract_archive(path, kind, out), record


def locate_tree(path: Path, candidates: Iterable[str], marker: str, required: Iterable[str],
                what: str, fix: str) -> Path:
    """The first of ``path``/candidate that holds ``marker``, checked to hold ``required`` too."""
    root = next((path / c for c in candidates if (path / c / marker).exists()), None)
    if root is None:
        raise SfcError(f"{what} has no {marker}/", path=path, fix=fix)
    for needed in required:
        if not (root / needed).exists():
            raise SfcError(f"{what} has no {needed}", path=root / needed, fix=fix)
    return root.resolve()


# -- VOC + SBD -------------------------------------------------------------------------------
def voc_tree(path: Path) -> Path:
    """VOCdevkit/VOC2012 inside ``path`` (path itself, VOC2012/ or VOCdevkit/VOC2012/)."""
    return locate_tree(path, (".", "VOC2012", "VOCdevkit/VOC2012"), "ImageSets/Segmentation",
                       ("JPEGImages/", "SegmentationClass/", "Annotations/", "ImageSets/Segmentation/train.txt",
                        "ImageSets/Segmentation/val.txt"), "VOC 2012 tree",
                       "point --voc at VOCdevkit/VOC2012 of the VOC 2012 trainval download "
                       "(VOCtrainval_11-May-2012.tar; the test download has no masks)")


def sbd_tree(path: Path) -> Path:
    """benchmark_RELEASE/dataset inside ``path`` (the folder that holds cls/, train.txt, val.txt)."""
    return locate_tree(path, (".", "dataset", "benchmark_RELEASE/dataset"), "cls", ("train.txt", "val.txt"),
                       "SBD folder", "point --sbd at benchmark_RELEASE/dataset of SBD's benchmark.tgz "
                       "(the folder that holds cls/, img/, train.txt and val.txt), or at benchmark.tgz")


def trainaug_ids(voc_train: list[str], voc_val: list[str], sbd_train: list[str],
                 sbd_val: list[str]) -> list[str]:
    """Sorted (VOC train + SBD train + SBD val) minus VOC val, the 10,582 of the official files."""
    return sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))


def check_disjoint(train: list[str], val: list[str], where: Path) -> None:
    shared = sorted(set(train) & set(val))
    if shared:
        raise SfcError(f"{len(shared)} image(s) are in both train_aug and val, first: {', '.join(shared[:5])}",
                       path=where, fix="rerun prepare on the official VOC lists (train_aug never holds val)")


def read_sbd_mask(path: str | Path) -> np.ndarray:
    """uint8 (H, W) class indices of an SBD ``cls/<id>.mat`` (``GTcls.Segmentation``)."""
    from scipy.io import loadmat

    fix = ("use the class masks of SBD's cls/ folder (inst/ holds instance masks, GTinst): "
           "point --sbd at benchmark_RELEASE/dataset")
    try:
        mat = loadmat(path, struct_as_record=False, squeeze_me=True)
    except (OSError, ValueError, TypeError, NotImplementedError) as e:
        raise SfcError(f"cannot read the SBD mask ({type(e).__name__}: {e})", path=path, fix=fix) from None
    if "GTcls" not in mat or not hasattr(mat["GTcls"], "Segmentation"):
        raise SfcError(f"SBD mask has no GTcls.Segmentation (variables: "
                       f"{', '.join(k for k in mat if not k.startswith('__')) or 'none'})", path=path, fix=fix)
    mask = np.asarray(mat["GTcls"].Segmentation)
    if mask.ndim != 2 or mask.max(initial=0) > len(VOC_CLASSES):
        raise SfcError(f"SBD mask is not an (H, W) map of classes 0..{len(VOC_CLASSES)}", path=path, fix=fix)
    return mask.astype(np.uint8)


def xml_classes(path: Path) -> list[int]:
    """Sorted 0-based VOC classes of an ``Annotations/<id>.xml`` as the reference's label file
    was made (IRN/PSA ``load_image_label_from_xml``): every ``<name>`` that is a VOC class."""
    try:
        names = [element.text for element in ElementTree.parse(path).iter("name")]
    except (OSError, ElementTree.ParseError) as e:
        raise SfcError(f"cannot read the annotation ({type(e).__name__}: {e})", path=path,
                       fix="use the complete VOC 2012 trainval download (Annotations/ holds 17,125 XML files)") from None
    return sorted({VOC_CLASSES.index(name) for name in names if name in VOC_CLASSES})


def label_differences(xml: dict[str, list[int]], masks: dict[str, list[int]]) -> list[dict]:
    """Every image whose XML classes differ from its mask's: id, XML-only and mask-only classes."""
    return [{"id": i, "xml_only": [VOC_CLASSES[k] for k in sorted(set(xml[i]) - set(masks[i]))],
             "mask_only": [VOC_CLASSES[k] for k in sorted(set(masks[i]) - set(xml[i]))]}
            for i in sorted(xml) if set(xml[i]) != set(masks[i])]


def _voc_mask_task(job: tuple[str, str, str, str]) -> tuple[str, list[int], str]:
    """Write one SegmentationClassAug mask (unless there) -> (id, classes, source)."""
    image_id, source, image_path, out_path = job
    return keep_or_write(image_id, out_path, lambda: _voc_mask(source, image_path))


def _voc_mask(source: str, image_path: str) -> tuple[np.ndarray, str]:
    """The mask of VOC's own PNG ("voc") or of SBD's .mat ("sbd", checked against its image)."""
    if not source.endswith(".mat"):
        return read_index_png(source), "voc"
    mask = read_sbd_mask(source)
    with Image.open(image_path) as image:
        if mask.shape != (image.height, image.width):
            raise SfcError(f"SBD mask is {mask.shape[1]}x{mask.shape[0]}, its image "
                           f"{image.width}x{image.height}", path=source,
                           fix="use SBD's cls/ masks with VOC 2012's JPEGImages")
    return mask, "sbd"


def _mask_sources(voc: Path, sbd: Path, ids: list[str]) -> list[tuple[str, str]]:
    """(id, mask source) per id: VOC's own PNG where there is one, else SBD's .mat."""
    sources = [(i, next((str(p) for p in (voc / "SegmentationClass" / f"{i}.png", sbd / "cls" / f"{i}.mat")
                         if p.is_file()), None)) for i in ids]
    missing = [i for i, source in sources if source is None]
    if missing:
        raise SfcError(f"{len(missing)} listed image(s) have neither a VOC mask nor an SBD cls/ mask, "
                       f"first: {', '.join(missing[:5])}", path=sbd / "cls",
                       fix="extract SBD completely (benchmark_RELEASE/dataset/cls holds 11,355 .mat files)")
    no_image = [i for i in ids if not (voc / "JPEGImages" / f"{i}.jpg").is_file()]
    if no_image:
        raise SfcError(f"{len(no_image)} listed image(s) are not in VOC's JPEGImages, first: "
                       f"{', '.join(no_image[:5])}", path=voc / "JPEGImages",
                       fix="use the complete VOC 2012 trainval download (17,125 images)")
    return sources


def prepare_voc(voc: str | Path, sbd: str | Path, out: str | Path, processes: int = 1,
                voc_md5: str | None = None, sbd_md5: str | None = None) -> dict:
    """Write the VOC trainaug layout under ``out`` (module docstring); returns the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    voc_dir, voc_record = open_source(voc, "voc", out, voc_md5, "--voc")
    sbd_dir, sbd_record = open_source(sbd, "sbd", out, sbd_md5, "--sbd")
    voc_root, sbd_root = voc_tree(voc_dir), sbd_tree(sbd_dir)
    voc_lists = {n: read_list(voc_root / f"ImageSets/Segmentation/{n}.txt") for n in ("train", "val")}
    sbd_lists = {n: read_list(sbd_root / f"{n}.txt") for n in ("train", "val")}
    lists = {"train_aug": trainaug_ids(voc_lists["train"], voc_lists["val"], sbd_lists["train"], sbd_lists["val"]),
             **voc_lists}
    check_disjoint(lists["train_aug"], lists["val"], out)
    ids = sorted(set().union(*lists.values()))
    sources = _mask_sources(voc_root, sbd_root, ids)
    xml = {i: xml_classes(voc_root / "Annotations" / f"{i}.xml") for i in tqdm(ids, desc="Annotations", unit="img")}

    if out.resolve() != voc_root:
        link_images(out, voc_root / "JPEGImages")
    masks = staging_path(out / "SegmentationClassAug")
    masks.mkdir(exist_ok=True)
    jobs = [(i, src, str(voc_root / "JPEGImages" / f"{i}.jpg"), str(masks / f"{i}.png")) for i, src in sources]
    results = pool_map(_voc_mask_task, jobs, processes, "SegmentationClassAug", fix=RERUN, path=out)
    commit_folder(masks, out / "SegmentationClassAug")
    differences = label_differences(xml, {image_id: classes for image_id, classes, _ in results})
    inputs = {"voc": str(voc_root), "sbd": str(sbd_root),
              "sbd_lists": {name: len(v) for name, v in sbd_lists.items()},
              "archives": [r for r in (voc_record, sbd_record) if r],
              "labels": {"from": "Annotations/<id>.xml (the reference's cls_labels_voc.npy)",
                         "differ_from_masks": differences}}
    note = (f"{len(differences):,} image(s) whose XML labels differ from their mask's classes "
            f"(labels from the XML): manifest inputs.labels.differ_from_masks")
    return write_layout(out, "ImageSets/Segmentation", lists, [(i, xml[i], source) for i, _, source in results],
                        VOC_CLASSES, VOC_EXPECTED, inputs, [note] if differences else None)


# -- the verb --------------------------------------------------------------------------------
def prepare_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    voc = sub.add_parser("voc", help="VOC 2012 + SBD -> SegmentationClassAug, train_aug, labels")
    for kind, tree in (("voc", "VOCdevkit/VOC2012"), ("sbd", "benchmark_RELEASE/dataset")):
        voc.add_argument(f"--{kind}", required=True, help=f"{tree} or {PUBLISHED_MD5[kind][0]}")
        voc.add_argument(f"--{kind}-md5",
                         help=f"accept {kind.upper()}'s archive with this MD5 instead of the published one")
    coco = sub.add_parser("coco", help="COCO 2014 -> class masks, lists, labels")
    coco.add_argument("--coco", required=True, help="folder with train2014/, val2014/, annotations/")
    for q in (voc, coco):
        q.add_argument("--out", required=True, help="dataset root to write (then --data-root ROOT)")
        q.add_argument("--processes", type=int, default=min(8, os.cpu_count() or 1),
                       help="worker processes for the masks (default: up to 8)")


def check_prepared(kind: str, out: str | Path, manifest: dict) -> None:
    """Decode every image and mask just written (``data.check``), so a bad download is named now."""
    dataset = open_dataset(Config.from_preset(kind, {"data.root": str(out)}).data)
    lists = list(manifest["counts"])
    raise_on_problems(check_dataset(dataset, lists), lists, out)
    print(f"prepare: every image and mask of {', '.join(lists)} decodes, sizes match (python -m sfc_core check)")


def prepare_command(args: argparse.Namespace) -> int:
    if args.dataset == "voc":
        manifest = prepare_voc(args.voc, args.sbd, args.out, args.processes, args.voc_md5, args.sbd_md5)
    else:
        manifest = prepare_coco(args.coco, args.out, args.processes)
    check_prepared(args.dataset, args.out, manifest)
    return 0
