"""What train, sample and evaluate share: config + data manifest -> model, schedule, shapes."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dysen_jax.data.records import RecordSpec, manifest_spec_and_vocab, read_manifest
from dysen_jax.diffusion.schedules import NoiseSchedule, make_schedule
from dysen_jax.dsg.vocab import WordVocab
from dysen_jax.models.denoiser import build_denoiser


@dataclasses.dataclass(frozen=True)
class Experiment:
    config: ml_collections.ConfigDict   # with model.vocab_size resolved
    data_dir: str
    spec: RecordSpec
    vocab: WordVocab
    model: Any
    schedule: NoiseSchedule


def data_dir_for(config: Any, workdir: str) -> str:
    """config.data.data_dir, or <workdir>/data when it is empty."""
    return config.data.data_dir or os.path.join(workdir, "data")


def load_experiment(config: Any, workdir: str) -> Experiment:
    """Reads the data manifest, checks it against the config and builds the model."""
    data_dir = data_dir_for(config, workdir)
    spec, vocab = manifest_spec_and_vocab(read_manifest(data_dir))
    expected = RecordSpec.from_config(config)
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
    model = build_denoiser(config.model)
    schedule = make_schedule(config.diffusion.schedule, config.diffusion.num_timesteps)
    return Experiment(config, data_dir, spec, vocab, model, schedule)


def dummy_inputs(spec: RecordSpec, batch_size: int = 1) -> dict[str, jax.Array]:
    """Zero inputs of the record shapes (for init and eval_shape)."""
    dtypes = spec.dsg.array_dtypes()
    batch = {"video": jnp.zeros((batch_size, *spec.video_shape), jnp.float32),
             "text_tokens": jnp.zeros((batch_size, spec.text_len), jnp.int32)}
    for name, shape in spec.dsg.array_shapes().items():
        batch[f"dsg/{name}"] = jnp.zeros((batch_size, *shape), jnp.bool_ if dtypes[name] == np.bool_ else jnp.int32)
    return batch


def init_params(experiment: Experiment, key: jax.Array) -> Any:
    """Fresh model parameters (jit-friendly)."""
    from dysen_jax.training.step import dsg_inputs

    batch = dummy_inputs(experiment.spec)
    ones = jnp.ones((1,), jnp.bool_)
    variables = experiment.model.init(key, batch["video"], jnp.zeros((1,), jnp.int32), batch["text_tokens"],
                                      dsg_inputs(batch), use_text=ones, use_dsg=ones, deterministic=True)
    return variables["params"]
