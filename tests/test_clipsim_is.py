"""CLIPSIM (CLIP from a local folder) and IS (C3D from a local safetensors file): parity with PyTorch
on random-initialised models the test writes, and the metrics' properties."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from dysen_jax.metrics import clipsim as cs  # noqa: E402
from dysen_jax.metrics import inception_score as iscore  # noqa: E402


# --- CLIP ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=49408, max_position_embeddings=77, eos_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    folder = str(tmp_path_factory.mktemp("clip"))
    model.save_pretrained(folder)
    return model, folder


def _features(output):
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return torch.nn.functional.normalize(tensor, dim=-1).numpy()


def test_clip_towers_match_transformers(clip_folder):
    model, folder = clip_folder
    sim = cs.CLIPSimilarity(folder, batch_size=2, progress=False)
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    pixels = np.asarray(cs.preprocess_frames(jnp.asarray(frames), 32))
    captions = ["the red circle moves left", "the blue square jumps, then it spins around"]
    ids = cs.tokenize_captions(captions, folder, 77)
    with torch.no_grad():
        image = _features(model.get_image_features(pixel_values=torch.tensor(pixels).permute(0, 3, 1, 2)))
        text = _features(model.get_text_features(input_ids=torch.tensor(ids, dtype=torch.long)))
    np.testing.assert_allclose(sim.image_embeddings(frames), image, atol=1e-4)
    np.testing.assert_allclose(sim.text_embeddings(captions), text, atol=1e-4)
    videos = np.stack([frames[:2], frames[1:]])
    expected = np.einsum("nfp,np->nf", image[[[0, 1], [1, 2]]], text).mean(axis=1)
    np.testing.assert_allclose(sim(videos, captions), expected, atol=1e-4)
    assert -1.0 <= cs.clipsim(videos, captions, sim) <= 1.0


def test_clip_bad_inputs(clip_folder, tmp_path):
    _, folder = clip_folder
    with pytest.raises(FileNotFoundError, match="clip_path"):
        cs.CLIPSimilarity(str(tmp_path / "missing"))
    sim = cs.CLIPSimilarity(folder, progress=False)
    with pytest.raises(ValueError, match="one caption per video"):
        sim(np.zeros((2, 2, 32, 32, 3), np.uint8), ["a"])


# --- C3D + IS -------------------------------------------------------------------------------------------------
class TorchC3D(torch.nn.Module):
    """The standard C3D (c3d-pytorch's layout); `width` scales every layer so the test stays fast."""

    def __init__(self, width: float = 1.0, num_classes: int = 101):
        super().__init__()
        w = lambda c: max(1, int(c * width))
        chans = [3, w(64), w(128), w(256), w(256), w(512), w(512), w(512), w(512)]
        names = ["conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b"]
        for i, name in enumerate(names):
            setattr(self, name, torch.nn.Conv3d(chans[i], chans[i + 1], kernel_size=3, padding=1))
        self.pool1 = torch.nn.MaxPool3d((1, 2, 2), (1, 2, 2))
        self.pool2 = torch.nn.MaxPool3d(2, 2)
        self.pool3 = torch.nn.MaxPool3d(2, 2)
        self.pool4 = torch.nn.MaxPool3d(2, 2)
        self.pool5 = torch.nn.MaxPool3d(2, 2, padding=(0, 1, 1))
        self.fc6 = torch.nn.Linear(chans[-1] * 16, w(4096))
        self.fc7 = torch.nn.Linear(w(4096), w(4096))
        self.fc8 = torch.nn.Linear(w(4096), num_classes)
        self.relu = torch.nn.ReLU()

    def forward(self, x):  # x [B, 3, 16, 112, 112]
        r = self.relu
        h = self.pool1(r(self.conv1(x)))
        h = self.pool2(r(self.conv2(h)))
        h = self.pool3(r(self.conv3b(r(self.conv3a(h)))))
        h = self.pool4(r(self.conv4b(r(self.conv4a(h)))))
        h = self.pool5(r(self.conv5b(r(self.conv5a(h)))))
        h = h.reshape(h.shape[0], -1)
        return self.fc8(r(self.fc7(r(self.fc6(h)))))


@pytest.fixture(scope="module")
def c3d_file(tmp_path_factory):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = TorchC3D(width=1 / 16, num_classes=11).eval()
    path = os.path.join(str(tmp_path_factory.mktemp("c3d")), "c3d.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return model, path


def test_c3d_matches_pytorch(c3d_file):
    model, path = c3d_file
    classifier = iscore.C3DClassifier(path, batch_size=2, progress=False)
    assert classifier.config.num_classes == 11 and classifier.config.channels[0] == 4
    videos = np.random.default_rng(1).integers(0, 256, (2, 16, 112, 112, 3), dtype=np.uint8)
    x = np.asarray(iscore.preprocess_clips(jnp.asarray(videos), iscore.SPORTS1M_MEAN_BGR, bgr=True))
    with torch.no_grad():
        expected = torch.softmax(model(torch.tensor(x).permute(0, 4, 1, 2, 3)), -1).numpy()
    np.testing.assert_allclose(classifier(videos), expected, atol=1e-5, rtol=1e-4)
    short = np.random.default_rng(2).integers(0, 256, (3, 8, 32, 32, 3), dtype=np.uint8)  # resized, frames repeated
    mean, _ = iscore.video_inception_score(short, classifier)
    assert 1.0 <= mean <= 11.0


def test_inception_score_properties(tmp_path):
    same = np.tile(np.full((1, 5), 0.2), (6, 1))
    assert iscore.inception_score(same)[0] == pytest.approx(1.0)
    confident = np.eye(5)[[0, 1, 2, 3, 4, 0, 1, 2, 3, 4]]
    assert iscore.inception_score(confident)[0] == pytest.approx(5.0)
    mean, std = iscore.inception_score(confident, splits=2)
    assert mean == pytest.approx(5.0) and std == pytest.approx(0.0)
    mixed = np.random.default_rng(0).dirichlet(np.ones(5), size=20)
    assert 1.0 < iscore.inception_score(mixed)[0] < 5.0
    with pytest.raises(ValueError, match="splits"):
        iscore.inception_score(mixed, splits=0)
    with pytest.raises(ValueError, match="state_dict"):
        from safetensors.numpy import save_file
        save_file({"fc.weight": np.zeros((2, 2), np.float32)}, str(tmp_path / "x.safetensors"))
        iscore.load_c3d(str(tmp_path / "x.safetensors"))
