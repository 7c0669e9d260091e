"""The paper's distribution coefficients: per-class weights of the consistency losses.

w_k = b_k / (n_k + E), normalised to mean 1 (docs/method.md 3, docs/reference.md 3.4): n_k the
training images of class k, E the expected extra samples per class from the image bank, b_k a
second per-class count the reference hard-codes for VOC without saying what it is
(``data/stats.py`` holds it; ``default_second_counts`` is the kit's b_k elsewhere).
"""
from __future__ import annotations

import numpy as np

# The factor 3 in the reference's E = steps_per_epoch * bank_draws * 3 / C (unexplained there;
# kept so that E means the same on every dataset).
REFERENCE_BANK_EPOCHS = 3


def distribution_coefficients(image_counts: np.ndarray, second_counts: np.ndarray,
                              extra: float) -> np.ndarray:
    """float64 (C,): b_k / (n_k + E), normalised to mean 1.

    image_counts n (C,), second_counts b (C,), extra E (expected bank samples per class).
    """
    coefficients = np.asarray(second_counts, dtype=np.float64) / (np.asarray(image_counts) + extra)
    return coefficients / coefficients.mean()


def bank_extra(num_images: int, batch_size: int, bank_draws: int, num_classes: int) -> float:
    """E = steps_per_epoch * bank_draws * 3 / C: the expected number of times the image bank
    draws each class's slot in 3 epochs (the reference's formula; 0 without a bank)."""
    return (num_images // batch_size) * bank_draws * REFERENCE_BANK_EPOCHS / num_classes


def default_second_counts(image_counts: np.ndarray, extra: float) -> np.ndarray:
    """The kit's b_k for datasets other than VOC: float64 (C,) b_k = t_k^2 / m + m, t_k = n_k + E,
    m = mean_k t_k, so w_k ~ s_k + 1/s_k (s_k = t_k / m): heads and tails weigh most, the average
    least, the shape of the reference's b_k. VOC keeps the reference's b_k and E."""
    samples = np.asarray(image_counts, dtype=np.float64) + extra
    mean = samples.mean()
    return samples ** 2 / mean + mean
