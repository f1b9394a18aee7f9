"""Stage I: fine-tune VidRD's temporal VAE decoder (sec. 4.4) against a PatchGAN discriminator.

    python -m dysen_jax.train --config=configs/vidrd_vae.py --workdir=DIR   (config.train.stage="autoencoder")

The VAE starts from converted image weights (`init_from.vae`, a folder from `python -m
dysen_jax.convert --kind vae`, or another stage-I workdir) or fresh from `config.vae`, with zero-init
temporal blocks after every decoder ResNet, so step 0 decodes exactly like the image decoder. Only
the temporal blocks train (optax.multi_transform: `vae.is_temporal_path` -> Adam, everything else
-> set_to_zero); the encoder runs outside the gradient (it is frozen, so the KL term is reported but
has no gradient). One jitted step updates the VAE (training/autoencoder_loss.py) and then, from
`autoencoder.disc_start` on, the discriminator on the same reconstructions; before that the
discriminator and its optimizer state stay exactly at their initial values.

Sharding, checkpoints and exact resume work as in train.py: state FSDP-sharded over the config's
mesh, batch over data x fsdp, state donated, orbax checkpoints in DIR/checkpoints, step randomness
fold_in(seed, step) and the input pipeline skipping the batches already seen. DIR/autoencoder.json
records the VAE architecture and the config, so `load_trained_vae(DIR)` can rebuild the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dysen_jax import logs
from dysen_jax.models.init_compile import jit_init
from dysen_jax.models.discriminator import PatchDiscriminator, frame_logits, init_discriminator
from dysen_jax.models.layers import batch_to_frames, frames_to_batch
from dysen_jax.models.vae import AutoencoderKL, VAEConfig, init_params, is_temporal_path, load_pretrained
from dysen_jax.parallel import logical
from dysen_jax.parallel.mesh import batch_sharding, make_mesh, num_batch_shards, replicated
from dysen_jax.training import checkpoint
from dysen_jax.training.autoencoder_loss import (adaptive_weight, disc_factor, discriminator_hinge_loss,
                                                 generator_adversarial_loss, generator_loss, reconstruction_loss)
from dysen_jax.training.state import learning_rate_schedule

WORKDIR_META = "autoencoder.json"   # written into a stage-I workdir; marks it for is_autoencoder_workdir


@flax.struct.dataclass
class AutoencoderState:
    """Everything a resumed stage-I run needs (a pytree: jits, shards and checkpoints as one)."""

    step: jax.Array
    vae_params: Any
    disc_params: Any
    vae_opt_state: Any
    disc_opt_state: Any


@dataclasses.dataclass(frozen=True)
class AutoencoderParts:
    """The modules and optimizers of a stage-I run (static: closed over by the jitted step)."""

    vae: AutoencoderKL
    discriminator: PatchDiscriminator
    vae_optimizer: optax.GradientTransformation
    disc_optimizer: optax.GradientTransformation


def _path_str(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def temporal_labels(params: Any) -> Any:
    """'temporal' for every VidRD temporal-block param, 'frozen' for everything else."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "temporal" if is_temporal_path(_path_str(path)) else "frozen", params)


def temporal_only(tree: Any) -> list[Any]:
    """The leaves of a params-shaped tree that belong to temporal blocks."""
    return [x for path, x in jax.tree_util.tree_leaves_with_path(tree) if is_temporal_path(_path_str(path))]


def autoencoder_section(config: Any) -> Any:
    ae = config.get("autoencoder") if hasattr(config, "get") else None
    if ae is None:
        raise ValueError("the config has no `autoencoder` section: start from configs/vidrd_vae.py")
    return ae


def make_optimizers(config: Any) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """(VAE optimizer: clipped Adam on the temporal params only, LR schedule of config.train;
    discriminator optimizer: Adam at autoencoder.disc_learning_rate). Betas as LDM (0.5, 0.9)."""
    ae = autoencoder_section(config)
    betas = dict(b1=ae.adam_b1, b2=ae.adam_b2)
    temporal = optax.chain(optax.clip_by_global_norm(config.train.grad_clip),
                           optax.adam(learning_rate_schedule(config.train), **betas))
    vae_opt = optax.multi_transform({"temporal": temporal, "frozen": optax.set_to_zero()}, temporal_labels)
    return vae_opt, optax.adam(ae.disc_learning_rate, **betas)


def converted_vae_config(path: str, config: Any) -> VAEConfig:
    """The architecture of the converted VAE in `path` with the temporal decoder switched on, after
    checking it against the fields that `config.vae` sets (a mismatch names the field)."""
    from dysen_jax.convert.common import META_FILE

    meta_file = os.path.join(path, META_FILE)
    if not os.path.exists(meta_file):
        raise FileNotFoundError(f"config.init_from.vae={path!r} has no {META_FILE}: point it at a folder from "
                                "`python -m dysen_jax.convert --kind vae` or at a stage-I workdir")
    with open(meta_file) as f:
        meta = json.load(f)
    if meta.get("kind", "vae") != "vae":
        raise ValueError(f"config.init_from.vae={path!r} holds a {meta['kind']!r} checkpoint, not a vae")
    wanted = dict(config.get("vae", {}) or {})
    overrides = {"temporal_decoder": True}
    if "temporal_num_convs" in wanted:
        overrides["temporal_num_convs"] = int(wanted["temporal_num_convs"])
    loaded = VAEConfig.from_dict(meta.get("config", {}), **overrides)
    have = loaded.to_dict()
    for key, value in wanted.items():
        if key in ("temporal_decoder", "temporal_num_convs") or key not in have:
            continue
        value = list(value) if isinstance(value, (tuple, list)) else value
        if value != have[key]:
            raise ValueError(f"config.vae.{key}={value!r} but the converted VAE in {path} has {have[key]!r}: "
                             f"fix config.vae.{key} or config.init_from.vae")
    return loaded


def vae_config_for(config: Any) -> VAEConfig:
    """The VAE architecture of this run (temporal decoder on), without loading any weights."""
    path = str(config.init_from.get("vae", "") or "") if "init_from" in config else ""
    if path and is_autoencoder_workdir(path):
        return VAEConfig.from_dict(read_workdir_meta(path)["vae_config"])
    if path:
        return converted_vae_config(path, config)
    if "vae" not in config:
        raise ValueError("the config has neither a `vae` section nor init_from.vae: add one (configs/vidrd_vae.py)")
    return VAEConfig.from_dict(dict(config.vae), temporal_decoder=True)


def initial_vae_params(config: Any, vae_config: VAEConfig) -> Any:
    """Converted image weights + zero-init temporal blocks, a stage-I workdir's trained VAE, or a fresh VAE."""
    path = str(config.init_from.get("vae", "") or "") if "init_from" in config else ""
    if path and is_autoencoder_workdir(path):
        return load_trained_vae(path)[1]
    if path:
        _, params = load_pretrained(path, temporal_decoder=True, temporal_num_convs=vae_config.temporal_num_convs)
        return params
    return init_params(vae_config, jax.random.PRNGKey(config.seed))


def build_parts(config: Any, vae_config: VAEConfig) -> AutoencoderParts:
    ae = autoencoder_section(config)
    vae_opt, disc_opt = make_optimizers(config)
    disc = PatchDiscriminator(channels=ae.disc_channels, num_layers=ae.disc_layers, norm=ae.disc_norm)
    return AutoencoderParts(AutoencoderKL(vae_config), disc, vae_opt, disc_opt)


def state_layout(parts: AutoencoderParts, config: Any, mesh: Any) -> tuple[Callable, AutoencoderState, Any]:
    """(init function (vae_params, key) -> state, abstract state, its shardings under config.mesh's
    logical axis rules, parallel/logical.py); allocates nothing."""

    def init(vae_params: Any, key: jax.Array) -> AutoencoderState:
        disc_params = init_discriminator(parts.discriminator, key, config.data.resolution)
        return AutoencoderState(step=jnp.zeros((), jnp.int32), vae_params=vae_params, disc_params=disc_params,
                                vae_opt_state=parts.vae_optimizer.init(vae_params),
                                disc_opt_state=parts.disc_optimizer.init(disc_params))

    from dysen_jax.models.vae import param_shapes

    abstract = jax.eval_shape(init, param_shapes(parts.vae.config), jax.random.PRNGKey(0))
    rules = logical.ShardingRules.from_config(config.mesh)
    return init, abstract, logical.state_shardings(abstract, mesh, rules)


def initial_state(config: Any, parts: AutoencoderParts, mesh: Any) -> tuple[AutoencoderState, Any]:
    """A fresh stage-I state in its sharded layout (see `initial_vae_params`), and that layout."""
    init, _, shardings = state_layout(parts, config, mesh)
    vae_params = jax.device_put(initial_vae_params(config, parts.vae.config), shardings.vae_params)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
    state = jit_init(init, out_shardings=shardings)(vae_params, key)
    return state, shardings


def make_autoencoder_step(parts: AutoencoderParts, config: Any
                          ) -> Callable[[AutoencoderState, jax.Array, jax.Array], tuple[AutoencoderState, dict]]:
    """(state, video [B, F, H, W, C] in [-1, 1], base_key) -> (new state, metrics); randomness fold_in(key, step)."""
    ae = autoencoder_section(config)
    vae, disc = parts.vae, parts.discriminator

    def step_fn(state: AutoencoderState, video: jax.Array, base_key: jax.Array):
        key = jax.random.fold_in(base_key, state.step)
        frames = video.shape[1]
        posterior = vae.apply({"params": state.vae_params}, frames_to_batch(video), method="encode")
        posterior = jax.lax.stop_gradient(posterior)  # the encoder is frozen
        z = posterior.sample(key)
        kl = jnp.mean(posterior.kl())  # summed over each frame's latent, averaged over frames
        factor = disc_factor(state.step, ae.disc_start)

        def terms(vae_params: Any):
            recon = batch_to_frames(vae.apply({"params": vae_params}, z, frames, method="decode"), frames)
            rec = reconstruction_loss(recon, video, ae.rec_loss)
            adv = generator_adversarial_loss(frame_logits(disc, state.disc_params, recon))
            return (rec, adv), recon

        if ae.adaptive_adv_weight:
            (rec, adv), pullback, recon = jax.vjp(terms, state.vae_params, has_aux=True)
            one, zero = jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)
            (rec_grads,), (adv_grads,) = pullback((one, zero)), pullback((zero, one))
            last = lambda g: g["decoder"]["conv_out"]["kernel"]
            weight = adaptive_weight(last(rec_grads), last(adv_grads), ae.adv_weight)
            _, metrics = generator_loss(rec, kl, adv, factor, ae, weight)
            grads = jax.tree.map(lambda r, a: r + metrics["adv_weight"] * a, rec_grads, adv_grads)
        else:
            def total(vae_params: Any):
                (rec, adv), recon = terms(vae_params)
                loss, metrics = generator_loss(rec, kl, adv, factor, ae)
                return loss, (metrics, recon)

            (_, (metrics, recon)), grads = jax.value_and_grad(total, has_aux=True)(state.vae_params)
        updates, vae_opt_state = parts.vae_optimizer.update(grads, state.vae_opt_state, state.vae_params)
        vae_params = optax.apply_updates(state.vae_params, updates)

        fake = jax.lax.stop_gradient(recon)

        def disc_loss_fn(disc_params: Any):
            real_logits = frame_logits(disc, disc_params, video)
            fake_logits = frame_logits(disc, disc_params, fake)
            return discriminator_hinge_loss(real_logits, fake_logits), (jnp.mean(real_logits), jnp.mean(fake_logits))

        (disc_loss, (logits_real, logits_fake)), disc_grads = jax.value_and_grad(disc_loss_fn, has_aux=True)(
            state.disc_params)
        disc_updates, disc_opt_state = parts.disc_optimizer.update(disc_grads, state.disc_opt_state,
                                                                   state.disc_params)
        disc_on = factor > 0  # before disc_start the discriminator (and its Adam count) stays as initialised
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(disc_on, n, o), new, old)
        disc_params = keep(optax.apply_updates(state.disc_params, disc_updates), state.disc_params)
        disc_opt_state = keep(disc_opt_state, state.disc_opt_state)

        new_state = state.replace(step=state.step + 1, vae_params=vae_params, vae_opt_state=vae_opt_state,
                                  disc_params=disc_params, disc_opt_state=disc_opt_state)
        metrics = {**metrics, "adv_term": metrics["adv_weight"] * metrics["adv_loss"],
                   "disc_loss": factor * disc_loss, "logits_real": logits_real, "logits_fake": logits_fake,
                   "grad_norm": optax.global_norm(temporal_only(grads))}
        return new_state, metrics

    return step_fn


def video_shape_check(config: Any, data_dir: str) -> Any:
    """The data's RecordSpec, after checking its clips have the config's frames and resolution."""
    from dysen_jax.data.records import manifest_spec_and_vocab, read_manifest

    spec, _ = manifest_spec_and_vocab(read_manifest(data_dir))
    if (spec.num_frames, spec.resolution) != (config.data.num_frames, config.data.resolution):
        raise ValueError(f"the data in {data_dir} has {spec.num_frames} frames of {spec.resolution} px but "
                         f"config.data asks for {config.data.num_frames} of {config.data.resolution}: fix "
                         "config.data.num_frames/resolution or preprocess with this config")
    return spec


def read_workdir_meta(workdir: str) -> dict[str, Any]:
    with open(os.path.join(workdir, WORKDIR_META)) as f:
        return json.load(f)


def write_workdir_meta(workdir: str, config: Any, vae_config: VAEConfig) -> None:
    """Records the VAE architecture and the config (process 0); refuses a workdir of another VAE."""
    path = os.path.join(workdir, WORKDIR_META)
    meta = {"stage": "autoencoder", "vae_config": vae_config.to_dict(), "config": json.loads(config.to_json())}
    if os.path.exists(path):
        old = read_workdir_meta(workdir)["vae_config"]
        if old != meta["vae_config"]:
            raise ValueError(f"{workdir} holds a stage-I run of another VAE ({old}); this config builds "
                             f"{meta['vae_config']}: use a new --workdir or the old config.vae / init_from.vae")
    if jax.process_index() == 0:
        with open(path + ".tmp", "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
        os.replace(path + ".tmp", path)


def is_autoencoder_workdir(path: str) -> bool:
    """Whether `path` is a stage-I workdir (autoencoder.json + checkpoints), not a converted VAE folder."""
    return os.path.isfile(os.path.join(path, WORKDIR_META)) and os.path.isdir(os.path.join(path, "checkpoints"))


def load_trained_vae(workdir: str) -> tuple[AutoencoderKL, dict[str, Any]]:
    """(model, params) of the fine-tuned VAE (temporal decoder included) in a stage-I workdir's newest
    checkpoint; params are host numpy arrays, as `vae.load_pretrained` returns them."""
    if not is_autoencoder_workdir(workdir):
        raise FileNotFoundError(f"{workdir} is not a stage-I workdir (no {WORKDIR_META} and checkpoints/): "
                                "train one with configs/vidrd_vae.py")
    meta = read_workdir_meta(workdir)
    config = ml_collections.ConfigDict(meta["config"])
    vae_config = VAEConfig.from_dict(meta["vae_config"])
    parts = build_parts(config, vae_config)
    mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    _, abstract, _ = state_layout(parts, config, mesh)
    manager = checkpoint.checkpoint_manager(workdir, config.train.keep_checkpoints)
    sharding = replicated(mesh)
    restored = checkpoint.restore_latest(manager, checkpoint.abstract_like(
        abstract, jax.tree.map(lambda _: sharding, abstract)))
    manager.close()
    if restored is None:
        raise FileNotFoundError(f"{workdir}/checkpoints holds no checkpoint yet")
    state, step = restored
    logs.info(f"loaded the stage-I VAE of {workdir} at step {step}")
    return parts.vae, jax.tree.map(np.asarray, state.vae_params)


def train_autoencoder(config: Any, workdir: str, show_progress: bool = True) -> dict[str, Any]:
    """Trains stage I to config.train.num_steps (resuming if possible); returns a summary of the run:
    start_step, final_step, history (logged metrics), num_params, num_trainable, state."""
    from tqdm import tqdm

    from dysen_jax.data.pipeline import make_dataset
    from dysen_jax.experiment import data_dir_for
    from dysen_jax.parallel.distributed import local_input
    from dysen_jax.train import MetricWriter, to_global_batch  # here: train.py dispatches to this module

    os.makedirs(workdir, exist_ok=True)
    data_dir = data_dir_for(config, workdir)
    spec = video_shape_check(config, data_dir)
    vae_config = vae_config_for(config)
    write_workdir_meta(workdir, config, vae_config)
    parts = build_parts(config, vae_config)
    mesh = make_mesh(config.mesh)
    if config.train.batch_size % num_batch_shards(mesh):
        raise ValueError(f"config.train.batch_size={config.train.batch_size} must be divisible by the "
                         f"{num_batch_shards(mesh)} data x fsdp devices")

    _, abstract_state, state_shardings = state_layout(parts, config, mesh)
    manager = checkpoint.checkpoint_manager(workdir, config.train.keep_checkpoints)
    restored = checkpoint.restore_latest(manager, checkpoint.abstract_like(abstract_state, state_shardings))
    if restored is None:
        state, _ = initial_state(config, parts, mesh)
        start_step = 0
    else:
        state, start_step = restored
        logs.info(f"resumed from step {start_step} in {manager.directory}")
    num_params = sum(x.size for x in jax.tree.leaves(state.vae_params))
    num_trainable = sum(x.size for x in temporal_only(state.vae_params))
    logs.info(f"stage I: VAE {num_params / 1e6:.2f}M params ({num_trainable / 1e6:.3f}M temporal, trained), "
              f"discriminator {sum(x.size for x in jax.tree.leaves(state.disc_params)) / 1e6:.3f}M, "
              f"mesh {dict(mesh.shape)}, {jax.device_count()} devices, {jax.process_count()} process(es)")

    data_sharding = batch_sharding(mesh)
    train_step = jax.jit(make_autoencoder_step(parts, config),
                         in_shardings=(state_shardings, data_sharding, replicated(mesh)),
                         out_shardings=(state_shardings, replicated(mesh)), donate_argnums=(0,))
    base_key = jax.device_put(jax.random.PRNGKey(config.seed + 1), replicated(mesh))
    num_streams = int(config.data.input_streams)  # as train.py: data order independent of hosts
    input_streams, local_batch = local_input(data_sharding, config.train.batch_size, num_streams)
    dataset = make_dataset(data_dir, spec, local_batch, config.seed, start_step=start_step,
                           shuffle_buffer=config.data.shuffle_buffer, num_streams=num_streams,
                           streams=input_streams, video=True)  # pixels even from latent-precomputed records
    writer = MetricWriter(workdir)
    history: list[dict[str, float]] = []
    batches = dataset.as_numpy_iterator()
    window_start, window_steps, window_metrics = time.time(), 0, []
    bar = tqdm(total=config.train.num_steps, initial=start_step, desc="stage I", unit="step",
               disable=not show_progress or jax.process_index() != 0)
    for step in range(start_step, config.train.num_steps):
        batch = next(batches)
        if "video" not in batch:
            raise ValueError(f"the records in {data_dir} give no 'video' (only precomputed latents?): the "
                             "autoencoder stage trains on pixels")
        video = to_global_batch({"video": batch["video"]}, data_sharding)["video"]
        state, metrics = train_step(state, video, base_key)
        if window_metrics:  # one step in flight: the bar counts finished steps
            jax.block_until_ready(window_metrics[-1])
        window_metrics.append(metrics)
        window_steps += 1
        bar.update(1)
        done = step + 1
        if done % config.train.log_every == 0 or done == config.train.num_steps or done == start_step + 1:
            fetched = jax.device_get(window_metrics)
            values = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
            window_metrics = []
            values["steps_per_sec"] = window_steps / max(time.time() - window_start, 1e-9)
            window_start, window_steps = time.time(), 0
            history.append({"step": done, **values})
            writer.scalars(done, values)
            bar.set_postfix(rec=f"{values['rec_loss']:.4f}")
            logs.info(f"step {done}: loss {values['loss']:.4f} rec {values['rec_loss']:.4f} "
                      f"adv {values['adv_term']:.4f} disc {values['disc_loss']:.4f} "
                      f"grad_norm {values['grad_norm']:.3f} {values['steps_per_sec']:.2f} steps/s")
        if done % config.train.checkpoint_every == 0 or done == config.train.num_steps:
            checkpoint.save(manager, done, state)
    bar.close()
    writer.close()
    manager.wait_until_finished()
    return {"start_step": start_step, "final_step": int(jax.device_get(state.step)), "history": history,
            "num_params": num_params, "num_trainable": num_trainable, "state": state}
