"""What train, sample and evaluate share: config + data manifest -> model, schedule, shapes, and the
frozen VAE codec of latent diffusion (`model.latent`; None in pixel space)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from dysen_jax.data.records import RecordSpec, manifest_spec_and_vocab, read_manifest
from dysen_jax.diffusion.schedules import NoiseSchedule, make_schedule
from dysen_jax.dsg.vocab import WordVocab
from dysen_jax.models.denoiser import build_denoiser
from dysen_jax.training.latents import LatentCodec, check_in_channels, codec_from_config


@dataclasses.dataclass(frozen=True)
class Experiment:
    config: ml_collections.ConfigDict   # with model.vocab_size resolved
    data_dir: str
    spec: RecordSpec
    vocab: WordVocab
    model: Any
    schedule: NoiseSchedule
    codec: LatentCodec | None = None    # the frozen VAE (its params: codec.params) when model.latent

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The denoiser's per-clip input [F, H, W, C]: the latent shape when latent, else the video's."""
        return self.codec.latent_shape(self.spec) if self.codec is not None else self.spec.video_shape


def data_dir_for(config: Any, workdir: str) -> str:
    """config.data.data_dir, or <workdir>/data when it is empty."""
    return config.data.data_dir or os.path.join(workdir, "data")


def load_experiment(config: Any, workdir: str) -> Experiment:
    """Reads the data manifest, checks it against the config and builds the model."""
    data_dir = data_dir_for(config, workdir)
    manifest = read_manifest(data_dir)
    spec, vocab = manifest_spec_and_vocab(manifest)
    expected = RecordSpec.from_config(config)
    if spec.latent_shape != expected.latent_shape:
        raise ValueError(f"the data in {data_dir} " + (f"holds precomputed VAE latents {list(spec.latent_shape)}"
                         if spec.stores_latents else "holds no precomputed VAE latents") + " but the config asks for "
                         + (f"latents {list(expected.latent_shape)}" if expected.stores_latents else "none") +
                         ": set config.data.precompute_latents (and the vae section) to match the data, or "
                         "preprocess again into a new --output_dir")
    if spec != expected:
        raise ValueError(f"the data in {data_dir} was preprocessed with {spec}, but the config asks for "
                         f"{expected}: rerun preprocess into a new --output_dir or fix config.data/dsg/text")
    config = ml_collections.ConfigDict(config.to_dict())
    tokenizer = str(config.model.get("text_encoder", "tiny"))
    if spec.text_tokenizer != tokenizer:
        raise ValueError(f"the data in {data_dir} was tokenized for text encoder {spec.text_tokenizer!r} but "
                         f"config.model.text_encoder={tokenizer!r}: preprocess again with this config")
    if config.model.vocab_size not in (-1, vocab.size):
        raise ValueError(f"config.model.vocab_size={config.model.vocab_size} but the data's vocabulary has "
                         f"{vocab.size} ids: set it to -1 (take it from the data)")
    config.model.vocab_size = vocab.size
    codec = codec_from_config(config)
    check_in_channels(config, codec)
    if spec.stores_latents:
        check_stored_latents(manifest, codec, data_dir)
    model = build_denoiser(config.model)
    schedule = make_schedule(config.diffusion.schedule, config.diffusion.num_timesteps)
    return Experiment(config, data_dir, spec, vocab, model, schedule, codec)


def dataless_experiment(config: Any, vocab_size: int) -> Experiment:
    """An Experiment without data or VAE, for benchmarks on dummy inputs: the config's record shapes, a
    denoiser for an assumed vocabulary size (set into `config.model.vocab_size`), no vocabulary."""
    config.model.vocab_size = vocab_size
    return Experiment(config, "", RecordSpec.from_config(config), None, build_denoiser(config.model),
                      make_schedule(config.diffusion.schedule, config.diffusion.num_timesteps))


def check_stored_latents(manifest: dict[str, Any], codec: LatentCodec, data_dir: str) -> None:
    """The stored posterior moments must come from this codec's encoder (same architecture and weights)."""
    stored = manifest.get("latents", {})
    if stored.get("vae_fingerprint") != codec.encoder_fingerprint:
        raise ValueError(f"the latents in {data_dir} were encoded by another VAE ({stored.get('vae_source')!r}, "
                         f"encoder {stored.get('vae_fingerprint')}) than config.init_from.vae={codec.source!r} "
                         f"(encoder {codec.encoder_fingerprint}): point init_from.vae at the VAE the data was "
                         "preprocessed with, or preprocess again into a new --output_dir")


def dummy_inputs(spec: RecordSpec, batch_size: int = 1) -> dict[str, jax.Array]:
    """Zero batches of what the input pipeline yields for `spec` (`RecordSpec.parsed_arrays`: the video, or
    the stored latent moments, text tokens and DSG arrays), for init and eval_shape."""
    return {name: jnp.zeros((batch_size, *shape), dtype) for name, (shape, dtype) in spec.parsed_arrays().items()}


def init_params(experiment: Experiment, key: jax.Array) -> Any:
    """Fresh model parameters (jit-friendly)."""
    from dysen_jax.training.step import dsg_inputs

    batch = dummy_inputs(experiment.spec)
    ones = jnp.ones((1,), jnp.bool_)
    x = jnp.zeros((1, *experiment.input_shape), jnp.float32)  # pixels, or latents when latent
    variables = experiment.model.init(key, x, jnp.zeros((1,), jnp.int32), batch["text_tokens"],
                                      dsg_inputs(batch), use_text=ones, use_dsg=ones, deterministic=True)
    return variables["params"]
