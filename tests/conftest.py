"""Shared fixtures: one tiny synthetic dataset and one trained smoke run per test session.

End-to-end tests chain through these (train -> cams -> eval -> refine -> segment) so each
stage runs once on the smoke preset, keeping CI inside its budget on 2 cores.
"""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def smoke_config(tmp_path_factory):
    """The `synthetic-smoke` preset with its dataset generated under a session temp dir."""
    from sfc_core.config import Config
    from sfc_core.data import open_dataset

    cfg = Config.from_preset("synthetic-smoke", {"data.root": str(tmp_path_factory.mktemp("synthetic"))})
    open_dataset(cfg.data, generate=True)        # outside the preset's own root, stages only read it
    return cfg


@pytest.fixture(scope="session")
def smoke_dataset(smoke_config):
    """The smoke dataset, opened through the VOC loader."""
    from sfc_core.data import open_dataset

    return open_dataset(smoke_config.data)


@pytest.fixture(scope="session")
def trained_run(smoke_config, smoke_dataset, tmp_path_factory):
    """A run directory holding a finished smoke training of full SFC."""
    from sfc_core.run_dir import RunDir
    from sfc_core.train import train

    run = RunDir(tmp_path_factory.mktemp("runs") / "sfc")
    train(smoke_config, run.root)
    return run


@pytest.fixture(scope="session")
def cam_run(trained_run):
    """The trained smoke run with its CAMs made (all images of the train list)."""
    from sfc_core.cams import make_cams

    make_cams(trained_run.root)
    return trained_run
