"""The CAM math of SFC as pure functions (docs/method.md 2, docs/reference.md 2.3-2.4).

Shapes: N images, C foreground classes, K = C+1 channels with background at channel 0,
(h, w) the feature grid, P = h*w pixels, D feature channels.

    cam = pixel_correlation(classifier_cam(logit_map, valid_mask), pcm_features)   # (N, K, h, w)
    features = hierarchical_features([s1, s2, s3, s4], (h, w))                     # (N, D, h, w)
    seed = seeds(cam, valid_mask, background_scale=0.3)                            # one-hot, no gradient
    proto_cam = prototype_cam(features, prototypes(seed, features))
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5            # the reference's eps for max- and L2-normalisation
COSINE_EPS = 1e-8     # torch.cosine_similarity's eps, as the reference's prototype CAM


def max_normalise(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(N, K, h, w) -> each (image, channel) divided by its spatial max + eps."""
    return x / (x.amax(dim=(-2, -1), keepdim=True) + eps)


def l2_normalise(x: torch.Tensor, dim: int = 1, eps: float = EPS) -> torch.Tensor:
    """x / (||x||_2 + eps) along ``dim`` (the reference's form, not F.normalize's max(., eps))."""
    return x * (x.norm(dim=dim, keepdim=True) + eps).reciprocal()


def classifier_cam(logit_map: torch.Tensor, valid_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Max-normalised classifier CAM with a background channel: (N, C, h, w) raw map ->
    (N, K, h, w), channel 0 = 1 - max over classes, 1..C = maxnorm(relu(map)), times ``valid_mask``
    ((N, K, h, w), broadcastable, or None)."""
    foreground = max_normalise(F.relu(logit_map))
    background = 1 - foreground.amax(dim=1, keepdim=True)
    cam = torch.cat([background, foreground], dim=1)
    return cam if valid_mask is None else cam * valid_mask


def pixel_correlation(cam: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """PCM (SEAM): cam (N, K, h, w) @ A @ A with A = relu(f^T f) of the L2-normalised
    features (N, D, h, w), column-normalised (eps 1e-5); not re-normalised."""
    n, k, h, w = cam.shape
    f = l2_normalise(features.flatten(2))                          # (N, D, P)
    affinity = F.relu(torch.bmm(f.transpose(1, 2), f))             # (N, P, P)
    affinity = affinity / (affinity.sum(dim=1, keepdim=True) + EPS)
    refined = torch.bmm(torch.bmm(cam.reshape(n, k, h * w), affinity), affinity)
    return refined.reshape(n, k, h, w)


def hierarchical_features(sides: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Side features [(N, D_i, h_i, w_i)] each L2-normalised over channels, resized to
    ``size`` (bilinear, align_corners=False, no anti-aliasing) and concatenated: (N, sum D_i, h, w)."""
    return torch.cat([F.interpolate(l2_normalise(side), size=size, mode="bilinear", align_corners=False)
                      for side in sides], dim=1)


@torch.no_grad()
def seeds(cam: torch.Tensor, valid_mask: torch.Tensor, background_scale: float = 0.3) -> torch.Tensor:
    """One-hot seeds (N, K, h, w) of argmax_k cam_k * [background_scale, 1, ..., 1], times the
    valid mask (absent classes and padding 0). No gradient."""
    scale = torch.ones(cam.shape[1], dtype=cam.dtype, device=cam.device)
    scale[0] = background_scale
    winner = (cam * scale[:, None, None]).argmax(dim=1)                     # (N, h, w)
    one_hot = F.one_hot(winner, cam.shape[1]).permute(0, 3, 1, 2).to(cam.dtype)
    return one_hot * valid_mask


def correlation_iou(cam: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """SIPE's seed scores (its ``get_seed`` before background x 0.5 and arg-max): per pixel
    i and channel k, the IoU of i's feature-correlation row (relu(f^T f), f L2-normalised, eps
    1e-5) with cam_k. cam (N, K, h, w); features (N, D, h, w) -> (N, K, h, w)."""
    n, k, h, w = cam.shape
    f = features.flatten(2)
    f = f / (f.norm(dim=1, keepdim=True) + 1e-5)
    corr = F.relu(torch.bmm(f.transpose(1, 2), f))                            # (N, P, P)
    flat = cam.flatten(2)                                                     # (N, K, P)
    inter = torch.bmm(flat, corr.transpose(1, 2))                             # (N, K, P)
    union = corr.sum(-1)[:, None] + flat.sum(-1, keepdim=True) - inter
    return (inter / union).view(n, k, h, w)


def prototypes(seeds: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Image-specific class prototypes (N, K, D): the seed-masked feature sum over all P pixels
    / P (the reference's; only the direction is used). seeds (N, K, h, w); features (N, D, h, w)."""
    n, k, h, w = seeds.shape
    return torch.einsum("nkp,ncp->nkc", seeds.reshape(n, k, h * w), features.flatten(2)) / (h * w)


def prototype_cam(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """ReLU of the cosine similarity (torch.cosine_similarity) between every pixel's feature
    (N, D, h, w) and each prototype (N, K, D) -> (N, K, h, w); a zero prototype gives 0."""
    n, d, h, w = features.shape
    f = features.flatten(2)
    f = f / f.norm(dim=1, keepdim=True).clamp_min(COSINE_EPS)
    p = prototypes / prototypes.norm(dim=2, keepdim=True).clamp_min(COSINE_EPS)
    return F.relu(torch.bmm(p, f)).reshape(n, -1, h, w)
