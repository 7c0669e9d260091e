"""GPU code paths, checked on a CPU: ``torch.cuda`` monkeypatched, fake events and streams.

The device (``select_device``: cuda:N made current, a GPU preset without a GPU stops), the AMP
dtype (native bfloat16 only), the start line of every network verb, the CAM copies' event
(on the tensors' GPU's stream), torch.compile's eager fallback, cuDNN's autotuner around the
training updates only, CAMs in float32 by default, uint8 crops for IRN and step 3, and step
3's SyncBatchNorm under torchrun.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from sfc_core import cams, engine, loop
from sfc_core.cli import main
from sfc_core.errors import SfcError

CPU = torch.device("cpu")


@pytest.fixture
def fake_gpus(monkeypatch):
    """Four visible "GPUs" of compute capability ``capability[0]`` (default 9.0); the devices
    made current are recorded in ``current``."""
    state = {"capability": (9, 0), "current": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: state["current"].append(torch.device(device)))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: state["capability"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)   # counts emulation
    return state


# -- devices and precision ------------------------------------------------------------------


def test_an_explicit_gpu_becomes_the_current_device(fake_gpus):
    """cams --device cuda:1 in one process: without set_device, kernels and events would go to
    cuda:0's streams."""
    assert engine.select_device("cuda:1", option="--device") == torch.device("cuda", 1)
    assert engine.select_device("cuda", engine.DistInfo(2, 4, 2)) == torch.device("cuda", 2)
    assert engine.select_device("auto") == torch.device("cuda", 0)
    assert fake_gpus["current"] == [torch.device("cuda", 1), torch.device("cuda", 2), torch.device("cuda", 0)]
    assert engine.select_device("cpu") == CPU and len(fake_gpus["current"]) == 3
    with pytest.raises(SfcError, match="'cuda:4' asked for, but this machine has 4 GPU"):
        engine.select_device("cuda:4", option="--device")


def test_cam_copies_are_awaited_on_the_stream_of_the_tensors_gpu(monkeypatch):
    recorded = []

    class Event:
        def record(self, stream=None):
            recorded.append(stream)

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("stream of", device))
    assert isinstance(cams.copies_done(torch.device("cuda", 1)), Event)
    assert recorded == [("stream of", torch.device("cuda", 1))]
    assert cams.copies_done(CPU) is None and len(recorded) == 1


@pytest.mark.parametrize("capability,dtype", [((7, 5), torch.float16), ((7, 0), torch.float16),
                                              ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_amp_is_bfloat16_only_where_the_gpu_has_it_natively(fake_gpus, capability, dtype):
    """A T4 / RTX 20xx (7.5) emulates bfloat16 (is_bf16_supported says True): float16 there."""
    fake_gpus["capability"] = capability
    assert engine.amp_dtype(torch.device("cuda", 0)) == dtype
    assert engine.make_grad_scaler(torch.device("cuda", 0), True).is_enabled() == (dtype == torch.float16)


def test_a_gpu_preset_on_a_cpu_stops_unless_the_cpu_is_asked_for(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for preset in ("voc", "coco"):
        with pytest.raises(SfcError, match=f"the {preset} preset found no usable CUDA GPU") as error:
            engine.select_device("auto", preset=preset)
        assert "--set runtime.device=cpu" in error.value.fix
        assert engine.select_device("cpu", preset=preset) == CPU
    with pytest.raises(SfcError) as error:
        engine.select_device("auto", option="--device", preset="voc")
    assert "--device cpu" in error.value.fix
    assert engine.select_device("auto", preset="synthetic") == CPU


def test_train_on_the_voc_preset_without_a_gpu_is_one_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--preset", "voc", "--data-root", str(tmp_path / "voc"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert "voc preset found no usable CUDA GPU" in err and "--set runtime.device=cpu" in err


def test_the_start_line_names_device_precision_compile_workers_and_world_size(fake_gpus, capsys):
    engine.announce_runtime("train", torch.device("cuda", 1), engine.DistInfo(0, 4, 1), 7, True, "inductor")
    fake_gpus["capability"] = (7, 5)
    engine.announce_runtime("segment", torch.device("cuda", 0), engine.DistInfo(), 3, True)
    engine.announce_runtime("cams", torch.device("cuda", 0), engine.DistInfo(), 3, False)
    engine.announce_runtime("train", torch.device("cuda", 1), engine.DistInfo(1, 4, 1), 7, True)   # not rank 0
    engine.announce_runtime("pretrain", CPU, engine.DistInfo(), 0, True)
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [
        "train: device cuda:1 (Fake GPU; 4 GPU(s) visible), AMP bfloat16, compile inductor, "
        "7 loader worker(s), world size 4",
        "segment: device cuda:0 (Fake GPU; 4 GPU(s) visible), AMP float16, compile off, 3 loader worker(s), "
        "world size 1",
        "cams: device cuda:0 (Fake GPU; 4 GPU(s) visible), AMP off (float32), compile off, 3 loader worker(s), "
        "world size 1",
        f"pretrain: device CPU ({torch.get_num_threads()} torch threads; no GPU used), AMP off (float32), "
        "compile off, 0 loader worker(s), world size 1"]


class _Stop(Exception):
    """Raised by a stand-in right after a verb's start."""


def _stop(*args, **kwargs):
    raise _Stop


def test_train_and_segment_announce_their_runtime_once(smoke_config, smoke_dataset, tmp_path, capsys, monkeypatch):
    from sfc_core import segment, train
    from sfc_core.io import atomic_write_json
    from sfc_core.run_dir import RunDir

    monkeypatch.setattr(train, "build_trainer", _stop)
    with pytest.raises(_Stop):
        train.train(smoke_config, tmp_path / "train")
    run = RunDir(tmp_path / "run")
    smoke_config.save(run.config_json)
    atomic_write_json(run.class_names_json, list(smoke_dataset.class_names))
    monkeypatch.setattr(segment, "_train_state", _stop)
    with pytest.raises(_Stop):
        segment.segment(run.root, "gt", {"runtime.num_workers": "1"})
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines if "loader worker(s)" in line] == ["train", "segment"]
    assert any(line.startswith("segment: device CPU") and "1 loader worker(s)" in line for line in lines)


def test_cams_and_refine_irn_announce_and_stop_for_a_gpu_preset_on_a_cpu(smoke_config, smoke_dataset, tmp_path,
                                                                         capsys, monkeypatch):
    """A run of the voc preset: cams and refine irn stop unless --device cpu; refine crf (no
    network) runs on."""
    import sfc_core.refine as refine_stage
    from sfc_core.config import Config
    from sfc_core.io import atomic_torch_save, atomic_write_json
    from sfc_core.run_dir import RunDir

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = RunDir(tmp_path / "run")
    Config.from_dict({**smoke_config.to_dict(), "preset": "voc"}).save(run.config_json)
    atomic_write_json(run.class_names_json, list(smoke_dataset.class_names))
    atomic_torch_save(run.last_checkpoint, {"step": 1})
    monkeypatch.setattr(cams, "load_model", _stop)
    for name, stand_in in (("check_cams", lambda *args: None), ("refine_record", lambda *args: {}),
                           ("claim_folder", lambda *args: None), ("write_confident_labels", _stop)):
        monkeypatch.setattr(refine_stage, name, stand_in)
    with pytest.raises(SfcError, match="the voc preset found no usable CUDA GPU") as error:
        cams.make_cams(run.root)
    assert "--device cpu" in error.value.fix
    with pytest.raises(SfcError, match="the voc preset found no usable CUDA GPU"):
        refine_stage.refine(run.root, "irn")
    for stage in (lambda: refine_stage.refine(run.root, "crf"), lambda: cams.make_cams(run.root, device="cpu"),
                  lambda: refine_stage.refine(run.root, "irn", device="cpu")):
        with pytest.raises(_Stop):
            stage()
    lines = [line for line in capsys.readouterr().err.splitlines() if "loader worker(s)" in line]
    assert [line.split(":")[0] for line in lines] == ["cams", "refine irn"]
    assert lines[0].startswith("cams: device CPU") and "AMP off (float32)" in lines[0]


def test_pretrain_announces_its_cpu_run(tmp_path, capsys, monkeypatch):
    from sfc_core import pretrain

    monkeypatch.setattr(pretrain, "pretrain", _stop)
    with pytest.raises(_Stop):
        main(["pretrain", "--out", str(tmp_path)])
    assert capsys.readouterr().err.startswith("pretrain: device CPU")


# -- torch.compile and cuDNN ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["compile", "first call"])
def test_a_failing_compile_falls_back_to_eager_with_one_warning(monkeypatch, where):
    module = nn.Linear(3, 2)
    x = torch.randn(4, 3)

    def broken_compile(model, **kwargs):
        if where == "compile":
            raise RuntimeError("no C++ compiler found\nTraceback (most recent call last): ...")

        def first_call(*args, **kwargs):            # where torch.compile traces and compiles
            raise RuntimeError("backend='inductor' raised:\nInductorError: ...")
        return first_call

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(RuntimeWarning) as warned:
        wrapped = engine.compiled(module, "inductor", CPU)
        out = wrapped(x)
        again = wrapped(x)
    assert len(warned) == 1
    message = str(warned[0].message)
    assert "--set runtime.compile=off" in message and "running eagerly" in message and "Traceback" not in message
    assert torch.equal(out, module(x)) and torch.equal(again, module(x))


def test_a_compile_that_works_is_used_and_out_of_memory_is_no_compile_failure(monkeypatch):
    module = nn.Linear(3, 2)
    calls = []

    def counting(*args):
        calls.append(len(args))
        return "compiled"

    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: counting)
    wrapped = engine.compiled(module, "inductor", CPU)
    assert wrapped(torch.zeros(1, 3)) == wrapped(torch.zeros(1, 3)) == "compiled" and calls == [1, 1]

    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        engine.compiled(module, "inductor", CPU)(torch.zeros(1, 3))


def test_cudnn_autotunes_the_training_updates_only(tmp_path, monkeypatch):
    """On around each update (fixed-size crops), off again for the caller's work after a step
    (validation) and after the loop; building SFC's step on a GPU no longer switches it on for
    the process."""
    from sfc_core.config import Config
    from sfc_core.model.build import build_model, build_objective
    from sfc_core.train import step_objective

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    cfg = Config.from_preset("synthetic-smoke", {"runtime.compile": "off"})
    objective = build_objective(build_model(cfg.model, 3), torch.ones(3), cfg)
    step_objective(objective, cfg, engine.DistInfo(), torch.device("cuda", 0))
    assert torch.backends.cudnn.benchmark is False

    seen = {"update": [], "after_step": []}
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = engine.TrainState(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0),
                              engine.make_grad_scaler(CPU, False), {}, {})
    batches = loop.batches(_Items(), lambda epoch: [(epoch, i) for i in range(4)], 2, 2, range(3), 0, CPU)

    def update(batch):
        optimizer.step()
        seen["update"].append(torch.backends.cudnn.benchmark)
        return {"loss": torch.tensor(0.0)}
    for _ in loop.fit(state, batches, update, loop.Plan(3, 1, 10), tmp_path / "last.pt", engine.DistInfo()):
        seen["after_step"].append(torch.backends.cudnn.benchmark)
    assert seen == {"update": [True] * 3, "after_step": [False] * 3}
    assert torch.backends.cudnn.benchmark is False


class _Items(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, key):
        return torch.tensor(key[1])


def test_loop_workers_keep_two_batches_ready():
    batches = loop.batches(_Items(), lambda epoch: [(epoch, i) for i in range(4)], 2, 2, range(2), 1, CPU)
    assert batches.prefetch_factor == loop.LOADER_PREFETCH == 2


# -- CAMs in float32 ------------------------------------------------------------------------


@pytest.fixture
def recorded_autocast(monkeypatch):
    """Every ``enabled`` the CAM code passes to autocast (``engine.autocast``: cams and train call it)."""
    calls = []

    def recording(device, enabled=True):
        calls.append(enabled)
        return contextlib.nullcontext()

    monkeypatch.setattr(engine, "autocast", recording)
    return calls


@pytest.mark.parametrize("asked", [None, "true"])
def test_cams_and_validation_maps_run_without_autocast_unless_asked(smoke_config, smoke_dataset,
                                                                    recorded_autocast, asked):
    from sfc_core.config import Config
    from sfc_core.data import MultiScaleDataset
    from sfc_core.model.build import build_model
    from sfc_core.train import validate

    cfg = Config.from_dict(smoke_config.to_dict()).override({"runtime.num_workers": 0})
    assert cfg.runtime.amp is True and cfg.cams.amp is False
    if asked:
        cfg.override({"cams.amp": asked})
    model = build_model(cfg.model, smoke_dataset.num_classes).eval()
    views = MultiScaleDataset(smoke_dataset, cfg.data.train_list, scales=(1.0,))
    with torch.inference_mode():
        cams._kept_maps(model, cfg, [views[0], views[1]], CPU)
    validate(model, smoke_dataset, cfg.override({"cams.batch_size": 30}), CPU)
    assert recorded_autocast and set(recorded_autocast) == {bool(asked)}
    assert cams.cams_record(cfg, {}, ["a"], (1.0,))["amp"] is bool(asked)


# -- uint8 crops for IRN and step 3 ---------------------------------------------------------


def test_step3_crops_are_uint8_and_normalise_on_the_device_to_the_float_crops(smoke_config, smoke_dataset):
    from sfc_core.data.transforms import augment, normalize_crops
    from sfc_core.masks import IGNORE
    from sfc_core.segment import MaskedCrops

    seg = smoke_config.segment
    ids = smoke_dataset.ids(smoke_config.data.train_list)[:6]
    crops = MaskedCrops(smoke_dataset, ids, smoke_dataset.read_mask, seg, seed=5)
    for key in [(0, i) for i in range(6)] + [(3, 2)]:
        image, mask, box = crops[key]
        assert image.dtype == mask.dtype == torch.uint8 and image.shape == (3, seg.crop_size, seg.crop_size)
        rng = np.random.default_rng([5, *key])
        want_image, want_mask, _ = augment(smoke_dataset.read_image(ids[key[1]]), smoke_dataset.read_mask(ids[key[1]]),
                                           rng, seg.crop_size, float(rng.uniform(*seg.scale_range)), seg.flip, IGNORE)
        assert torch.equal(normalize_crops(image[None], box[None], CPU)[0],
                           torch.from_numpy(want_image.transpose(2, 0, 1).copy()))
        assert torch.equal(mask.long(), torch.from_numpy(want_mask.astype(np.int64)))


def test_irn_crops_are_uint8_and_normalise_on_the_device_to_the_float_crops(smoke_config, smoke_dataset, tmp_path):
    from sfc_core.data.transforms import augment, normalize_crops
    from sfc_core.masks import IGNORE, save_mask
    from sfc_core.refine.irn import AffinityDataset
    from sfc_core.run_dir import RunDir

    run, refine = RunDir(tmp_path), smoke_config.refine
    ids = smoke_dataset.ids(smoke_config.data.train_list)[:4]
    for image_id in ids:
        save_mask(run.relation_labels / f"{image_id}.png", smoke_dataset.read_mask(image_id))
    data = AffinityDataset(smoke_dataset, ids, run, refine, seed=2)
    for key in [(0, i) for i in range(4)] + [(1, 3)]:
        item = data[key]
        assert item["image"].dtype == item["label"].dtype == torch.uint8
        rng = np.random.default_rng([2, *key])
        scale = rng.uniform(*data.scale_range)
        want_image, want_label, _ = augment(smoke_dataset.read_image(ids[key[1]]), smoke_dataset.read_mask(ids[key[1]]),
                                            rng, refine.irn_crop_size, scale, mask_fill=IGNORE)
        assert torch.equal(normalize_crops(item["image"][None], item["box"][None], CPU)[0],
                           torch.from_numpy(want_image.transpose(2, 0, 1).copy()))
        assert torch.equal(item["label"].long(), torch.from_numpy(want_label.astype(np.int64)))


# -- SyncBatchNorm for step 3 under torchrun ------------------------------------------------


def _small_segmenter() -> nn.Module:
    from sfc_core.segment import build_network

    return build_network("lraspp_mobilenet_v3_large", 3, "none")


def test_step3_batchnorm_becomes_sync_batchnorm_only_distributed_on_gpus_and_when_it_trains():
    from sfc_core.segment import sync_batchnorm

    model = _small_segmenter()
    parameters, keys = [id(p) for p in model.parameters()], list(model.state_dict())
    two = engine.DistInfo(0, 2, 0)
    assert sync_batchnorm(model, engine.DistInfo(), torch.device("cuda", 0)) is model     # one process
    assert sync_batchnorm(model, two, CPU) is model                                         # gloo: no SyncBN on CPUs
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    synced = sync_batchnorm(model, two, torch.device("cuda", 0))
    norms = [m for m in synced.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    assert [id(p) for p in synced.parameters()] == parameters and list(synced.state_dict()) == keys
    frozen = _small_segmenter()
    for m in frozen.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.requires_grad_(False)
    assert sync_batchnorm(frozen, two, torch.device("cuda", 0)) is frozen
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in frozen.modules())
