"""UNet3D vs diffusers: small random PyTorch UNets are saved, converted and compared on the same inputs.

- UNet2DConditionModel (SD layout, 1x1-conv and linear proj_in/proj_out) applied frame by frame ==
  our freshly inflated UNet3D (temporal convs, temporal attention, transformer_in, per-frame affine
  and DSG cross-attention at their init, causal or not): the additions are the identity at init.
- UNet3DConditionModel (ModelScope layout, temporal layers made non-trivial) == our UNet3D.
- Conversion errors name the missing / mis-shaped / unexpected tensors and the right --kind.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

try:
    import diffusers
    import torch
except ImportError:   # the JAX-only tests below still run
    torch = diffusers = None

from dysen_jax.convert.__main__ import main as convert_cli  # noqa: E402
from dysen_jax.convert.common import ConversionError, flatten  # noqa: E402
from dysen_jax.convert.unet import convert, flax_module_path, load_pretrained, torch_name  # noqa: E402

B, F, RES, TEXT_LEN, NODES, WIDTH = 2, 3, 16, 7, 5, 32   # 16x16: the 256-token self-attention runs in 2 query blocks
TOL = 1e-4
SMALL = dict(sample_size=RES, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
             cross_attention_dim=WIDTH, attention_head_dim=8, norm_num_groups=8)


def unet2d(linear: bool):
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        **SMALL, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), use_linear_projection=linear).eval()


def unet3d():
    torch.manual_seed(0)
    model = diffusers.UNet3DConditionModel(
        **SMALL, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D")).eval()
    with torch.no_grad():   # the zero-initialised last temporal convs: random, so they matter
        for name, p in model.named_parameters():
            if ".conv4." in name:
                p.normal_(0.0, 0.1)
    return model


def inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, F, RES, RES, 4)).astype(np.float32)
    text = rng.standard_normal((B, TEXT_LEN, WIDTH)).astype(np.float32)
    dsg = rng.standard_normal((B, F, NODES, WIDTH)).astype(np.float32)
    contexts = {"text": (text[:, None], np.ones((B, 1, TEXT_LEN), bool)),
                "dsg": (dsg, rng.random((B, F, NODES)) < 0.8)}
    return x, np.array([10, 700]), text, contexts


def ours(folder: str) -> np.ndarray:
    model, params, _ = load_pretrained(folder)
    x, t, _, contexts = inputs()
    return np.asarray(jax.jit(model.apply)(params, x, t, contexts))


def torch_2d_per_frame(model) -> np.ndarray:
    x, t, text, _ = inputs()
    with torch.no_grad():
        out = model(torch.from_numpy(x.reshape(B * F, RES, RES, 4).transpose(0, 3, 1, 2)),
                    torch.from_numpy(np.repeat(t, F)), encoder_hidden_states=torch.from_numpy(np.repeat(text, F, 0)))
    return out.sample.numpy().transpose(0, 2, 3, 1).reshape(B, F, RES, RES, 4)


def torch_3d(model) -> np.ndarray:
    x, t, text, _ = inputs()
    with torch.no_grad():
        out = model(torch.from_numpy(x.transpose(0, 4, 1, 2, 3)), torch.from_numpy(t),
                    encoder_hidden_states=torch.from_numpy(text))
    return out.sample.numpy().transpose(0, 2, 3, 4, 1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Saved diffusers folders (config.json + safetensors) and their torch models."""
    if torch is None:
        pytest.skip("torch + diffusers (the parity references) are not installed")
    root = tmp_path_factory.mktemp("unets")
    models = {"conv": unet2d(False), "linear": unet2d(True), "3d": unet3d()}
    for name, model in models.items():
        model.save_pretrained(str(root / name))
    return root, models


def test_inflated_unet2d_with_1x1_conv_projections_equals_unet2d_per_frame_via_cli(saved, tmp_path, capsys):
    root, models = saved
    assert convert_cli(["--from", str(root / "conv"), "--kind", "unet2d", "--out", str(tmp_path)]) == 0
    assert "converted unet2d" in capsys.readouterr().out
    meta = json.load(open(tmp_path / "meta.json"))
    assert meta["kind"] == "unet2d" and meta["config"]["cross_attention"] == [True, False]
    assert meta["num_params"] > sum(p.numel() for p in models["conv"].parameters())   # + temporal, DSG
    diff = np.abs(ours(str(tmp_path)) - torch_2d_per_frame(models["conv"])).max()
    print(f"\nUNet2D (conv proj) per frame vs inflated UNet3D: max |diff| = {diff:.2e}")
    assert diff <= TOL


def test_inflated_unet2d_is_2d_per_frame_with_every_temporal_addition_causal(saved, tmp_path):
    """Linear projections (SD 2.x) and all our additions switched on: causal temporal convs and
    attention with frame positions, ModelScope's transformer_in, per-frame affine, DSG attention."""
    root, models = saved
    meta = convert(str(root / "linear"), str(tmp_path), kind="unet2d", temporal_causal=True,
                   temporal_position="sinusoidal", temporal_transformer_in=True, transformer_in_heads=2,
                   transformer_in_head_dim=8, max_frames=F)
    assert meta["config"]["temporal_causal"] and meta["context_names"] == ["dsg", "text"]
    params = flatten(load_pretrained(str(tmp_path))[1]["params"])
    for path in ("down_blocks_0/temp_convs_0/conv4/kernel", "mid_block/temp_attentions_0/proj_out/kernel",
                 "transformer_in/proj_out/kernel", "up_blocks_1/attentions_0/transformer_blocks_0/attn_dsg/to_out_0/kernel"):
        assert not params[path].any(), path
    assert params["down_blocks_0/temp_convs_0/conv1/kernel"].std() > 0   # fresh init, not all zeros
    diff = np.abs(ours(str(tmp_path)) - torch_2d_per_frame(models["linear"])).max()
    print(f"\nUNet2D (linear proj) per frame vs inflated causal UNet3D: max |diff| = {diff:.2e}")
    assert diff <= TOL


def test_unet3d_modelscope_layout_matches_diffusers(saved, tmp_path):
    root, models = saved
    meta = convert(str(root / "3d"), str(tmp_path), kind="unet3d")
    cfg = meta["config"]
    assert cfg["temporal_norm"] == "clip" and cfg["temporal_transformer_in"] and not cfg["temporal_causal"]
    assert list(cfg["num_attention_heads"]) == [4, 8]    # UNet3DConditionModel's attention_head_dim is a head width
    reference = torch_3d(models["3d"])
    got = ours(str(tmp_path))
    diff = np.abs(got - reference).max()
    print(f"\nUNet3DConditionModel vs UNet3D: max |diff| = {diff:.2e}")
    assert diff <= TOL
    # The temporal layers are really exercised: frame 0's output depends on the other frames.
    x_frames = torch_3d_with_frame0_only(models["3d"])
    assert np.abs(x_frames - reference[:, :1]).max() > 1e-3


def torch_3d_with_frame0_only(model) -> np.ndarray:
    x, t, text, _ = inputs()
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x[:, :1].transpose(0, 4, 1, 2, 3))), torch.from_numpy(t),
                    encoder_hidden_states=torch.from_numpy(text))
    return out.sample.numpy().transpose(0, 2, 3, 4, 1)


def test_wrong_kind_names_the_right_one(saved, tmp_path):
    root, _ = saved
    with pytest.raises(ConversionError, match="--kind unet3d"):
        convert(str(root / "3d"), str(tmp_path), kind="unet2d")
    with pytest.raises(ConversionError, match="--kind unet2d"):
        convert(str(root / "conv"), str(tmp_path), kind="unet3d")


def test_bad_checkpoint_error_names_missing_misshaped_and_unexpected_tensors(saved, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    root, _ = saved
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "config.json").write_text((root / "conv" / "config.json").read_text())
    tensors = load_file(str(root / "conv" / "diffusion_pytorch_model.safetensors"))
    del tensors["mid_block.resnets.1.conv2.bias"]
    tensors["conv_in.weight"] = tensors["conv_in.weight"][:16]
    tensors["down_blocks.0.extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, str(folder / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ConversionError) as err:
        convert(str(folder), str(tmp_path / "out"), kind="unet2d")
    message = str(err.value)
    for expected in ("missing 1: mid_block.resnets.1.conv2.bias", "mis-shaped 1: conv_in.weight",
                     "unexpected 1: down_blocks.0.extra.weight"):
        assert expected in message, message
    assert convert_cli(["--from", str(folder), "--kind", "unet2d", "--out", str(tmp_path / "out")]) == 2
    assert "conv_in.weight" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out" / "params.msgpack")


def test_torch_names_round_trip_through_flax_paths(saved):
    """Error messages name torch tensors: torch_name inverts flax_module_path on every checkpoint tensor."""
    root, models = saved
    for model in (models["conv"], models["3d"]):
        for name in model.state_dict():
            module, leaf = flax_module_path(name)
            flax_leaf = "bias" if leaf == "bias" else ("scale" if "norm" in module.rsplit("/", 1)[-1] else "kernel")
            assert torch_name(f"{module}/{flax_leaf}") == name


def test_chunked_attention_equals_one_block_with_key_mask_and_broadcast_context():
    """The query-blocked attention (jax.checkpoint per block) gives the same values and gradients."""
    import jax.numpy as jnp

    from dysen_jax.models.layers import flat_attention
    from dysen_jax.models.unet_blocks import chunked_attention

    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((2, 3, 64, 2, 4)), jnp.float32)       # [B, F, Q, h, d]
    k, v = (jnp.asarray(rng.standard_normal((2, 1, 40, 2, 4)), jnp.float32) for _ in range(2))  # shared over F
    mask = jnp.asarray(rng.random((2, 1, 1, 1, 40)) < 0.7)
    loss = lambda fn: lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))
    one = jax.value_and_grad(loss(lambda q, k, v: flat_attention(q, k, v, mask)), argnums=(0, 1, 2))(q, k, v)
    blocked = jax.value_and_grad(loss(lambda q, k, v: chunked_attention(q, k, v, mask, 16)), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(blocked)):   # the loss is a sum of 384 terms: rtol
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_fresh_temporal_layers_and_dsg_cross_attention_are_the_identity():
    """The modules' own init (not the converter's): temporal conv / attention return their input, and a
    spatial transformer with a DSG cross-attention computes what it computes without one."""
    import jax.numpy as jnp

    from dysen_jax.models.temporal import TemporalConvLayer, TransformerTemporal
    from dysen_jax.models.unet_blocks import Transformer2D

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((B * F, 4, 4, 8)), jnp.float32)
    for module in (TemporalConvLayer(4, causal=True), TransformerTemporal(2, 4, 4, causal=True, positions=True)):
        params = module.init(jax.random.key(0), x, F)
        np.testing.assert_array_equal(module.apply(params, x, F), x)
    _, _, _, contexts = inputs()
    with_dsg, text_only = Transformer2D(2, 1, 4, extra_contexts=("dsg",)), Transformer2D(2, 1, 4)
    params = with_dsg.init(jax.random.key(0), x, contexts, F)
    block = params["params"]["transformer_blocks_0"]
    assert {"norm_dsg", "attn_dsg"} <= set(block) and not block["attn_dsg"]["to_out_0"]["kernel"].any()
    stripped = {"params": {**params["params"], "transformer_blocks_0": {
        k: v for k, v in block.items() if k not in ("norm_dsg", "attn_dsg")}}}
    np.testing.assert_allclose(with_dsg.apply(params, x, contexts, F), text_only.apply(stripped, x, contexts, F),
                               atol=1e-6)


# --- original (CompVis / LDM) single files ---------------------------------------------------------------
_LDM_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def ldm_name(name: str, layers_per_block: int, cross: tuple[bool, ...]) -> str:
    """The original-SD name of a diffusers UNet2D tensor, written from the LDM layout independently of the
    converter (diffusers' own single-file loader checks it in the test below)."""
    per_level = layers_per_block + 1
    fixed = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
             "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for old, new in fixed.items():
        if name.startswith(old + "."):
            return new + name[len(old):]
    parts = name.split(".")

    def resnet(rest):
        return ".".join([_LDM_RESNET.get(rest[0], rest[0])] + rest[1:])
    if parts[0] == "down_blocks":
        level, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        if kind == "downsamplers":
            return f"input_blocks.{(level + 1) * per_level}.0.op." + ".".join(rest[1:])
        block = 1 + level * per_level + index
        return f"input_blocks.{block}.0.{resnet(rest)}" if kind == "resnets" else f"input_blocks.{block}.1." + ".".join(rest)
    if parts[0] == "mid_block":
        kind, index, rest = parts[1], int(parts[2]), parts[3:]
        return f"middle_block.{2 * index if kind == 'resnets' else 1}." + (resnet(rest) if kind == "resnets" else ".".join(rest))
    if parts[0] == "up_blocks":
        level, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        if kind == "upsamplers":
            has_attention = cross[len(cross) - 1 - level]
            return f"output_blocks.{level * per_level + layers_per_block}.{2 if has_attention else 1}." + ".".join(rest)
        block = level * per_level + index
        return f"output_blocks.{block}.0.{resnet(rest)}" if kind == "resnets" else f"output_blocks.{block}.1." + ".".join(rest)
    raise AssertionError(f"no LDM name for {name}")


def sd_single_file(model, path) -> dict[str, np.ndarray]:
    """`model` saved as an original SD checkpoint: UNet under model.diffusion_model., plus a VAE tensor, a text
    encoder tensor and the schedule buffers that a full SD file also holds. Returns the diffusers tensors."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from safetensors.numpy import save_file

    tensors = {k: v.numpy() for k, v in model.state_dict().items()}
    cross = tuple(t.startswith("CrossAttn") for t in model.config.down_block_types)
    ldm = {"model.diffusion_model." + ldm_name(k, model.config.layers_per_block, cross): v for k, v in tensors.items()}
    back = convert_ldm_unet_checkpoint({k: torch.from_numpy(v) for k, v in ldm.items()}, dict(model.config))
    assert set(back) == set(tensors)                      # the test's names are diffusers' LDM names
    assert all(np.array_equal(back[k].numpy(), v) for k, v in tensors.items())
    ldm.update({"first_stage_model.encoder.conv_in.weight": np.ones((8, 3, 3, 3), np.float32),
                "cond_stage_model.transformer.text_model.final_layer_norm.weight": np.ones(8, np.float32),
                "alphas_cumprod": np.linspace(1, 0, 10).astype(np.float32)})
    save_file(ldm, str(path))
    return tensors


@pytest.mark.parametrize("variant", ["conv", "linear"])
def test_original_sd_single_file_converts_exactly_like_its_diffusers_folder(saved, tmp_path, variant):
    """SD 1.x (1x1-conv projections) and SD 2.x (linear) layouts: the inferred config and every param equal
    the diffusers folder's conversion; the VAE / text-encoder / schedule tensors of the file are ignored."""
    root, models = saved
    sd_single_file(models[variant], tmp_path / "sd.safetensors")
    reference = convert(str(root / variant), str(tmp_path / "from_folder"), kind="unet2d")
    meta = convert(str(tmp_path / "sd.safetensors"), str(tmp_path / "from_file"), kind="unet2d",
                   norm_num_groups=8, num_attention_heads=(8, 8))   # what the shapes cannot tell
    assert meta["layout"] == "ldm" and reference["layout"] == "diffusers"
    assert meta["config"] == reference["config"]
    assert meta["diffusers_config"]["use_linear_projection"] == (variant == "linear")
    want, got = flatten(load_pretrained(str(tmp_path / "from_folder"))[1]), flatten(load_pretrained(str(tmp_path / "from_file"))[1])
    assert set(got) == set(want)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_original_sd_file_uses_a_config_json_beside_it_and_else_sd_head_rule_or_a_clear_error(saved, tmp_path, capsys):
    from dysen_jax.convert.ldm_unet import infer_diffusers_config, select_unet_tensors

    root, models = saved
    beside = tmp_path / "with_config"
    beside.mkdir()
    sd_single_file(models["conv"], beside / "sd.safetensors")
    (beside / "config.json").write_text((root / "conv" / "config.json").read_text())
    assert convert_cli(["--from", str(beside / "sd.safetensors"), "--kind", "unet2d", "--out", str(tmp_path / "o")]) == 0
    assert json.load(open(tmp_path / "o" / "meta.json"))["layout"] == "ldm"

    sd_single_file(models["conv"], tmp_path / "alone.safetensors")
    with pytest.raises(ConversionError, match="cross_attention_dim 32.*num_attention_heads"):
        convert(str(tmp_path / "alone.safetensors"), str(tmp_path / "o2"), kind="unet2d")
    from safetensors.numpy import load_file

    tensors = select_unet_tensors(load_file(str(tmp_path / "alone.safetensors")))
    to_k = "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    for width, heads in ((768, [8, 8]), (1024, [32 // 64, 64 // 64])):   # SD 1.x: 8 heads; SD 2.x: 64 channels each
        cfg = infer_diffusers_config({**tensors, to_k: np.zeros((32, width), np.float32)})
        assert cfg["attention_head_dim"] == heads and cfg["cross_attention_dim"] == width
    assert cfg["block_out_channels"] == [32, 64] and cfg["layers_per_block"] == 1
    assert cfg["down_block_types"] == ["CrossAttnDownBlock2D", "DownBlock2D"]

    tensors["label_emb.0.0.weight"] = np.zeros((4, 4), np.float32)    # a class-conditioned UNet's extra input
    from safetensors.numpy import save_file

    save_file({"model.diffusion_model." + k: v for k, v in tensors.items()}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ConversionError, match="unexpected 1: label_emb.0.0.weight"):
        convert(str(tmp_path / "extra.safetensors"), str(tmp_path / "o3"), kind="unet2d", norm_num_groups=8,
                num_attention_heads=(8, 8))
