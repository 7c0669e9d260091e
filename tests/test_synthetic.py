"""The synthetic generator: determinism, caching, the VOC layout, and the long-tail design."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from sfc_core.data import synthetic
from sfc_core.data.synthetic import CLASS_NAMES, SIZES, class_table, generate, split_layouts
from sfc_core.errors import SfcError


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth"), size="smoke", seed=0)


@pytest.fixture(scope="module")
def control(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth"), size="smoke", seed=0, shared_parts=False)


def read_list(root: Path, name: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{name}.txt").read_text().split()


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "P"
        return np.asarray(image)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(smoke, tmp_path):
    again = generate(tmp_path, size="smoke", seed=0)
    assert again.name == "smoke-seed0"
    assert files(again) == files(smoke)
    other = files(generate(tmp_path, size="smoke", seed=1))
    assert other["JPEGImages/s000000.jpg"] != files(smoke)["JPEGImages/s000000.jpg"]


def test_second_call_reuses_the_cache_and_force_rewrites(tmp_path):
    path = generate(tmp_path, size="smoke", seed=3)
    image = path / "JPEGImages" / "s000000.jpg"
    before = image.stat().st_mtime_ns
    assert generate(tmp_path, size="smoke", seed=3) == path
    assert image.stat().st_mtime_ns == before
    generate(tmp_path, size="smoke", seed=3, force=True)
    assert image.stat().st_mtime_ns != before
    assert [p.name for p in tmp_path.iterdir()] == ["smoke-seed3"]   # no temporary left


def test_changed_parameters_invalidate_the_cache(tmp_path):
    path = generate(tmp_path, size="smoke", seed=0)
    marker = json.loads((path / synthetic.MARKER).read_text())
    marker["version"] = -1
    (path / synthetic.MARKER).write_text(json.dumps(marker))
    generate(tmp_path, size="smoke", seed=0)
    assert json.loads((path / synthetic.MARKER).read_text())["version"] == synthetic.GENERATOR_VERSION


def test_a_killed_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_render(*args):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return render(*args)

    render = synthetic.render
    monkeypatch.setattr(synthetic, "render", failing_render)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, size="smoke", seed=0)
    assert list(tmp_path.iterdir()) == []


def test_unknown_size_is_an_sfc_error(tmp_path):
    with pytest.raises(SfcError, match="smoke"):
        generate(tmp_path, size="huge")


def test_layout_lists_labels_and_masks_agree(smoke):
    train_aug, train, val = (read_list(smoke, n) for n in ("train_aug", "train", "val"))
    spec = SIZES["smoke"]
    assert (len(train_aug), len(train), len(val)) == (spec.num_train, spec.num_eval, spec.num_heldout)
    assert set(train) <= set(train_aug) and not set(val) & set(train_aug)
    names = (smoke / "class_names.txt").read_text().split()
    assert names == list(CLASS_NAMES)
    labels = json.loads((smoke / "cls_labels.json").read_text())
    assert set(labels) == set(train_aug) | set(val)
    for image_id in train_aug + val:
        with Image.open(smoke / "JPEGImages" / f"{image_id}.jpg") as image:
            assert image.size == (spec.image_size, spec.image_size) and image.mode == "RGB"
        mask = read_png(smoke / "SegmentationClass" / f"{image_id}.png")
        part = read_png(smoke / "SegmentationPart" / f"{image_id}.png")
        present = sorted(int(k) - 1 for k in np.unique(mask) if k != 0)
        assert labels[image_id] == present and 1 <= len(present) <= 3
        assert mask.max() <= len(names) and part.max() <= 2
        assert np.array_equal(part > 0, mask > 0)   # an object is its parts


def test_the_kits_voc_loader_reads_it(smoke):
    from sfc_core.data.dataset import SegmentationDataset

    dataset = SegmentationDataset(smoke)
    assert dataset.class_names == CLASS_NAMES
    image_id = dataset.ids("train")[0]
    assert dataset.read_mask(image_id).shape == dataset.read_image(image_id).shape[:2]
    assert dataset.labels("val").shape == (SIZES["smoke"].num_heldout, len(CLASS_NAMES))


def test_groups_json_names_heads_and_shared_parts(smoke, control):
    groups = json.loads((smoke / "groups.json").read_text())
    assert [c["name"] for c in groups["classes"]] == list(CLASS_NAMES)
    for group in groups["groups"]:
        styles = {json.dumps(c["large_part"]) for c in groups["classes"] if c["name"] in group["members"]}
        assert styles == {json.dumps(group["shared_part"])}
        assert group["head"] == group["members"][0]
    control_groups = json.loads((control / "groups.json").read_text())
    assert all(g["shared_part"] is None for g in control_groups["groups"])
    large = [json.dumps(c["large_part"]) for c in control_groups["classes"]]
    assert len(set(large)) == len(large)


def mean_large_part_colour(root: Path) -> np.ndarray:
    """(C, 3) mean RGB of each class's large-part pixels over the training list."""
    total, count = np.zeros((len(CLASS_NAMES), 3)), np.zeros(len(CLASS_NAMES))
    for image_id in read_list(root, "train_aug"):
        image = np.asarray(Image.open(root / "JPEGImages" / f"{image_id}.jpg"), dtype=np.float64)
        mask = read_png(root / "SegmentationClass" / f"{image_id}.png")
        part = read_png(root / "SegmentationPart" / f"{image_id}.png")
        large = ndimage.binary_erosion(part == 1)   # away from JPEG edge blur
        for k in np.unique(mask[large]):
            pixels = large & (mask == k)
            total[k - 1] += image[pixels].sum(0)
            count[k - 1] += pixels.sum()
    return total / count[:, None]


def test_control_differs_only_in_the_large_parts_appearance(smoke, control):
    main_files, control_files = files(smoke), files(control)
    masks = [f for f in main_files if f.startswith(("SegmentationClass/", "SegmentationPart/"))]
    assert all(main_files[f] == control_files[f] for f in masks)
    main_colour, control_colour = mean_large_part_colour(smoke), mean_large_part_colour(control)
    for info in class_table():
        if info.index != info.head:
            same = np.abs(main_colour[info.index] - main_colour[info.head]).max()
            different = np.abs(control_colour[info.index] - control_colour[info.head]).max()
            assert same < 15 < 30 < different, (info.name, same, different)


def image_classes(root: Path, list_name: str) -> list[set[int]]:
    labels = json.loads((root / "cls_labels.json").read_text())
    return [set(labels[i]) for i in read_list(root, list_name)]


def test_smoke_is_long_tailed_with_every_class_present(smoke):
    counts = Counter(k for classes in image_classes(smoke, "train_aug") for k in classes)
    per_class = np.array([counts[k] for k in range(len(CLASS_NAMES))])
    assert per_class.min() >= SIZES["smoke"].min_primary
    assert per_class.max() >= 8 * per_class.min()
    heads = {info.head for info in class_table()}
    assert set(np.argsort(-per_class)[:3].tolist()) == heads


def test_non_head_classes_mostly_touch_their_head(smoke):
    with_head = touching = total = 0
    for image_id in read_list(smoke, "train_aug") + read_list(smoke, "val"):
        mask = read_png(smoke / "SegmentationClass" / f"{image_id}.png")
        for info in class_table():
            if info.index == info.head or not (mask == info.index + 1).any():
                continue
            total += 1
            if (mask == info.head + 1).any():
                with_head += 1
                grown = ndimage.binary_dilation(mask == info.index + 1, iterations=2)
                touching += bool((grown & (mask == info.head + 1)).any())
    assert 0.7 <= with_head / total <= 0.97
    assert touching / with_head >= 0.9


def default_layouts(split: str = "train_aug"):
    """Objects of every default-size image (layout only, no rendering: fast)."""
    return [objects for _, objects in split_layouts(SIZES["default"], 0, split, class_table())]


def test_default_size_design_targets():
    layouts = default_layouts()
    per_image = [{o.cls for o in objects} for objects in layouts]
    counts = np.bincount([k for classes in per_image for k in classes], minlength=len(CLASS_NAMES))
    assert counts.max() >= 15 * counts.min() and counts.min() >= 50
    assert all(1 <= len(objects) <= 3 for objects in layouts)
    own_missing = np.mean([not o.own_present for objects in layouts for o in objects])
    assert 0.35 <= own_missing <= 0.45
    for info in class_table():
        if info.index != info.head:
            mine = [classes for classes in per_image if info.index in classes]
            alone = np.mean([classes == {info.index} for classes in mine])
            assert 0.06 <= alone <= 0.18, (info.name, alone)
            assert np.mean([info.head in classes for classes in mine]) >= 0.8


def test_own_part_is_smaller_than_the_shared_part():
    ratios = [o.radius / o.own_radius for objects in default_layouts("val") for o in objects]
    assert 1.5 <= min(ratios) and max(ratios) <= 1.7


def test_cli_prints_the_path_and_class_counts(tmp_path, capsys):
    from sfc_core.cli import main

    assert main(["synth", "--size", "smoke", "--out", str(tmp_path), "--seed", "2", "--control"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(tmp_path / "smoke-seed2-control")
    rows = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in out[2:]}
    assert list(rows) == list(CLASS_NAMES)
    labels = image_classes(tmp_path / "smoke-seed2-control", "val")
    assert [row[2] for row in rows.values()] == [sum(k in c for c in labels) for k in range(len(CLASS_NAMES))]
