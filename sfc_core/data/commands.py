"""The dataset verbs, thin over the data layer: ``synth``, ``stats`` and ``check``.

    python -m sfc_core synth --size default --out data/synthetic --seed 0
    python -m sfc_core stats --preset synthetic --data-root data/synthetic --list train_aug
    python -m sfc_core check --preset voc --data-root VOC2012 --lists train_aug,val
"""
from __future__ import annotations

import argparse
import json

from sfc_core.cli import add_config_arguments, config_from_args
from sfc_core.data import SYNTHETIC_ROOT, open_dataset
from sfc_core.data.check import check_dataset, raise_on_problems
from sfc_core.data.stats import dataset_stats
from sfc_core.data.synthetic import SIZES, class_counts, generate


def synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=sorted(SIZES), default="default", help="dataset size")
    parser.add_argument("--out", default=SYNTHETIC_ROOT, help="folder that holds the datasets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--control", action="store_true",
                        help="the control set: no shared parts (every class its own large part)")
    parser.add_argument("--num-images", type=int, default=None,
                        help="training images (default: the size's own; for large benchmarks)")
    parser.add_argument("--force", action="store_true", help="regenerate even if cached")


def synth_command(args: argparse.Namespace) -> int:
    path = generate(args.out, size=args.size, seed=args.seed, shared_parts=not args.control,
                    force=args.force, num_images=args.num_images)
    print(path)
    counts = class_counts(path)
    print(f"{'class':<10}" + "".join(f"{split:>11}" for split in counts))
    for name in counts["train_aug"]:
        print(f"{name:<10}" + "".join(f"{counts[split][name]:>11}" for split in counts))
    return 0


def stats_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("per-class image counts, co-occurrence and class weights of one image list "
                          "(an empty or missing list is an error), from its image-level labels (the labels "
                          "file, else the masks); it checks no image: `check` is the verb that decodes "
                          "every image and mask of the lists")
    add_config_arguments(parser)
    parser.add_argument("--list", dest="list_name", default=None,
                        help="image list (default: the preset's training list)")


def stats_command(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    dataset = open_dataset(cfg.data)
    stats = dataset_stats(dataset, args.list_name or cfg.data.train_list, cfg.data.dataset,
                          cfg.train.batch_size, cfg.train.bank_draws)
    print(json.dumps(stats, indent=2))
    return 0


def check_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--lists", default=None,
                   help="comma-separated image lists (default: the preset's train, eval and held-out lists)")
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: one per core)")


def check_command(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    dataset = open_dataset(cfg.data)
    lists = args.lists.split(",") if args.lists else [cfg.data.train_list, cfg.data.eval_list,
                                                      cfg.data.heldout_list]
    raise_on_problems(check_dataset(dataset, lists, args.workers), lists, dataset.root)
    images = len({image_id for name in lists for image_id in dataset.ids(name)})
    print(f"check: all {images} image(s) of list(s) {', '.join(lists)} decode, with their masks and labels")
    return 0
