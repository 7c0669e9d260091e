"""The global batch under DDP: 2 processes x 4 images train what 1 process x 8 images trains.

CPU, gloo, the image bank off, with and without a static graph. The tiny backbone's BatchNorm is frozen here, as the ResNets'
is in the paper's recipe: trainable BatchNorm sees each process's own batch statistics (on
4 images, not 8), the one thing a global batch cannot make equal.
"""
from __future__ import annotations

import copy
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from sfc_core import engine, loop
from sfc_core.config import Config
from sfc_core.errors import SfcError


def _freeze_tiny_batchnorm() -> None:
    from sfc_core.method import backbones

    build = backbones.BACKBONES["tiny"]

    def frozen(state: dict | None = None) -> backbones.Backbone:
        net = build(state)
        net.frozen_bn = True
        return net.train()
    backbones.BACKBONES["tiny"] = frozen


def _train_worker(rank: int, world_size: int, port: int, cfg: dict, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    _freeze_tiny_batchnorm()
    from sfc_core.train import train

    train(Config.from_dict(cfg), out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(world_size: int, cfg: Config, out) -> tuple[list[dict], dict]:
    mp.spawn(_train_worker, args=(world_size, _free_port(), cfg.to_dict(), str(out)), nprocs=world_size)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return metrics, torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.mark.slow
@pytest.mark.parametrize("pcm", [False, True], ids=["unused-parameters", "static-graph"])
def test_two_processes_of_four_train_what_one_process_of_eight_does(smoke_config, smoke_dataset, tmp_path, pcm):
    """PCM off: the PCM projection gets no gradient (DDP finds unused parameters); PCM on:
    every loss and layer is on, DDP runs with a static graph (train.step_objective)."""
    cfg = Config.from_dict(smoke_config.to_dict()).override({
        "data.crop_size": 32, "data.resize_long": (32, 48), "train.batch_size": 8, "train.bank_draws": 0,
        "train.max_steps": 3, "train.log_every": 1, "train.checkpoint_every": 3,
        "runtime.num_workers": 0, "runtime.device": "cpu", "model.pcm": pcm})
    assert cfg.loss.prototype_weight > 0 and cfg.loss.scale_weight > 0
    one_metrics, one_weights = _run(1, cfg, tmp_path / "one")
    two_metrics, two_weights = _run(2, cfg, tmp_path / "two")
    assert [m["step"] for m in one_metrics] == [m["step"] for m in two_metrics] == [1, 2, 3]
    for a, b in zip(one_metrics, two_metrics):
        for key in (k for k in a if k.startswith("loss/")):
            assert abs(a[key] - b[key]) < 1e-5, (a["step"], key, a[key], b[key])
    assert one_weights.keys() == two_weights.keys()
    for key, tensor in one_weights.items():
        if tensor.is_floating_point():
            assert (tensor - two_weights[key]).abs().max().item() < 1e-5, key
    assert one_metrics[0]["loss/total"] != one_metrics[-1]["loss/total"]     # it did train


def _segment_worker(rank: int, world_size: int, port: int, run: str, overrides: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from sfc_core import segment

    wrap = segment.engine.wrap_ddp

    def recorded(*args, **kwargs):            # what DDP was built with, from the DDP object
        ddp = wrap(*args, **kwargs)
        with open(f"{run}/ddp{rank}.json", "w") as f:
            json.dump([ddp.static_graph, ddp.gradient_as_bucket_view, ddp.broadcast_buffers], f)
        return ddp

    sync = segment.sync_batchnorm

    def sync_recorded(model, dist, device):    # and what it would make on this rank's GPU
        on_gpu = sync(copy.deepcopy(model), dist, torch.device("cuda", rank))
        with open(f"{run}/sync{rank}.json", "w") as f:
            json.dump([dist.world_size, _norms(sync(model, dist, device)), _norms(on_gpu)], f)
        return model

    segment.engine.wrap_ddp = recorded
    segment.sync_batchnorm = sync_recorded
    segment.evaluate_network = lambda *args, **kwargs: {}      # training only
    segment.segment(run, "gt", overrides)


def _norms(model: torch.nn.Module) -> list[str]:
    return sorted({type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)})


def test_step3_trains_under_ddp_with_a_static_graph_and_bucket_view_gradients(smoke_config, smoke_dataset,
                                                                              tmp_path):
    """segment wraps its network with static_graph and gradient_as_bucket_view: two gloo ranks
    train 3 steps of it (DDP raises if the graph is not static) and rank 0 writes step 3. Its
    BatchNorm becomes SyncBatchNorm under torchrun on GPUs (``segment.sync_batchnorm``, asked
    here for this rank's GPU too: torch's SyncBatchNorm does not run on CPUs)."""
    from sfc_core.io import atomic_write_json
    from sfc_core.run_dir import RunDir

    run = RunDir(tmp_path / "run")
    smoke_config.save(run.config_json)
    atomic_write_json(run.class_names_json, list(smoke_dataset.class_names))
    overrides = {"segment.iterations": 3, "segment.batch_size": 4, "segment.crop_size": 48,
                 "segment.checkpoint_every": 2, "segment.log_every": 1, "runtime.num_workers": 0,
                 "runtime.device": "cpu"}
    mp.spawn(_segment_worker, args=(2, _free_port(), str(run.root), overrides), nprocs=2)
    out = RunDir(run.segment_dir("gt"))
    assert torch.load(out.last_checkpoint, weights_only=True)["step"] == 3
    logged = [json.loads(line) for line in out.metrics_jsonl.read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3]
    for rank in range(2):      # static graph, gradients in the buckets, BatchNorm buffers broadcast
        assert json.loads((run.root / f"ddp{rank}.json").read_text()) == [True, True, True]
        # SyncBatchNorm on GPUs (the global batch's statistics); gloo on CPUs keeps BatchNorm
        assert json.loads((run.root / f"sync{rank}.json").read_text()) == [2, ["BatchNorm2d"], ["SyncBatchNorm"]]


def _timer_worker(rank: int, world_size: int, port: int, out: str) -> None:
    """Two wall-time checkpoint timers whose clocks disagree across ranks: one where only
    rank 1's clock has run (never due on rank 0), one where only rank 0's has."""
    import itertools

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist = engine.setup_distributed()
    answers, plan = [], loop.Plan(4, log_every=2, checkpoint_every=100, checkpoint_minutes=1.0)
    for running_rank in (1, 0):
        ticks = itertools.count(1000.0, 1000.0)   # 1000 s a reading
        clock = ticks.__next__ if rank == running_rank else itertools.repeat(0.0).__next__
        answers.append([loop.due_by_wall_time(0.0, plan, step, dist, now=clock) for step in range(1, 5)])
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(answers, f)
    engine.cleanup_distributed(dist)


def test_wall_time_checkpoints_follow_rank_0s_clock_on_every_rank(tmp_path):
    mp.spawn(_timer_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    answers = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert answers[0] == answers[1] == [[False] * 4, [False, True, False, True]]


def test_global_counts_split_over_processes_or_refuse():
    dist = engine.DistInfo(rank=1, world_size=4)
    assert engine.per_process(16, "train.batch_size", dist) == 4
    assert engine.per_process(0, "train.bank_draws", dist) == 0
    with pytest.raises(SfcError, match="train.bank_draws=6 is global and does not split over 4") as info:
        engine.per_process(6, "train.bank_draws", dist)
    assert "--set train.bank_draws=" in info.value.fix
