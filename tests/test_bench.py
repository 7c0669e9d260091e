"""The bench verb and its reference-style (--naive) training step.

The naive step must compute what the kit's step computes: the same losses and gradients on
the same batch and weights. The benchmark itself runs once, in a tiny CPU configuration, and
must report well-formed numbers (no timing is asserted).
"""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from benchmarks import bench, measure, reference_step
from sfc_core.config import Config
from sfc_core.errors import SfcError
from sfc_core.method import cam as cam_math
from sfc_core.method.coefficients import distribution_coefficients
from sfc_core.model.build import build_model, build_objective

NUM_CLASSES = 4


@pytest.fixture()
def tiny_config():
    return Config.from_preset("synthetic-smoke", {"data.crop_size": 32, "data.resize_long": (16, 40)})


def test_reference_prototype_cam_matches_the_kit():
    torch.manual_seed(0)
    cam = torch.rand(3, NUM_CLASSES + 1, 5, 6)
    features = torch.randn(3, 7, 5, 6)
    valid_mask = torch.ones(3, NUM_CLASSES + 1, 5, 6)
    valid_mask[0, 2] = 0                            # an absent class: no seeds, a zero prototype
    valid_mask[1, :, :, :2] = 0                     # padding
    seeds = cam_math.seeds(cam, valid_mask, 0.3)
    expected = cam_math.prototype_cam(features, cam_math.prototypes(seeds, features))
    got = reference_step.reference_prototype_cam(cam.clone(), features, valid_mask, 0.3)
    assert got.shape == (3, NUM_CLASSES + 1, 5, 6)
    assert torch.allclose(got, expected, atol=1e-6)
    assert got[0, 2].abs().max() == 0


def test_reference_class_weights_are_the_coefficients_in_frequency_order():
    counts = np.array([30, 500, 80, 200])
    second = np.array([900.0, 4000.0, 700.0, 1000.0])
    order, weights = reference_step.reference_class_weights(counts, second, 12.0)
    assert order == [1, 3, 2, 0]
    raw = second / (counts + 12.0)
    expected = raw / raw.mean()
    assert np.allclose([weights[order.index(c)] for c in range(4)], expected)


def test_reference_bank_keeps_the_last_image_of_each_class_and_draws_from_all_slots():
    bank = reference_step.ReferenceBank(3, crop_size=2, seed=0)
    images = torch.arange(4, dtype=torch.float32)[:, None, None, None].expand(4, 3, 2, 2)
    valid_masks = torch.ones(4, 4, 2, 2)
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.float32)
    bank.update(images, valid_masks, labels)
    assert bank.images[:, 0, 0, 0].tolist() == [1, 2, 0]          # class 2 never seen: still empty
    assert bank.labels.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    drawn_images, drawn_masks, drawn_labels = bank.draw(50, torch.device("cpu"))
    assert drawn_images.shape == (50, 3, 2, 2) and drawn_masks.shape == (50, 4, 2, 2)
    assert set(drawn_images[:, 0, 0, 0].tolist()) == {0.0, 1.0, 2.0}   # the empty slot is drawn too
    assert drawn_images.data_ptr() != bank.images.data_ptr()


def test_naive_step_computes_the_kit_losses_and_gradients(tiny_config):

    cfg = measure.bench_config(tiny_config)
    torch.manual_seed(0)
    model = build_model(cfg.model, NUM_CLASSES)
    statistics = measure.class_statistics(NUM_CLASSES, batch_size=6, bank_draws=2)
    weights = torch.as_tensor(distribution_coefficients(*statistics), dtype=torch.float32)
    batch = measure.loader_batches(1, 6, cfg.data.crop_size, cfg.data.resize_long, statistics[0], seed=3)[0]
    images, boxes, labels = batch["image"], batch["box"], batch["label"]
    crop = cfg.data.crop_size
    assert (boxes[:, 1] - boxes[:, 0] < crop).any()             # some crops are padded

    kit_model = copy.deepcopy(model)
    kit = build_objective(kit_model, weights, cfg)
    kit_losses, _ = kit(images, boxes, labels)

    reference = reference_step.reference_network(model)
    valid_mask = torch.stack([reference_step.reference_valid_mask(box, NUM_CLASSES + 1, crop) for box in boxes])
    valid_mask[:, 1:] *= labels[:, :, None, None]
    naive_losses = reference_step.reference_losses(reference, images, valid_mask, labels, statistics,
                                          cfg.loss.prototype_weight, cfg.loss.scale_weight)

    assert set(naive_losses) == set(kit_losses) == {"cls", "prototype", "scale", "total"}
    for name in kit_losses:
        assert kit_losses[name].item() > 0
        assert naive_losses[name].item() == pytest.approx(kit_losses[name].item(), rel=1e-5, abs=1e-7), name
    kit_losses["total"].backward()
    naive_losses["total"].backward()
    kit_grads = dict(kit_model.named_parameters())
    for name, parameter in reference.named_parameters():
        if parameter.grad is None:
            assert kit_grads[name].grad is None, name
            continue
        assert torch.allclose(parameter.grad, kit_grads[name].grad, rtol=1e-3, atol=1e-6), name


def test_bad_bench_arguments_are_sfc_errors(tiny_config):
    with pytest.raises(SfcError, match="unknown benchmark stage"):
        bench.bench(tiny_config, device="cpu", stages=("training",))
    with pytest.raises(SfcError, match="bad counts"):
        bench.bench(tiny_config, device="cpu", steps=0, stages=("eval",))


def _finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_bench_verb_reports_well_formed_numbers(tmp_path, capsys):
    from sfc_core.cli import main

    out = tmp_path / "bench.json"
    argv = ["bench", "--preset", "synthetic-smoke", "--device", "cpu", "--steps", "1", "--warmup", "1",
            "--repeats", "2", "--naive", "--out", str(out),
            "--set", "data.crop_size=32", "--set", "data.resize_long=16,40",
            "--set", "train.batch_size=4", "--set", "train.bank_draws=2",
            "--set", "segment.crop_size=32", "--set", "segment.batch_size=2"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())

    assert set(printed) == {"preset", "machine", *bench.STAGES}
    assert printed["machine"]["device"] == "cpu" and printed["machine"]["torch"] == torch.__version__
    train = printed["train"]
    assert (train["batch_size"], train["bank_draws"], train["crop_size"]) == (4, 2, 32)
    for variant in ("kit", "naive"):
        figures = train[variant]
        assert _finite_positive(figures["images_per_s"]) and _finite_positive(figures["seconds_per_step"])
        assert set(figures["time_split_s"]) == set(bench.PHASES)
        assert all(_finite_positive(v) for v in figures["time_split_s"].values())
        assert sum(figures["time_split_s"].values()) == pytest.approx(figures["seconds_per_step"])
        assert _finite_positive(figures["peak_memory_mb"])
        assert _finite_positive(figures["cpu_seconds_per_step"])
    assert train["speedup"] == pytest.approx(train["kit"]["images_per_s"] / train["naive"]["images_per_s"])
    assert len(train["speedup_per_repeat"]) == 2 and all(map(_finite_positive, train["speedup_per_repeat"]))
    assert train["speedup_median"] == pytest.approx(float(np.median(train["speedup_per_repeat"])))
    assert train["speedup_cpu"] == pytest.approx(train["naive"]["cpu_seconds_per_step"]
                                                 / train["kit"]["cpu_seconds_per_step"])

    cams = printed["cams"]
    assert _finite_positive(cams["images_per_s"]) and cams["scales"] == [1.0, 0.5] and cams["flip"] is True
    evaluation = printed["eval"]
    assert (evaluation["masks"], evaluation["mask_size"]) == (1464, [375, 500])
    smoke_classes = measure.num_foreground_classes(Config.from_preset("synthetic-smoke"))
    assert evaluation["num_classes"] == smoke_classes + 1
    assert all(_finite_positive(evaluation[key]) for key in ("masks_per_s", "seconds", "cpu_seconds"))
    segment = printed["segment"]
    assert _finite_positive(segment["images_per_s"])
    assert (segment["batch_size"], segment["crop_size"]) == (2, 32)

    write = printed["camwrite"]
    assert (write["image_size"], write["rows"], write["files"]) == ([375, 500], 3, 1)
    stored = 2 * 3 * 375 * 500 * 2                                # two float16 (3, 375, 500) maps
    assert stored < write["kit"]["bytes"] < stored + 4096         # stored: the maps and small headers
    assert write["today"]["bytes"] < stored                       # deflated
    assert all(_finite_positive(write[v][key]) for v in ("today", "kit")
               for key in ("ms_per_file", "cpu_ms_per_file", "read_ms_per_file"))
    stage = printed["camstage"]
    assert stage["today_max_abs_diff"] <= 2e-3 and stage["images"] == 1 and stage["scales"] == [1.0, 0.5]
    assert all(_finite_positive(stage[v]["images_per_s"]) for v in ("today", "kit", "network"))
    assert stage["speedup_wall"] == pytest.approx(stage["kit"]["images_per_s"] / stage["today"]["images_per_s"])


def test_the_step_flops_are_counted_per_image_on_the_meta_device(tiny_config):
    from benchmarks import report

    cfg = measure.bench_config(tiny_config)
    small = report.step_flops(cfg.override({"train.batch_size": 4, "train.bank_draws": 2}), NUM_CLASSES)
    large = report.step_flops(cfg.override({"train.batch_size": 8, "train.bank_draws": 4}), NUM_CLASSES)
    assert small > 1e6 and large == 2 * small          # convolutions and matmuls: linear in the images
    assert report.peak_for_name("NVIDIA H200") == 989e12 and report.peak_for_name("NVIDIA H100 PCIe") == 756e12
    assert report.peak_for_name("NVIDIA H100 80GB HBM3") == 989e12 and report.peak_for_name("a CPU") is None


@pytest.mark.slow                   # 41-88 s on a loaded 2-core CPU, most of it tracing the compiled step
def test_the_gpu_report_dry_run_reports_every_part_on_the_cpu(tmp_path, capsys):
    from benchmarks import report
    from sfc_core.cli import main

    assert main(["bench", "--report", "--device", "cpu", "--preset", "synthetic-smoke"]) != 0
    assert "the GPU report needs a CUDA device" in capsys.readouterr().err
    out = tmp_path / "report.json"
    assert main(["bench", "--report", "--dry-run", "--preset", "synthetic-smoke", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert printed.startswith(out.with_suffix(".md").read_text())
    assert json.loads(printed[printed.index("\n{") + 1:]) == result
    assert not [key for key, value in result.items() if isinstance(value, dict) and "error" in value]
    assert result["dry_run"] is True and result["machine"]["device"] == "cpu"
    assert (result["batch_size"], result["bank_draws"], result["crop_size"]) == (4, 2, 32)
    assert result["flops_per_step"] > 0 and result["peak_bf16_flops"] == report.NOT_ON_CPU
    variants = result["step"]["variants"]
    assert set(variants) == set(report.STEP_VARIANTS)
    for name, figures in variants.items():
        assert _finite_positive(figures["images_per_s"]) and _finite_positive(figures["first_step_s"]), name
        assert figures["mfu"] is None and figures["amp"] is False and figures["channels_last"] is False
    assert variants["all on"]["compile"] == "aot_eager" and variants["compile off"]["compile"] is None
    assert _finite_positive(variants["all on"]["compile_s"] + variants["all on"]["seconds_per_step"])
    assert variants["all on"]["syncs_per_step"] == variants["all on"]["busy"] == report.NOT_ON_CPU
    for change, (on, off) in report.CHANGES.items():
        figures = result["step"]["changes"][change]
        assert figures["ratio"] == pytest.approx(variants[on]["images_per_s"] / variants[off]["images_per_s"])
    loop = result["loop"]
    assert all(_finite_positive(loop[kind]["images_per_s"]) for kind in ("uint8", "float32"))
    assert loop["uint8"]["num_workers"] == 2                     # "auto" on the CPU
    assert all(_finite_positive(result[stage]["images_per_s"]) for stage in ("cams", "segment"))
    assert result["camstage"]["today_max_abs_diff"] <= 2e-3
    for row in ("| all on |", "| compile |", "| uint8 loader", "| step 3 training |", "n/a on CPU"):
        assert row in printed, row


def test_speed_changes_prints_each_change_beside_the_way_before(capsys):
    from benchmarks import speed_changes

    assert speed_changes.main(["--repeats", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 5                                   # the header and four changes
    for row in rows[1:]:
        before, after, ratio = (float(cell) for cell in row.strip("| ").split(" | ")[3:6])
        assert before > 0 and after > 0 and ratio == pytest.approx(after / before, abs=0.01)
