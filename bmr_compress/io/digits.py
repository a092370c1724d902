"""scikit-learn's real 8x8 digits (1,797 images) with a fixed, seeded, stratified split."""

from __future__ import annotations

import functools

import numpy as np

from bmr_compress.errors import InputError

DIGITS_HELDOUT_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@functools.lru_cache(maxsize=4)
def digits_split(
    seed: int = DIGITS_SPLIT_SEED, heldout_fraction: float = DIGITS_HELDOUT_FRACTION
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_heldout, y_heldout); x: float32 (N, 1, 8, 8) in [0, 1], y: int64 (N,).

    The split is stratified by class and depends only on ``seed`` (default 0 everywhere, so
    the zoo models' held-out set is the one every later stage evaluates on).
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        raise InputError("the digits data set comes with scikit-learn, which is not installed: "
                         "pip install 'bmr-compress[digits]'") from e

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[:, None, :, :]  # (1797, 1, 8, 8)
    y = data.target.astype(np.int64)
    x_tr, x_ho, y_tr, y_ho = train_test_split(
        x, y, test_size=heldout_fraction, random_state=seed, stratify=y
    )
    for a in (x_tr, x_ho, y_tr, y_ho):
        a.setflags(write=False)  # cached: callers must copy before mutating
    return x_tr, y_tr, x_ho, y_ho
