"""IRN's paths, path affinities and the random walk, against brute-force versions written here."""
import itertools

import numpy as np
import pytest
import torch

from sfc_core.refine.random_walk import (
    PathIndex,
    edge_to_affinity,
    hybrid_walk,
    random_walk,
    transition_matrix,
)


def test_path_index_has_irn_direction_counts_and_hand_checked_paths():
    assert len(PathIndex.build(5).offsets) == 34
    assert len(PathIndex.build(10).offsets) == 152
    index = PathIndex.build(4)
    paths = {tuple(o): {tuple(p) for p in path} for o, path in zip(index.offsets.tolist(), index.paths)}
    assert paths[(0, 3)] == {(0, 0), (0, 1), (0, 2), (0, 3)}
    # the diagonal keeps the points with |x - y| <= 1 (distance to the line < 1)
    assert paths[(2, 2)] == {(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2)}
    assert paths[(1, -3)] >= {(0, 0), (1, -3)}
    assert all(dy > 0 or dx > 0 for dy, dx in paths)          # a half disk: no pair twice


def brute_affinity(edge, src, dst, path):
    """1 - max edge over the path pixels placed at the source (None if it leaves the grid)."""
    h, w = edge.shape
    values = []
    for py, px in path:
        y, x = src[0] + py, src[1] + px
        if not (0 <= y < h and 0 <= x < w):
            return None
        values.append(edge[y, x])
    return 1 - max(values)


def test_edge_to_affinity_matches_brute_force():
    rng = np.random.default_rng(0)
    edge = rng.random((2, 9, 11)).astype(np.float32)
    index = PathIndex.build(3)
    out = edge_to_affinity(torch.from_numpy(edge), index).numpy()
    m = index.margin
    assert out.shape == (2, len(index.offsets), 9 - m, 11 - 2 * m)
    for n, d, y, x in itertools.product(range(2), range(len(index.offsets)), range(9 - m), range(11 - 2 * m)):
        dy, dx = index.offsets[d]
        expected = brute_affinity(edge[n], (y, x + m), (y + dy, x + m + dx), index.paths[d])
        assert out[n, d, y, x] == pytest.approx(expected)


def dense_walk(cams, edge, radius, beta, exp_times):
    """IRN's construction literally: dense A, T = A^beta / column sums, T^(2^k) by squaring."""
    h, w = edge.shape
    n = h * w
    A = np.eye(n)
    for d, (dy, dx) in enumerate(PathIndex.build(radius).offsets):
        for y, x in itertools.product(range(h), range(w)):
            ty, tx = y + dy, x + dx
            if not (0 <= ty < h and 0 <= tx < w):
                continue
            a = brute_affinity(edge, (y, x), (ty, tx), PathIndex.build(radius).paths[d])
            A[y * w + x, ty * w + tx] = A[ty * w + tx, y * w + x] = a
    T = A ** beta
    T = T / T.sum(0, keepdims=True)
    for _ in range(exp_times):
        T = T @ T
    x = (cams * (1 - edge)).reshape(len(cams), n)
    return (x @ T).reshape(cams.shape)


def test_sparse_walk_equals_dense_squaring():
    rng = np.random.default_rng(1)
    edge = rng.random((6, 7)) ** 3
    cams = rng.random((3, 6, 7))
    expected = dense_walk(cams, edge, radius=3, beta=2.0, exp_times=4)
    edge_t = torch.tensor(edge, dtype=torch.float64)
    transition = transition_matrix(edge_t, radius=3, beta=2.0)
    out = random_walk(torch.tensor(cams), edge_t, transition, steps=2 ** 4).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-12)


def test_a_wall_stops_propagation():
    edge = torch.zeros(8, 12, dtype=torch.float64)
    edge[:, 5] = 1.0                                           # a full-height boundary column
    cams = torch.zeros(1, 8, 12, dtype=torch.float64)
    cams[0, 2:6, 1:3] = 1.0                                    # mass left of the wall
    walked = random_walk(cams, edge, transition_matrix(edge, radius=4, beta=10.0), steps=256)[0]
    assert walked[:, 6:].abs().max() == 0                       # nothing crosses
    assert walked[:, :5].min() > 0                              # it spread over its own side
    assert walked.max() <= 1                                    # as an average of the start values
    assert walked[:, :5].std() < 0.05                           # 256 steps nearly flatten it


def test_hybrid_walk_is_the_reference_sum_of_two_walks():
    rng = np.random.default_rng(2)
    edge = rng.random((4, 5)) ** 3
    scores = rng.random((3, 15, 18))
    out = hybrid_walk(torch.tensor(scores), torch.tensor(edge), 4, radius=3, beta=10.0, exp_times=3,
                      power=1.3, bg_constant=0.25).numpy()
    # reference make_seg_labels: resize to the edge grid, ^1.3; walk fg; walk all after ^1.3 again
    small = torch.nn.functional.interpolate(torch.tensor(scores)[None], size=(4, 5), mode="bilinear",
                                            align_corners=False)[0].numpy() ** 1.3

    def up(x):
        x = torch.nn.functional.interpolate(torch.tensor(x)[None], scale_factor=4, mode="bilinear",
                                            align_corners=False)[0].numpy()
        return x[:, :15, :18]

    fg = up(dense_walk(small[1:], edge, 3, 10.0, 3))
    every = up(dense_walk(small ** 1.3, edge, 3, 10.0, 3))
    expected = np.concatenate([np.full((1, 15, 18), 0.25), fg / fg.max()]) + every / every.max()
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_hybrid_walk_labels_each_side_of_a_wall():
    edge = torch.zeros(4, 6)
    edge[:, 3] = 1.0
    scores = torch.zeros(2, 16, 24)
    scores[0] = 0.3                                            # background everywhere
    scores[1, :, :8] = 1.0                                     # a class on the left
    out = hybrid_walk(scores, edge, 4, radius=3, beta=10.0, exp_times=4, power=1.3, bg_constant=0.25)
    label = out.argmax(0)
    assert (label[:, :8] == 1).all() and (label[:, 16:] == 0).all()
