"""Decode every image and mask of a dataset's lists and report every problem.

    problems = check_dataset(dataset, ["train_aug", "val"])   # [] when the dataset is sound
    python -m sfc_core check --preset voc --data-root VOC2012 --lists train_aug,val

Each problem is the error the stage reading that file would stop with, found before it runs.
Files are decoded in threads; ``prepare`` runs it on what it wrote.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

from sfc_core.data.dataset import SegmentationDataset
from sfc_core.errors import SfcError


@dataclass(frozen=True)
class Problem:
    """One bad list or file; ``image_id`` None: the list itself."""

    list_name: str
    image_id: str | None
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def check_dataset(dataset: SegmentationDataset, lists: list[str], workers: int | None = None,
                  progress: bool = True) -> list[Problem]:
    """Every problem of the images, masks and labels of ``lists``, in list order."""
    problems: list[Problem] = []
    todo: dict[str, tuple[str, bool]] = {}       # image id -> (first list naming it, mask expected)
    for list_name in dict.fromkeys(lists):
        try:
            ids = dataset.ids(list_name)
        except SfcError as e:
            problems.append(Problem(list_name, None, str(e.path), e.problem))
            continue
        # Every image needs a mask when labels come from masks, or when some have one (an eval list).
        with_masks = dataset.labels_file is None or any(os.path.exists(dataset.mask_path(i)) for i in ids)
        for image_id in ids:
            todo.setdefault(image_id, (list_name, with_masks))
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        found = pool.map(lambda item: _check_image(dataset, item[0], *item[1]), todo.items())
        for image_problems in tqdm(found, total=len(todo), desc="check images and masks",
                                   unit="img", disable=not progress):
            problems.extend(image_problems)
    return problems


def raise_on_problems(problems: list[Problem], lists: list[str], root: str | os.PathLike) -> None:
    """Print every problem, then stop with one message counting them (nothing when none)."""
    for problem in problems:
        print(problem)
    if problems:
        raise SfcError(f"{len(problems)} problem(s) in list(s) {', '.join(lists)} (listed above)", path=root,
                       fix="repair or regenerate the files named above (or remove their ids from the lists)")


def _check_image(dataset: SegmentationDataset, image_id: str, list_name: str,
                 with_mask: bool) -> list[Problem]:
    """The problems of one image: its decoding, then its mask and its label entry."""
    problems = []

    def passes(check) -> bool:
        try:
            check(image_id)
            return True
        except SfcError as e:
            problems.append(Problem(list_name, image_id, str(e.path), e.problem))
            return False

    if passes(dataset.read_image) and (with_mask or os.path.exists(dataset.mask_path(image_id))):
        passes(dataset.read_mask)
    if dataset.labels_file is not None:
        passes(dataset.label)
    return problems
