"""Shared trainer plumbing: RNG state, checkpoints, compatibility, schedules, logging."""
from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from sfc_core import engine, loop
from sfc_core.errors import SfcError
from sfc_core.io import atomic_torch_save


def draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_state_survives_a_checkpoint_file(tmp_path):
    engine.seed_everything(7)
    draws()
    path = atomic_torch_save(tmp_path / "ck.pt", {"rng": engine.rng_state()})
    expected = draws()
    engine.seed_everything(123)
    engine.set_rng_state(engine.load_checkpoint(path)["rng"])
    assert draws() == expected


def test_load_checkpoint_names_the_file(tmp_path):
    with pytest.raises(SfcError, match="not found") as error:
        engine.load_checkpoint(tmp_path / "missing.pt")
    assert "missing.pt" in str(error.value)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(SfcError, match="cannot be read") as error:
        engine.load_checkpoint(broken)
    assert str(broken) in str(error.value)


def _damaged(path, how: str):
    """A checkpoint at ``path`` damaged ``how``: random bytes, or cut in half."""
    atomic_torch_save(path, {"model": {"w": torch.zeros(1000)}, "step": 3})
    data = path.read_bytes()
    path.write_bytes(os.urandom(len(data)) if how == "random" else data[: len(data) // 2])


@pytest.mark.parametrize("how", ["random", "truncated"])
def test_a_damaged_checkpoint_says_so_in_whole_sentences_and_what_is_left(tmp_path, how):
    """Never torch's advice to load with weights_only=False (unsafe for a file of unknown
    origin), never a sentence cut short, and the fix names what can still be read."""
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    _damaged(last, how)
    atomic_torch_save(best, {"model": {}, "step": 3})
    with pytest.raises(SfcError) as error:
        engine.load_checkpoint(last)
    problem = error.value.problem
    assert problem.startswith("checkpoint cannot be read: it ") and "weights_only" not in str(error.value)
    assert problem.endswith(")") or problem.endswith("kit")
    assert "best.pt beside it can still be read" in error.value.fix
    _damaged(best, "random")
    with pytest.raises(SfcError) as error:
        engine.load_checkpoint(last)
    assert f"no other checkpoint in {tmp_path} can be read either: train again" in error.value.fix
    assert "other checkpoint)" not in error.value.fix


def test_tensorboard_after_a_resume_holds_no_step_twice(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = engine.MetricsLogger(tmp_path / "metrics.jsonl", tmp_path / "tb", resume_step=0)
    for step in (2, 4, 6):                           # 6: logged after step 4's checkpoint
        first.log(step, {"loss": step})
    first.close()
    resumed = engine.MetricsLogger(tmp_path / "metrics.jsonl", tmp_path / "tb", resume_step=4)
    for step in (6, 8):
        resumed.log(step, {"loss": 10 * step})
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(event.step, event.value) for event in events.Scalars("loss")] == [(2, 2), (4, 4), (6, 60), (8, 80)]


def test_a_tensorboard_writer_on_a_full_disk_prints_no_traceback_of_its_own(tmp_path, monkeypatch, capfd):
    import errno
    import warnings

    from tensorboard.summary.writer.record_writer import RecordWriter

    from sfc_core.io import DiskFull

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(RecordWriter, "write", write)
    logger = engine.MetricsLogger(tmp_path / "metrics.jsonl", tmp_path / "tb")
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # pytest's warning of an unhandled thread error
        with pytest.raises(DiskFull, match=f"no space left on the disk of {tmp_path / 'tb'} to write "
                                           "TensorBoard events"):
            logger.log(2, {"loss": 1.0})
            logger.close()
    assert "Traceback" not in capfd.readouterr().err


def test_check_compatible_says_what_differs():
    ckpt = {"num_classes": 21, "backbone": "resnet50", "class_names": ["a"]}
    engine.check_compatible(ckpt, {"num_classes": 21, "backbone": "resnet50"}, "x.pt")
    with pytest.raises(SfcError) as error:
        engine.check_compatible(ckpt, {"num_classes": 11, "backbone": "tiny"}, "x.pt")
    message = str(error.value)
    assert "num_classes=21" in message and "'resnet50'" in message and "num_classes=11" in message
    assert "fresh --out" in message
    with pytest.raises(SfcError, match="class names"):
        engine.check_compatible(ckpt, {"class_names": ["b"]}, "x.pt")


def test_check_shapes_names_the_tensor_and_the_field_that_differ():
    def net(width: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(3, width, 1), torch.nn.Conv2d(width, 2, 1))

    config = {"model": {"side_channels": [8], "backbone": "tiny"}, "data": {"root": "/a"}}
    ckpt = {"model": net(8).state_dict(), "config": config}
    engine.check_shapes(ckpt, net(8), "x.pt", config, ("model.",))
    ours = {"model": {"side_channels": [4], "backbone": "tiny"}, "data": {"root": "/b"}}
    with pytest.raises(SfcError) as error:
        engine.check_shapes(ckpt, net(4), "x.pt", ours, ("model.",))
    message = str(error.value)
    assert "tensor 0.weight is (8, 3, 1, 1) there, (4, 3, 1, 1) here" in message
    assert "model.side_channels = (8,) in the checkpoint, (4,) in this run" in message
    assert "data.root" not in message                      # not a field that builds the network
    with pytest.raises(SfcError, match="tensor 2.weight is None there"):
        engine.check_shapes({"model": net(8).state_dict()}, torch.nn.Sequential(*net(8), torch.nn.Conv2d(2, 2, 1)),
                            "x.pt", ours, ("model.",))


def test_check_finite_names_step_and_checkpoint():
    engine.check_finite(torch.tensor(1.5), 3, None)
    with pytest.raises(SfcError, match="step 12") as error:
        engine.check_finite(torch.tensor(float("inf")), 12, "runs/x/checkpoints/last.pt")
    assert "runs/x/checkpoints/last.pt" in str(error.value)


def test_poly_schedule_follows_the_formula():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = engine.make_optimizer("sgd", [{"params": params[:1], "lr": 0.1},
                                              {"params": params[1:], "lr": 1.0}], momentum=0.0, weight_decay=1e-4)
    schedule = engine.make_schedule(optimizer, "poly", max_steps=10, power=0.9)
    for _ in range(4):
        optimizer.step()
        schedule.step()
    factor = (1 - 4 / 10) ** 0.9
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1 * factor, 1.0 * factor])
    assert optimizer.param_groups[0]["momentum"] == 0.0 and optimizer.param_groups[0]["weight_decay"] == 1e-4
    with pytest.raises(SfcError, match="schedule"):
        engine.make_schedule(optimizer, "cosine", 10)


def test_metrics_logger_drops_records_after_the_resume_point(tmp_path):
    path = tmp_path / "metrics.jsonl"
    logger = engine.MetricsLogger(path)
    for step in (2, 4, 6):
        logger.log(step, {"loss": step / 10})
    engine.MetricsLogger(path, resume_step=4)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4] and records[1]["loss"] == pytest.approx(0.4)
    engine.MetricsLogger(tmp_path / "other.jsonl", enabled=False).log(1, {"x": 1})
    assert not (tmp_path / "other.jsonl").exists()


def test_cpu_device_and_precision_are_plain():
    device = engine.select_device("cpu")
    assert device.type == "cpu"
    assert not engine.make_grad_scaler(device, True).is_enabled()
    with engine.autocast(device, True):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    if not torch.cuda.is_available():
        with pytest.raises(SfcError, match="runtime.device=cpu"):
            engine.select_device("cuda")


class _Keyed(torch.utils.data.Dataset):
    """Items that are their key, and the process that made them."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, key):
        epoch, index = key
        return {"epoch": epoch, "index": index, "pid": os.getpid()}


def _order(epoch):
    return [(epoch, int(i)) for i in np.random.default_rng([3, epoch]).permutation(10)]


@pytest.mark.parametrize("start,end", [(0, 8), (2, 8), (3, 7), (5, 6), (7, 7)])
def test_step_keys_are_each_epochs_batches_from_the_resumed_step(start, end):
    """Epoch e's batches are its keys cut in threes, the tenth key dropped; resuming at any
    step gives the rest of that sequence and stops at the end."""
    every = [_order(epoch)[b * 3:(b + 1) * 3] for epoch in range(3) for b in range(3)][:8]
    assert list(loop.step_keys(_order, 3, 3, range(start, end))) == every[start:end]


def test_one_set_of_loader_workers_serves_every_epoch():
    batches = list(loop.batches(_Keyed(), _order, 3, 3, range(1, 8), 2, torch.device("cpu")))
    assert [list(zip(b["epoch"].tolist(), b["index"].tolist())) for b in batches] == \
        list(loop.step_keys(_order, 3, 3, range(1, 8)))
    assert len({pid for b in batches for pid in b["pid"].tolist()} - {os.getpid()}) == 2   # 7 batches, 3 epochs


def test_plan_stops_after_a_step_as_if_interrupted_there():
    plan = loop.Plan(max_steps=8, log_every=3, checkpoint_every=4)
    assert plan.steps(2) == range(2, 8) and plan.steps(2, stop_after=5) == range(2, 5)
    assert plan.steps(2, stop_after=8) == plan.steps(2, stop_after=1) == range(2, 8)
    assert [step for step in range(1, 9) if plan.logs(step)] == [3, 6, 8]


def test_wall_time_checkpoints_are_due_on_log_steps_once_the_minutes_have_passed():
    now = [100.0]
    plan, dist, saved = loop.Plan(20, log_every=5, checkpoint_every=100, checkpoint_minutes=2.0), engine.DistInfo(), 100.0

    def due(step):
        return loop.due_by_wall_time(saved, plan, step, dist, now=lambda: now[0])
    now[0] += 119
    assert not due(5)                                      # 1 min 59 s
    now[0] += 1
    assert not due(7)                                      # 2 min, but not a log step
    assert due(10)
    saved = now[0]
    now[0] += 60
    assert not due(15)                                     # counts from the last checkpoint
    now[0] += 1e6
    assert not loop.due_by_wall_time(saved, loop.Plan(20, 1, 100), 20, dist, now=lambda: now[0])   # 0: off


class _CountingState(engine.TrainState):
    """A train state that records the steps it saves at instead of writing."""

    def save(self, path, dist, full=True):
        self.meta.setdefault("saved", []).append(self.step)


def _counting_state() -> _CountingState:
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return _CountingState(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0),
                          engine.make_grad_scaler(torch.device("cpu"), False), {}, {})


@pytest.mark.parametrize("minutes,saved", [(0.0, [4, 7]), (1e-9, [2, 4, 6, 7])])
def test_fit_checkpoints_by_steps_and_by_wall_time_at_log_steps(tmp_path, minutes, saved):
    """checkpoint_every=4, log_every=2, 7 steps: steps 4 and 7 (the last); with a wall time that
    is always due, every log step too. Each step is yielded after the schedule's step and
    before its checkpoint."""
    state, plan = _counting_state(), loop.Plan(7, log_every=2, checkpoint_every=4, checkpoint_minutes=minutes)
    seen = []
    for output in loop.fit(state, range(7), lambda batch: state.optimizer.step() or {"loss": torch.tensor(float(batch))}, plan,
                           tmp_path / "last.pt", engine.DistInfo()):
        seen.append((state.step, state.schedule.last_epoch, list(state.meta.get("saved", [])), float(output["loss"])))
        assert (output["seconds_per_step"] is None) == (state.step == 1)
    assert state.step == 7 and state.meta["saved"] == saved
    assert seen[3] == (4, 4, [s for s in saved if s < 4], 3.0)


def test_fit_stops_a_diverged_run_at_a_log_step(tmp_path):
    state = _counting_state()
    with pytest.raises(SfcError, match="diverged: loss is nan at step 2"):
        for _ in loop.fit(state, range(7), lambda batch: state.optimizer.step() or {"loss": torch.tensor(float("nan"))},
                          loop.Plan(7, log_every=2, checkpoint_every=4), tmp_path / "last.pt", engine.DistInfo()):
            pass
    assert "saved" not in state.meta


def test_sigterm_during_fit_checkpoints_the_step_and_raises_terminated(tmp_path, monkeypatch):
    import sfc_core.io as io

    state, plan = _counting_state(), loop.Plan(7, log_every=2, checkpoint_every=4)
    with pytest.raises(io.Terminated, match="stopped after step 3, its checkpoint written"):
        for _ in loop.fit(state, range(7), lambda batch: state.optimizer.step() or {"loss": torch.tensor(0.0)}, plan, tmp_path / "last.pt",
                          engine.DistInfo()):
            if state.step == 3:
                monkeypatch.setitem(io._stop, "requested", True)
    assert state.meta["saved"] == [3]


class _OnDevice(torch.Tensor):
    """Stands in for a GPU tensor on a CPU-only machine: its .cpu() says it was called."""

    def cpu(self, *args, **kwargs):
        return "moved"


def test_on_cpu_moves_every_tensor_in_nested_dicts_lists_and_tuples():
    device = torch.zeros(2).as_subclass(_OnDevice)
    plain = torch.arange(3)
    out = engine.on_cpu({"bank": {"images": device, "parts": [device, (plain, 3)]}, "name": "x", "none": None})
    assert out["bank"]["images"] == "moved" and out["bank"]["parts"][0] == "moved"
    assert isinstance(out["bank"]["parts"][1], tuple) and torch.equal(out["bank"]["parts"][1][0], plain)
    assert out["bank"]["parts"][1][1] == 3 and out["name"] == "x" and out["none"] is None


def test_train_state_save_gathers_the_extras_on_the_cpu(tmp_path, monkeypatch):
    class Extra:
        def state_dict(self):
            return {"images": torch.zeros(2).as_subclass(_OnDevice)}

    sent = []
    monkeypatch.setattr(engine, "gather_to_main", lambda obj, dist: sent.append(obj) or [obj])
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = engine.TrainState(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0),
                              engine.make_grad_scaler(torch.device("cpu"), False), {}, {},
                              extras={"bank": Extra(), "none": None})
    state.save(tmp_path / "last.pt", engine.DistInfo())
    assert sent[0]["bank"] == {"images": "moved"} and sent[0]["none"] is None
    assert isinstance(sent[0]["rng"]["torch"], torch.Tensor)


def test_loader_workers_killed_by_a_sigterm_to_the_group_end_in_terminated(tmp_path, monkeypatch):
    """In the loop and in a trainer's validation alike (``loop.workers_stopped``); without a
    SIGTERM the RuntimeError stays what it is."""
    import sfc_core.io as io

    died = RuntimeError("DataLoader worker (pid 123) is killed by signal: Terminated.")
    with pytest.raises(RuntimeError, match="pid 123"):
        with loop.workers_stopped(tmp_path / "last.pt"):
            raise died
    monkeypatch.setitem(io._stop, "requested", True)
    with pytest.raises(io.Terminated, match=f"the loader's workers were stopped too; the last checkpoint is kept "
                                            f"\\({tmp_path / 'last.pt'}\\)"):
        with loop.workers_stopped(tmp_path / "last.pt"):
            raise died
