"""Points with known structure for the layout tests."""

import numpy as np


def patches(n: int, clusters: int, d: int = 48, seed: int = 1) -> np.ndarray:
    """(n, d) float32: clusters that are 5-dim patches, with inner structure a layout can keep or lose."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, clusters, n)
    centres, bases = rng.normal(size=(clusters, d)) * 2, rng.normal(size=(clusters, 5, d)) * 0.6
    X = centres[labels] + np.einsum("nk,nkd->nd", rng.normal(size=(n, 5)), bases[labels])
    return X.astype(np.float32)
