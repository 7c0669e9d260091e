"""One image through a trained SFC network step by step: the walk-through of notebook 03.

The maps are the network's own forward's (``SfcNet.forward(..., intermediates=True)``: classifier
CAM before PCM, hierarchical features, seeds, prototypes, prototype CAM); this module only picks
the images and draws. (The losses split by class are notebook 02's: ``analysis/training.py``.)

    picked = pick_head_and_tail(dataset.labels("train"), counts)   # {"head": (i, k), "tail": (i, k)}
    walk = walk_image(model, MultiScaleDataset(dataset, "train", (1.0,)), i)   # walk["steps"]: the maps
    fig = cam_panels([(walk["image"], [walk["steps"]["classifier_cam"][0, 1]], ["classifier CAM"])])
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from sfc_core.data import MultiScaleDataset
from sfc_core.data.transforms import device_views
from sfc_core.method.cam import COSINE_EPS
from sfc_core.method.network import SfcNet


def pick_head_and_tail(labels: np.ndarray, counts: Sequence[int]) -> dict[str, tuple[int, int]]:
    """``{"head": (image index, class index), "tail": ...}``: the most / least frequent class
    (counts (C,)) present in labels (N, C), each in its image with the fewest classes (first on ties)."""
    present = np.asarray(labels) > 0.5
    counts = np.asarray(counts, dtype=np.float64)
    in_list = present.any(axis=0)
    if not in_list.any():
        raise ValueError("no image of the list has a class")
    order = np.where(in_list, counts, np.nan)
    picked = {}
    for role, k in (("head", int(np.nanargmax(order))), ("tail", int(np.nanargmin(order)))):
        candidates = np.flatnonzero(present[:, k])
        picked[role] = (int(candidates[np.argmin(present[candidates].sum(axis=1))]), k)
    return picked


@torch.no_grad()
def walk_image(model: SfcNet, views: MultiScaleDataset, index: int) -> dict[str, Any]:
    """Image ``index`` of ``views`` (first scale) through the network with mask [1, label]: ``id``,
    ``image``, ``images``, ``label``, ``classes`` and ``steps`` (the forward's intermediates)."""
    item = views[index]
    device = next(model.parameters()).device
    images = device_views(item["images"][0], device, flip=False)
    label = item["label"].to(device)
    valid = torch.cat([label.new_ones(1), label]).to(images.dtype)[None, :, None, None]
    return {"id": item["name"], "image": item["images"][0].permute(1, 2, 0).numpy(), "images": images,
            "label": label, "classes": [int(k) for k in np.flatnonzero(item["label"].numpy() > 0.5)],
            "steps": model(images, valid, intermediates=True)}


def class_rows(walks: dict[str, dict[str, Any]], key: str,
               class_names: Sequence[str]) -> list[tuple[np.ndarray, list[torch.Tensor], list[str]]]:
    """``cam_panels`` rows of one step: map ``steps[key]`` of each image's classes, "role: class"."""
    return [(walk["image"], [walk["steps"][key][0, k + 1] for k in walk["classes"]],
             [f"{role}: {class_names[k]}" for k in walk["classes"]]) for role, walk in walks.items()]


def cam_panels(rows: Sequence[tuple[np.ndarray, Sequence[Any], Sequence[str]]], vmax: float | None = 1.0,
               size: float = 2.0) -> plt.Figure:
    """Rows of panels ``rows`` = [(image, panels, titles)]: an (h, w) panel upsampled over the
    image (jet, colour bar 0..``vmax``, None: its maximum), an (h, w, 3) panel as is."""
    cols = max(len(panels) for _, panels, _ in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(size * 1.3 * cols, size * len(rows)), squeeze=False)
    for ax_row, (image, panels, titles) in zip(axes, rows):
        for ax in ax_row[len(panels):]:
            ax.axis("off")
        for ax, panel, title in zip(ax_row, panels, titles):
            panel = panel.cpu().numpy() if isinstance(panel, torch.Tensor) else np.asarray(panel)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
            if panel.ndim == 3:
                ax.imshow(panel, interpolation="nearest")
                continue
            grid = torch.as_tensor(panel, dtype=torch.float32)[None, None]   # bilinear, as the cams stage
            shown = F.interpolate(grid, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
            ax.imshow(image)
            top = vmax if vmax is not None else max(float(shown.max()), 1e-8)
            im = ax.imshow(shown, cmap="jet", alpha=0.5, vmin=0.0, vmax=top, interpolation="nearest")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def prototype_similarity(prototypes: torch.Tensor) -> np.ndarray:
    """(K', K') cosine similarity between an image's prototypes (K', D), 0 where one is zero."""
    unit = prototypes / prototypes.norm(dim=1, keepdim=True).clamp_min(COSINE_EPS)
    return (unit @ unit.T).cpu().numpy()


def feature_rgb(features: torch.Tensor) -> np.ndarray:
    """Features (D, h, w) as an (h, w, 3) picture in [0, 1]: their first three principal components."""
    d, h, w = features.shape
    x = features.reshape(d, h * w).T.double()
    x = x - x.mean(dim=0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    pcs = x @ v[:3].T
    pcs = (pcs - pcs.amin(dim=0)) / (pcs.amax(dim=0) - pcs.amin(dim=0)).clamp_min(1e-12)
    return pcs.reshape(h, w, -1).float().numpy()
