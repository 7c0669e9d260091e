"""The ``pretrain`` verb over ``model.pretrained``: the small backbone on the synthetic pretraining set.

    python -m sfc_core pretrain --out data/synthetic/pretrain      # prints the weights file
"""
from __future__ import annotations

import argparse
import json

import torch

from sfc_core.data.pretrain_set import PretrainSpec
from sfc_core.engine import DistInfo, announce_runtime
from sfc_core.model.pretrained import Recipe, pretrain


def pretrain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="data/synthetic/pretrain", help="folder that caches the weights")
    p.add_argument("--backbone", default=Recipe.backbone, help="registered backbone to pretrain")
    p.add_argument("--epochs", type=int, default=Recipe.epochs)
    p.add_argument("--seed", type=int, default=PretrainSpec.seed, help="generator seed of the set")
    p.add_argument("--force", action="store_true", help="train again even if cached")


def pretrain_command(args: argparse.Namespace) -> int:
    announce_runtime("pretrain", torch.device("cpu"), DistInfo(), 0, False)   # model.pretrained: in-process
    spec = PretrainSpec(seed=args.seed)
    path = pretrain(args.out, spec, Recipe(backbone=args.backbone, epochs=args.epochs), force=args.force)
    record = json.loads(path.with_suffix(".json").read_text())
    print(path)
    print(f"{spec.num_classes} classes, held-out top-1 {100 * record['val_top1']:.1f}% "
          f"(chance {100 * record['chance']:.1f}%), trained in {record['seconds']:.0f} s; "
          f"use it with --set model.backbone_weights={path}")
    return 0
