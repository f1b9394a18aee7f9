"""AutoencoderKL parity with diffusers (random tiny model saved as safetensors, converted by the CLI),
the other checkpoint layouts, the VidRD temporal decoder at init, and the converter's errors."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="needs the [torch] extra: pip install -e '.[torch]' diffusers==0.42.1")
import jax  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL as TorchAutoencoderKL  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from dysen_jax.convert.__main__ import main as convert_main  # noqa: E402
from dysen_jax.convert.common import ConversionError, TorchState, flatten  # noqa: E402
from dysen_jax.convert import vae as convert_vae  # noqa: E402
from dysen_jax.models import vae  # noqa: E402

TOL = 1e-4
TINY = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)


@pytest.fixture(scope="module")
def torch_vae(tmp_path_factory):
    """(torch model, its diffusers folder, our converted folder) for a tiny random AutoencoderKL."""
    torch.manual_seed(0)
    model = TorchAutoencoderKL(**TINY).eval()
    with torch.no_grad():  # norms away from (1, 0) so that a mixed-up norm param would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    root = tmp_path_factory.mktemp("vae")
    model.save_pretrained(root / "diffusers", safe_serialization=True)
    assert convert_main(["--from", str(root / "diffusers"), "--kind", "vae", "--out", str(root / "flax")]) == 0
    return model, root / "diffusers", root / "flax"


_JIT: dict = {}


def apply(model: vae.AutoencoderKL, method: str):
    """One jitted function per (model config, method): params are arguments, so every test reuses it."""
    key = (model.config, method)
    if key not in _JIT:
        _JIT[key] = jax.jit(lambda p, *a: model.apply({"params": p}, *a, method=method))
    return _JIT[key]


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def test_encode_decode_match_diffusers(torch_vae):
    model_t, _, out = torch_vae
    meta = json.load(open(out / "meta.json"))
    assert meta["kind"] == "vae" and meta["layout"] == "diffusers" and meta["num_params"] > 0
    model, params = vae.load_pretrained(str(out))
    assert model.config.scaling_factor == 0.18215 and model.config.block_out_channels == (8, 16)
    rng = np.random.RandomState(0)
    images = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    latents = rng.randn(2, 8, 8, 4).astype(np.float32)
    with torch.no_grad():
        post = model_t.encode(nchw(images)).latent_dist
        decoded = model_t.decode(nchw(latents)).sample
    ours = apply(model, "encode")(params, images)
    # decode through decode_video (frames folded into the batch, latents unscaled): one compile for both
    back = apply(model, "decode_video")(params, latents[None] * 0.18215)[0]
    diffs = {"mean": np.abs(np.asarray(ours.mean) - nhwc(post.mean)).max(),
             "logvar": np.abs(np.asarray(ours.logvar) - nhwc(post.logvar)).max(),
             "decode": np.abs(np.asarray(back) - nhwc(decoded)).max()}
    print("max abs diff vs diffusers:", diffs)
    assert max(diffs.values()) <= TOL, diffs

    rng = jax.random.PRNGKey(0)
    z = apply(model, "encode_video")(params, images[None], rng)[0]
    expected = (nhwc(post.mean) + nhwc(post.std) * np.asarray(jax.random.normal(rng, z.shape))) * 0.18215
    np.testing.assert_allclose(np.asarray(z), expected, atol=TOL)


def _save(tensors: dict[str, torch.Tensor], path) -> str:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return str(path)


def _legacy_name(name: str) -> str:
    for new, old in (("to_q.", "query."), ("to_k.", "key."), ("to_v.", "value."), ("to_out.0.", "proj_attn.")):
        name = name.replace(new, old)
    return name


def _ldm_name(name: str, num_up: int = 2) -> str:
    """diffusers -> original LDM names (the inverse of convert.vae.ldm_to_diffusers_name, written out
    independently; test_other_layouts checks it against diffusers' own single-file loader)."""
    name = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", name)
    name = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", name)
    name = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
                  lambda m: f"decoder.up.{num_up - 1 - int(m[1])}.block.{m[2]}.", name)
    name = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{num_up - 1 - int(m[1])}.upsample.", name)
    name = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", name)
    for new, old in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
        name = name.replace(f"mid_block.attentions.0.{new}.", f"mid.attn_1.{old}.")
    return name.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")


def _ldm_value(name: str, value: torch.Tensor) -> torch.Tensor:
    return value[:, :, None, None] if ".attentions.0.to_" in name and name.endswith("weight") else value


def test_other_layouts_give_the_same_params(torch_vae, tmp_path):
    """Legacy attention names and the original LDM layout (inside a full SD checkpoint), as single
    files without config.json, convert to exactly the params of the diffusers folder."""
    model_t, src, out = torch_vae
    ref = flatten(vae.load_pretrained(str(out))[1])
    state = model_t.state_dict()
    overrides = dict(norm_num_groups=4)  # the one architecture field shapes cannot tell

    legacy = _save({_legacy_name(k): v for k, v in state.items()}, tmp_path / "legacy.safetensors")
    meta = convert_vae.convert(legacy, str(tmp_path / "legacy"), **overrides)
    assert meta["layout"] == "diffusers-legacy-attention"
    got = flatten(vae.load_pretrained(str(tmp_path / "legacy"))[1])
    assert got.keys() == ref.keys() and all(np.array_equal(got[k], ref[k]) for k in ref)

    pipeline = tmp_path / "pipeline"  # a whole diffusers pipeline folder: its vae/ is found by itself
    shutil.copytree(src, pipeline / "vae")
    (pipeline / "model_index.json").write_text("{}")
    convert_vae.convert(str(pipeline), str(tmp_path / "pipe"))
    got = flatten(vae.load_pretrained(str(tmp_path / "pipe"))[1])
    assert all(np.array_equal(got[k], ref[k]) for k in ref)

    ldm = {"first_stage_model." + _ldm_name(k): _ldm_value(k, v) for k, v in state.items()}
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    back = convert_ldm_vae_checkpoint(dict(ldm), dict(model_t.config))
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    ldm["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(2)  # another model's tensor: ignored
    meta = convert_vae.convert(_save(ldm, tmp_path / "sd.safetensors"), str(tmp_path / "ldm"), **overrides)
    assert meta["layout"] == "ldm" and meta["config"]["block_out_channels"] == [8, 16]
    got = flatten(vae.load_pretrained(str(tmp_path / "ldm"))[1])
    assert got.keys() == ref.keys() and all(np.array_equal(got[k], ref[k]) for k in ref)


def test_temporal_decoder_at_init_decodes_per_frame(torch_vae, tmp_path):
    _, src, out = torch_vae
    image_model, image_params = vae.load_pretrained(str(out))
    model, params = vae.load_pretrained(str(out), temporal_decoder=True)
    assert any(vae.is_temporal_path(p) for p in flatten(params))
    # The converter's temporal option gives the same image weights and the same (zero-output) blocks' shapes.
    meta = convert_vae.convert(str(src), str(tmp_path / "t"), temporal_decoder=True)
    assert meta["config"]["temporal_decoder"] is True
    converted = flatten(vae.load_pretrained(str(tmp_path / "t"))[1])
    assert converted.keys() == flatten(params).keys()

    latents = np.random.RandomState(2).randn(1, 2, 8, 8, 4).astype(np.float32)
    video = np.asarray(apply(model, "decode_video")(params, latents))
    frames = np.asarray(apply(image_model, "decode_video")(image_params, latents))  # frame by frame
    np.testing.assert_allclose(video, frames, atol=1e-6, rtol=0)

    # Once the last temporal convs are non-zero, a frame's pixels depend on its neighbours.
    def bump(path, x):
        return x + 0.05 if vae.is_temporal_path(path) and "conv_3/kernel" in path else x
    trained = jax.tree_util.tree_map_with_path(lambda kp, x: bump(jax.tree_util.keystr(kp, simple=True, separator="/"), x), params)
    moved = latents.copy()
    moved[0, 1] += 1.0
    a = np.asarray(apply(model, "decode_video")(trained, latents))
    b = np.asarray(apply(model, "decode_video")(trained, moved))
    assert np.abs(a[0, 0] - b[0, 0]).max() > 1e-4  # frame 0 now sees frame 1 through the temporal convs


@pytest.mark.parametrize("case", ["misshaped", "missing", "unexpected"])
def test_bad_checkpoints_name_the_tensor(torch_vae, tmp_path, capsys, case):
    model_t, src, _ = torch_vae
    state = {k: v.clone() for k, v in model_t.state_dict().items()}
    name = "decoder.up_blocks.1.resnets.0.conv1.weight"
    if case == "misshaped":
        state[name] = torch.zeros(8, 16, 3, 1)
    elif case == "missing":
        del state[name]
    else:
        name = "decoder.up_blocks.1.extra.weight"
        state[name] = torch.zeros(3)
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "config.json").write_text((src / "config.json").read_text())
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    assert convert_main(["--from", str(folder), "--kind", "vae", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert name in err, err
    if case == "misshaped":
        assert "(8, 16, 3, 1)" in err and "(8, 16, 3, 3)" in err, err
    with pytest.raises(ConversionError, match=re.escape(name)):
        convert_vae.convert(str(folder), str(tmp_path / "o"))


def test_pickles_and_wrong_configs_are_refused(torch_vae, tmp_path, capsys):
    model_t, src, _ = torch_vae
    torch.save(model_t.state_dict(), tmp_path / "diffusion_pytorch_model.bin")
    for source in (tmp_path, tmp_path / "diffusion_pytorch_model.bin"):
        assert convert_main(["--from", str(source), "--kind", "vae", "--out", str(tmp_path / "o")]) == 2
        assert "pickle" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o" / "params.msgpack")

    raw = json.loads((src / "config.json").read_text())
    assert vae.VAEConfig.from_diffusers_config(raw) == vae.VAEConfig(
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)
    with pytest.raises(ValueError, match="DownEncoderBlock2D"):
        vae.VAEConfig.from_diffusers_config({**raw, "down_block_types": ["AttnDownEncoderBlock2D"] * 2})
    with pytest.raises(ConversionError, match="not an AutoencoderKL"):
        convert_vae.infer_config(TorchState({"text_model.weight": np.zeros(1)}, "x.safetensors"))
