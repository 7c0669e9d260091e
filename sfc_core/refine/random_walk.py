"""IRN's paths, path affinities from a boundary map, and the random walk on them.

Ahn et al. (CVPR 2019): ``affinity = 1 - max(boundary on the straight path)`` for pixel pairs
within a radius; the walk (docs/reference.md 5.3) gives ``cam . T^(2^k)``, ``T`` kept sparse,
built once per image (quirk 25) and applied ``2^k`` times: O(hw) memory, not (hw)^2.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PathIndex:
    """The directions of a half disk of ``radius``: ``offsets`` (D, 2) int64 (dy >= 0), and
    ``paths[d]`` (L_d, 2), the lattice points within distance < 1 of the segment to ``offsets[d]``."""

    radius: int
    offsets: np.ndarray
    paths: tuple[np.ndarray, ...]

    @classmethod
    def build(cls, radius: int) -> PathIndex:
        if radius < 2:
            raise ValueError(f"path radius must be >= 2, got {radius}")
        offsets = [(0, dx) for dx in range(1, radius)]
        offsets += [(dy, dx) for dy in range(1, radius) for dx in range(-radius + 1, radius)
                    if dx * dx + dy * dy < radius * radius]
        return cls(radius, np.array(offsets, np.int64), tuple(_lattice_path(dy, dx) for dy, dx in offsets))

    @property
    def margin(self) -> int:
        return self.radius - 1

    def source_shape(self, height: int, width: int) -> tuple[int, int]:
        """Size of the block of source pixels whose every destination is inside (h, w)."""
        return height - self.margin, width - 2 * self.margin


def _lattice_path(dy: int, dx: int) -> np.ndarray:
    """Lattice points (y, x) within perpendicular distance < 1 of the segment (0,0)-(dy,dx)."""
    length_sq = dy * dy + dx * dx
    points = [(y, x)
              for y in range(min(0, dy), max(0, dy) + 1)
              for x in range(min(0, dx), max(0, dx) + 1)
              if (dy * x - dx * y) ** 2 < length_sq]
    return np.array(points, np.int64)


def shifted_crops(x: torch.Tensor, index: PathIndex, offsets: np.ndarray) -> torch.Tensor:
    """``x`` (N, h, w) -> (N, len(offsets), h', w'): x at source + offset for every source,
    (h', w') = index.source_shape(h, w); a view per offset, stacked."""
    hs, ws = index.source_shape(*x.shape[-2:])
    m = index.margin
    return torch.stack([x[:, dy:dy + hs, m + dx:m + dx + ws] for dy, dx in offsets.tolist()], 1)


def edge_to_affinity(edge: torch.Tensor, index: PathIndex) -> torch.Tensor:
    """Path affinities ``1 - max(edge on the path)`` for every source and direction (differentiable).
    edge: (N, h, w) boundary probabilities. Returns (N, D, h', w'), (h', w') = source_shape(h, w):
    [n, d, y, x] pairs grid pixel (y, x + margin) with (y + dy_d, x + margin + dx_d)."""
    return torch.stack([1 - shifted_crops(edge, index, path).amax(1) for path in index.paths], 1)


def transition_matrix(edge: torch.Tensor, radius: int, beta: float) -> torch.Tensor:
    """The walk's one-step operator of a boundary map (h, w): a sparse (n, n) CSR matrix, n = h * w,
    of symmetric affinities^beta (ones on the diagonal) divided by their row sums: ``M @ x``
    computes IRN's ``x^T . T``."""
    index = PathIndex.build(radius)
    height, width = edge.shape
    m = index.margin
    padded = F.pad(edge[None], (m, m, 0, m), value=1.0)        # pairs leaving the image: edge 1
    affinity = edge_to_affinity(padded, index)[0].pow(beta)    # (D, h, w): sources = the image
    offsets = torch.as_tensor(index.offsets, device=edge.device)
    ys = torch.arange(height, device=edge.device).view(1, height, 1)
    xs = torch.arange(width, device=edge.device).view(1, 1, width)
    dst_y, dst_x, src = torch.broadcast_tensors(ys + offsets[:, 0].view(-1, 1, 1),
                                                xs + offsets[:, 1].view(-1, 1, 1), ys * width + xs)
    keep = (affinity > 0) & (dst_y < height) & (dst_x >= 0) & (dst_x < width)
    src = src[keep]
    dst = (dst_y * width + dst_x)[keep]
    diagonal = torch.arange(height * width, device=edge.device)
    rows = torch.cat([src, dst, diagonal])
    cols = torch.cat([dst, src, diagonal])
    values = torch.cat([affinity[keep], affinity[keep], torch.ones_like(diagonal, dtype=edge.dtype)])
    row_sums = torch.zeros(height * width, dtype=edge.dtype, device=edge.device).index_add_(0, rows, values)
    matrix = torch.sparse_coo_tensor(torch.stack([rows, cols]), values / row_sums[rows],
                                     (height * width, height * width), check_invariants=False)
    with warnings.catch_warnings():           # "sparse CSR support is in beta": it works here
        warnings.simplefilter("ignore", UserWarning)
        return matrix.coalesce().to_sparse_csr()


def random_walk(cams: torch.Tensor, edge: torch.Tensor, transition: torch.Tensor, steps: int) -> torch.Tensor:
    """Propagate ``cams`` (K, h, w) for ``steps`` steps; boundary pixels start with no mass.
    edge: (h, w); transition: ``transition_matrix(edge, ...)``. Returns (K, h, w)."""
    k, height, width = cams.shape
    x = (cams * (1 - edge)).reshape(k, -1).T.contiguous()      # (n, K)
    for _ in range(steps):
        x = transition @ x
    return x.T.reshape(k, height, width)


def hybrid_walk(scores: torch.Tensor, edge: torch.Tensor, stride: int, *, radius: int, beta: float,
                exp_times: int, power: float, bg_constant: float) -> torch.Tensor:
    """The reference's make_seg_labels (docs/reference.md 5.3): IRN's walk (foreground ^ power
    beside a constant ``bg_constant``) plus SIPE's (all channels ^ power^2), each normalised by
    its max, on one transition matrix. scores (K', H, W) (channel 0 background), edge (h, w) at
    ``stride``; returns (K', H, W), whose arg-max is the pseudo label."""
    k, height, width = scores.shape
    small = F.interpolate(scores[None], size=edge.shape, mode="bilinear", align_corners=False)[0] ** power
    stack = torch.cat([small[1:], small ** power])             # (K'-1 + K', h4, w4)
    walked = random_walk(stack, edge, transition_matrix(edge, radius, beta), 2 ** exp_times)
    walked = F.interpolate(walked[None], scale_factor=stride, mode="bilinear",
                           align_corners=False)[0, :, :height, :width]
    foreground, every = walked[:k - 1], walked[k - 1:]
    foreground = foreground / foreground.max().clamp_min(1e-5)
    background = torch.full_like(foreground[:1], bg_constant)
    return torch.cat([background, foreground]) + every / every.max().clamp_min(1e-5)
