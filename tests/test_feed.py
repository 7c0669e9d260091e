"""Feeding the device: uint8 from the loaders, normalised on the device with the float32
arithmetic of the CPU path; CAM files written beside the device, readable old and new."""
from __future__ import annotations

import threading
import zipfile

import numpy as np
import pytest
import torch

from sfc_core.cam_files import load_cam, save_cam
from sfc_core.data.transforms import device_views, hflip, normalize, normalize_on_device, rescale
from sfc_core.errors import SfcError
from sfc_core.io import BackgroundWriter
from sfc_core.run_dir import RunDir


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 13, 3), (375, 500, 3)])
def test_normalize_on_device_equals_the_cpu_normalisation_bit_for_bit(shape):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    image.flat[:2] = (0, 255)
    on_device = normalize_on_device(torch.from_numpy(image.transpose(2, 0, 1).copy()), "cpu")
    assert on_device.dtype == torch.float32
    np.testing.assert_array_equal(on_device.numpy(), normalize(image).transpose(2, 0, 1))


def test_device_views_equal_the_old_loader_views_at_every_scale():
    """The float32 (2, 3, h, w) pair the loader used to make (normalise, then flip on the
    CPU), against uint8 rescaled in the loader, normalised and flipped on the device."""
    image = np.random.default_rng(1).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    for scale in (1.0, 0.5, 1.5, 2.0):
        scaled = normalize(rescale(image, scale))
        old = torch.from_numpy(np.stack([scaled, hflip(scaled)]).transpose(0, 3, 1, 2).copy())
        uint8 = torch.from_numpy(rescale(image, scale).transpose(2, 0, 1).copy())
        assert torch.equal(device_views(uint8, "cpu"), old)
        assert torch.equal(device_views(uint8, "cpu", flip=False), old[:1])


def test_normalisation_constants_work_outside_inference_mode_after_first_use_inside():
    image = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    with torch.inference_mode():
        normalize_on_device(image, "cpu")
    weight = torch.ones(3, requires_grad=True)
    (normalize_on_device(image, "cpu") * weight[:, None, None]).sum().backward()
    assert weight.grad is not None


def test_float16_on_the_device_rounds_as_numpy():
    """The cams stage converts to float16 before the copy back; the files used to be
    rounded by numpy's astype. Both round to nearest even, subnormals included."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.random(100_000, dtype=np.float32),
                             rng.random(1000, dtype=np.float32) * 1e-5,
                             np.float32([0.0, 1.0, 6.1e-5, 2.98e-8, 65504.0, 1 / 3])])
    assert np.array_equal(torch.from_numpy(values).half().numpy().view(np.uint16),
                          values.astype(np.float16).view(np.uint16))


def test_cam_files_are_stored_and_old_compressed_files_still_read(tmp_path):
    run = RunDir(tmp_path)
    keys = np.array([0, 2, 5])
    rng = np.random.default_rng(3)
    classifier, prototype = rng.random((2, 3, 20, 30), dtype=np.float32)
    save_cam(run.cam_file("new"), keys, {"classifier": classifier, "prototype": prototype}, 20)
    with zipfile.ZipFile(run.cam_file("new")) as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
    np.savez_compressed(run.cam_file("old"), keys=keys, classifier=classifier.astype(np.float16),
                        prototype=prototype.astype(np.float16), size=np.array([20, 30]),
                        num_classes=np.array(20))
    with zipfile.ZipFile(run.cam_file("old")) as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    new, old = load_cam(run, "new", num_classes=20), load_cam(run, "old", num_classes=20)
    for a, b in ((new.maps["classifier"], old.maps["classifier"]), (new.maps["prototype"], old.maps["prototype"]),
                 (new.keys, old.keys)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(new.maps["classifier"], classifier.astype(np.float16).astype(np.float32))


def test_background_writer_waits_for_every_call_and_bounds_the_queue():
    release, done, lock = threading.Event(), [], threading.Lock()
    most_waiting = [0]

    def write(i):
        release.wait(5)
        with lock:
            done.append(i)

    with BackgroundWriter(threads=1, depth=3) as writer:
        starter = threading.Thread(target=lambda: [writer.submit(write, i) for i in range(6)])
        starter.start()
        starter.join(0.3)
        most_waiting[0] = len(writer._pending)
        assert starter.is_alive()           # the 4th submit blocks: 3 calls hold the slots
        release.set()
        starter.join(5)
    assert most_waiting[0] == 3
    assert sorted(done) == list(range(6))


def test_background_writer_raises_a_writer_error_in_the_caller():
    def fail(_):
        raise SfcError("cannot write a CAM file (No space left on device)", fix="free space")

    with pytest.raises(SfcError, match="No space left"):
        with BackgroundWriter() as writer:
            writer.submit(fail, 0)


def test_cams_stage_names_the_file_a_writer_could_not_write(tmp_path, monkeypatch):
    from sfc_core import cams

    def full_disk(path, *args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cams, "save_cam", full_disk)
    run = RunDir(tmp_path)
    maps = torch.zeros(2, 1, 4, 4, dtype=torch.float16)
    with pytest.raises(SfcError) as error:
        with BackgroundWriter() as writer:
            writer.submit(cams._save_cam_file, run, "2007_000001", np.array([0]), maps, None, 20)
    message = str(error.value)
    assert "No space left on device" in message and str(run.cam_file("2007_000001")) in message
    assert f"python -m sfc_core cams --run {run.root}" in message


def test_loader_workers_auto_shares_this_process_cores_over_the_node_and_caps_them(monkeypatch):
    """"auto" on a GPU: min(8, max(1, cores this process may use // LOCAL_WORLD_SIZE - 1)); 2 on a
    CPU; a count as given."""
    from sfc_core import engine
    from sfc_core.config import Config

    cfg = Config.from_preset("synthetic")
    assert cfg.runtime.num_workers == "auto"
    cuda = torch.device("cuda")
    monkeypatch.setattr(engine.os, "cpu_count", lambda: 256)        # the node's: not what counts
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for allowed, local_world, workers in ((64, None, 8), (32, "4", 7), (16, "4", 3), (8, "4", 1),
                                          (6, None, 5), (1, None, 1), (16, "32", 1)):
        monkeypatch.setattr(engine.os, "sched_getaffinity", lambda pid, n=allowed: set(range(n)))
        if local_world is not None:
            monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)
        assert engine.loader_workers("auto", cuda) == workers, (allowed, local_world)
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert engine.loader_workers("auto", torch.device("cpu")) == engine.CPU_LOADER_WORKERS == 2
    assert engine.loader_workers(cfg.override({"runtime.num_workers": "3"}).runtime.num_workers, cuda) == 3
    for bad in ("-1", "many"):
        with pytest.raises(SfcError, match="runtime.num_workers"):
            cfg.override({"runtime.num_workers": bad})
