"""Fréchet distance between two Gaussians fitted to feature sets (FID, FVD), in float64.

d² = |mu_a - mu_b|² + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^½). The trace of the matrix square root
is computed without scipy: S_a S_b is similar to the symmetric PSD matrix A S_b A with A = S_a^½,
so tr((S_a S_b)^½) = sum of the square roots of A S_b A's eigenvalues. Two symmetric
eigendecompositions are stabler than `scipy.linalg.sqrtm` on the rank-deficient covariances of
small sample sets (N <= D), need no complex arithmetic and no "add eps to the diagonal" retry.
"""

from __future__ import annotations

import numpy as np


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """features [N, D] -> (mean [D], covariance [D, D]) in float64 (unbiased covariance, as np.cov)."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {features.shape[0]}: evaluate more videos/images")
    if not np.all(np.isfinite(features)):
        raise ValueError("features contain NaN or inf (check the inputs and the feature extractor's weights)")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance_from_statistics(mu_a: np.ndarray, sigma_a: np.ndarray,
                                     mu_b: np.ndarray, sigma_b: np.ndarray) -> float:
    """Fréchet distance of N(mu_a, sigma_a) and N(mu_b, sigma_b) (e.g. precomputed reference statistics)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape != mu_a.shape * 2:
        raise ValueError(f"statistics do not match: mu {mu_a.shape} vs {mu_b.shape}, sigma {sigma_a.shape} vs "
                         f"{sigma_b.shape} (features of different extractors?)")
    root_a = _psd_sqrt(sigma_a)
    middle = root_a @ sigma_b @ root_a
    trace_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)))
    diff = mu_a - mu_b
    distance = diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * trace_sqrt
    return float(max(distance, 0.0))


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to features_a [N, D] and features_b [M, D]."""
    features_a, features_b = np.asarray(features_a), np.asarray(features_b)
    if features_a.ndim != 2 or features_b.ndim != 2 or features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"features must be [N, D] and [M, D] with the same D, got {features_a.shape} and "
                         f"{features_b.shape}")
    return frechet_distance_from_statistics(*feature_statistics(features_a), *feature_statistics(features_b))
