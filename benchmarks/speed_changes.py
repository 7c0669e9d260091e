"""The default run's CPU speed changes, each beside the way before it, in one process.

    python -m benchmarks.speed_changes                 # one torch thread, 5 interleaved repeats
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m benchmarks.speed_changes

CPU milliseconds at the synthetic-paper sizes, random weights and inputs (no dataset), of: the CRF
of two maps (a CRF each, or one sharing its pairwise terms), CAMs with BatchNorms folded (``model.build.fold_batchnorms``) or not,
step 3's evaluation folded and channels-last or not, a step-3 step at batch 16 and 8. Variants
alternate repeat by repeat; each figure is the median. Prints one markdown table.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sfc_core.analysis.plots import table_markdown
from sfc_core.config import Config
from sfc_core.crf import crf_labels
from sfc_core.model.build import build_model, fold_batchnorms, for_inference, multiscale_cams_batch
from sfc_core.segment import build_network, scale_probabilities


def cpu_ms(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return 1000 * (time.process_time() - start)


def with_batchnorm_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Random running statistics and affine parameters, as a trained network has (eval mode)."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def crf_pairs(rng: np.random.Generator) -> dict[str, Callable[[], object]]:
    # flat regions with a little noise, as the synthetic images are (uniform noise makes the
    # bilateral lattice far larger than a real image's, and the shared-terms saving with it)
    blocks = np.kron(rng.integers(0, 256, (6, 6, 3)), np.ones((16, 16, 1)))
    image = np.clip(blocks + rng.normal(0, 8, blocks.shape), 0, 255).astype(np.uint8)
    maps = [np.kron(rng.integers(0, 4, (6, 6)), np.ones((16, 16), np.int64)) for _ in range(2)]
    cfg = Config.from_preset("synthetic-paper").refine
    return {"before": lambda: [crf_labels(image, [m], 4, cfg) for m in maps],
            "after": lambda: crf_labels(image, maps, 4, cfg)}


def cam_pairs(cfg: Config) -> dict[str, Callable[[], object]]:
    model = with_batchnorm_statistics(build_model(dataclasses.replace(cfg.model, backbone_weights="none"), 10))
    folded = fold_batchnorms(copy.deepcopy(model))
    scales = [torch.randn(16, 3, round(96 * s), round(96 * s)).contiguous(memory_format=torch.channels_last)
              for s in cfg.cams.scales]
    labels = (torch.rand(8, 10) < 0.2).float()

    def run(net: torch.nn.Module) -> Callable[[], object]:
        net = net.to(memory_format=torch.channels_last)
        return lambda: multiscale_cams_batch(net, scales, labels, (96, 96))
    return {"before": run(model), "after": run(folded)}


def step3_eval_pairs(cfg: Config) -> dict[str, Callable[[], object]]:
    model = with_batchnorm_statistics(build_network(cfg.segment.network, 11, "none"))
    fast = for_inference(model, channels_last=True)
    views = [torch.randn(2, 3, round(96 * s), round(96 * s)) for s in cfg.segment.eval_scales]
    fast_views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    return {"before": lambda: [scale_probabilities(model, v, (96, 96)) for v in views],
            "after": lambda: [scale_probabilities(fast, v, (96, 96)) for v in fast_views]}


def step3_train_pairs(cfg: Config) -> dict[str, Callable[[], object]]:
    model = build_network(cfg.segment.network, 11, "none").train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    crop = cfg.segment.crop_size

    def step(batch: int) -> Callable[[], object]:
        images, masks = torch.randn(batch, 3, crop, crop), torch.randint(0, 11, (batch, crop, crop))

        def run() -> None:
            with torch.enable_grad():              # measure() runs under no_grad
                loss = F.cross_entropy(model(images)["out"], masks)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return run
    return {"before": step(16), "after": step(cfg.segment.batch_size)}


def measure(pairs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median CPU ms of each variant, the variants alternating; one untimed warm-up each."""
    for fn in pairs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in pairs}
    for _ in range(repeats):
        for name, fn in pairs.items():
            times[name].append(cpu_ms(fn))
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = Config.from_preset("synthetic-paper")
    cases = [("dense CRF, two maps of one image", "a CRF each", "pairwise terms shared", crf_pairs(np.random.default_rng(0))),
             ("CAMs of 8 images, 4 scales + flip", "BatchNorm", "BatchNorm folded", cam_pairs(cfg)),
             ("step-3 evaluation, one image, 3 scales + flip", "as trained", "folded, channels-last",
              step3_eval_pairs(cfg)),
             ("step-3 training step", "batch 16", f"batch {cfg.segment.batch_size}", step3_train_pairs(cfg))]
    rows = []
    for what, before, after, pairs in cases:
        with torch.no_grad():
            ms = measure(pairs, args.repeats)
        rows.append({"what": what, "before": before, "after": after, "CPU ms before": ms["before"],
                     "CPU ms after": ms["after"], "after / before": ms["after"] / ms["before"]})
    print(f"torch CPU kernels {torch.backends.cpu.get_cpu_capability()}, {args.threads} thread(s), "
          f"median of {args.repeats} repeats")
    print(table_markdown(rows, digits=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
