"""Latent diffusion: the frozen VAE between pixels and the denoiser (stages II/III on Z0 = E(X)).

`codec_from_config(config)` is None for pixel-space configs (`model.latent=False`). With
`model.latent=True` it loads the VAE that `init_from.vae` names:
- a folder written by `python -m dysen_jax.convert --kind vae` (`vae.load_pretrained`; the `vae`
  section's `temporal_decoder` adds zero-init VidRD temporal blocks when the folder has none),
- a stage-I workdir (`training/autoencoder.py`: the VAE with its fine-tuned temporal decoder),
- "random": a randomly initialised VAE of the `vae` section (seeded by `config.seed`), for tests and
  demos only; it is never picked silently, an empty `init_from.vae` is an error.
A loaded VAE must match every key the config's `vae` section sets (so the latent shape the config
promises is the one it gets), and `model.in_channels` must equal its latent channels.

The VAE params stay out of the train state (frozen, and as big as a small UNet): the train step takes
them as a separate argument, `codec_params`, and `model_input` turns a batch into the denoiser's x0:
the pixels (pixel space), a sample from the posterior moments the records store
(`data.precompute_latents`), or a live posterior sample of the encoder. Latents are scaled
(`AutoencoderKL.scale`, SD's 0.18215) so they have roughly unit variance, as the noise schedule assumes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dysen_jax.data.records import LATENT_LOGVAR, LATENT_MEAN, RecordSpec, video_to_unit
from dysen_jax.models.layers import batch_to_frames, frames_to_batch
from dysen_jax.models.vae import AutoencoderKL, VAEConfig

RANDOM_VAE = "random"   # init_from.vae value for a random-init VAE (tests / demos)
PIXEL_CHANNELS = 3
# VAEConfig fields the encoder's output depends on (the stored moments' fingerprint covers them).
_ENCODER_FIELDS = ("in_channels", "block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups",
                   "use_quant_conv", "mid_block_add_attention")


@dataclasses.dataclass(frozen=True, eq=False)
class LatentCodec:
    """A frozen VAE between pixel videos [B, F, H, W, 3] in [-1, 1] and scaled latents [B, F, h, w, C].

    `params` are the VAE params as loaded (host arrays); the methods take params as an argument so a
    jitted caller passes them (replicated or sharded) instead of baking them in as constants.
    """

    vae: AutoencoderKL
    params: Any
    source: str     # what init_from.vae named: a converted folder, a stage-I workdir, or "random"

    @property
    def config(self) -> VAEConfig:
        return self.vae.config

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def latent_shape(self, spec: RecordSpec) -> tuple[int, int, int, int]:
        """[F, h, w, C] of one clip of `spec`'s videos in latent space."""
        factor = self.config.downsample_factor
        if spec.resolution % factor:
            raise ValueError(f"config.data.resolution={spec.resolution} is not divisible by the VAE's "
                             f"downsampling {factor}: pick a multiple of {factor}")
        size = spec.resolution // factor
        return (spec.num_frames, size, size, self.latent_channels)

    def encode_moments(self, params: Any, video: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Video [B, F, H, W, 3] -> the posterior's (mean, logvar) [B, F, h, w, C], unscaled (logvar clamped)."""
        posterior = self.vae.apply({"params": params}, frames_to_batch(video), method="encode")
        frames = video.shape[1]
        return batch_to_frames(posterior.mean, frames), batch_to_frames(posterior.logvar, frames)

    def latents_from_moments(self, mean: jax.Array, logvar: jax.Array, key: jax.Array | None) -> jax.Array:
        """Scaled latents: a posterior sample mean + exp(logvar / 2) * eps (the mean when key is None)."""
        z = mean if key is None else mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
        return self.vae.scale(z)

    def encode(self, params: Any, video: jax.Array, key: jax.Array | None) -> jax.Array:
        """Video [B, F, H, W, 3] in [-1, 1] -> scaled latents [B, F, h, w, C] (posterior sample; mean if key is None)."""
        return self.latents_from_moments(*self.encode_moments(params, video), key)

    def decode(self, params: Any, latents: jax.Array) -> jax.Array:
        """Scaled latents [B, F, h, w, C] -> video [B, F, H, W, 3] in [-1, 1] (the temporal decoder mixes
        frames when the VAE has one)."""
        video = self.vae.apply({"params": params}, latents, method="decode_video")
        return jnp.clip(video, -1.0, 1.0)

    @functools.cached_property
    def encoder_fingerprint(self) -> str:
        """A hash of the encoder's architecture and weights: stored moments are valid for exactly this."""
        digest = hashlib.sha256(repr([(f, getattr(self.config, f)) for f in _ENCODER_FIELDS]).encode())
        for name in ("encoder", "quant_conv"):
            if name not in self.params:
                continue
            leaves = jax.tree_util.tree_flatten_with_path(self.params[name])[0]
            for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
                digest.update(f"{name}{jax.tree_util.keystr(path)}".encode())
                digest.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
        return digest.hexdigest()[:16]

    @functools.cached_property
    def _moments_jit(self) -> Any:
        return jax.jit(self.encode_moments)

    @functools.cached_property
    def _device_params(self) -> Any:
        return jax.device_put(self.params)

    def moments_of_clips(self, videos: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 clips [N, F, H, W, 3] -> numpy (mean, logvar) [N, F, h, w, C], `batch_size` clips per call
        (the last call zero-padded, so the encoder compiles once)."""
        if batch_size < 1:
            raise ValueError(f"config.data.latent_batch_size={batch_size} must be >= 1")
        means, logvars = [], []
        for start in range(0, len(videos), batch_size):
            chunk = video_to_unit(videos[start:start + batch_size])
            count = len(chunk)
            if count < batch_size:
                chunk = np.concatenate([chunk, np.zeros((batch_size - count, *chunk.shape[1:]), chunk.dtype)])
            mean, logvar = jax.device_get(self._moments_jit(self._device_params, chunk))
            means.append(np.asarray(mean[:count], np.float32))
            logvars.append(np.asarray(logvar[:count], np.float32))
        return np.concatenate(means), np.concatenate(logvars)


def model_input(codec: LatentCodec | None, codec_params: Any, batch: dict[str, jax.Array], key: jax.Array) -> jax.Array:
    """The denoiser's clean input x0 for a batch: batch["video"] in pixel space (codec None); with a codec,
    scaled latents sampled from the stored posterior moments when the batch has them, else from encoding
    batch["video"] (no gradient flows into the VAE either way)."""
    if codec is None:
        if LATENT_MEAN in batch:
            raise ValueError("the batch holds precomputed VAE latents but the config is pixel-space: set "
                             "config.model.latent=True, or preprocess without config.data.precompute_latents")
        return batch["video"]
    if LATENT_MEAN in batch:
        x0 = codec.latents_from_moments(batch[LATENT_MEAN], batch[LATENT_LOGVAR], key)
    else:
        x0 = codec.encode(codec_params, batch["video"], key)
    return jax.lax.stop_gradient(x0)


def check_in_channels(config: Any, codec: LatentCodec | None) -> None:
    """config.model.in_channels must be the VAE's latent channels (latent) or 3 (pixel space)."""
    want = codec.latent_channels if codec is not None else PIXEL_CHANNELS
    have = config.model.get("in_channels", want)
    if int(have) != want:
        where = (f"the VAE's latent channels ({codec.source}: latent_channels={want})" if codec is not None
                 else "3 (RGB, pixel space: config.model.latent=False)")
        raise ValueError(f"config.model.in_channels={have} must equal {where}: set config.model.in_channels={want}")


def _check_vae_config(loaded: VAEConfig, section: Any, source: str, skip: tuple[str, ...] = ()) -> None:
    """Every key the config's `vae` section sets (except `skip`) must match the loaded VAE's config."""
    wanted = VAEConfig.from_dict(section.to_dict() if hasattr(section, "to_dict") else dict(section))
    bad = [f"{k}: config {getattr(wanted, k)!r}, loaded {getattr(loaded, k)!r}"
           for k in section.keys() if k not in skip and getattr(wanted, k) != getattr(loaded, k)]
    if bad:
        raise ValueError(f"the VAE in init_from.vae={source!r} differs from config.vae ({'; '.join(bad)}): set "
                         "those config.vae keys to the loaded values")


def load_vae(config: Any) -> tuple[AutoencoderKL, Any, str]:
    """(model, params, source) of the VAE `config.init_from.vae` names (see the module doc)."""
    from dysen_jax.models import vae as vae_lib
    from dysen_jax.training.autoencoder import is_autoencoder_workdir, load_trained_vae

    if "vae" not in config:
        raise ValueError("config.model.latent=True needs a config.vae section (VAEConfig fields, see configs/paper.py)")
    section = config.vae
    init_from = config.get("init_from")
    source = str(init_from.get("vae", "") or "") if init_from is not None else ""
    if not source:
        raise ValueError("config.model.latent=True needs the frozen VAE: set config.init_from.vae to a folder from "
                         "`python -m dysen_jax.convert --kind vae`, a stage-I (autoencoder) workdir, or "
                         f"{RANDOM_VAE!r} (a random-init VAE: tests and demos only)")
    if source == RANDOM_VAE:
        vae_config = VAEConfig.from_dict(section.to_dict())
        return AutoencoderKL(vae_config), vae_lib.init_params(vae_config, jax.random.PRNGKey(int(config.seed))), source
    if is_autoencoder_workdir(source):
        vae, params = load_trained_vae(source)   # its fine-tuned temporal decoder is the point: not compared
        _check_vae_config(vae.config, section, source, skip=("temporal_decoder", "temporal_num_convs"))
        return vae, params, source
    overrides = {k: section[k] for k in ("temporal_decoder", "temporal_num_convs") if k in section}
    vae, params = vae_lib.load_pretrained(source, **overrides)
    _check_vae_config(vae.config, section, source)
    return vae, params, source


def codec_from_config(config: Any) -> LatentCodec | None:
    """The config's frozen VAE codec, or None in pixel space (`model.latent=False`)."""
    if not bool(config.model.get("latent", False)):
        if bool(config.data.get("precompute_latents", False)):
            raise ValueError("config.data.precompute_latents=True but config.model.latent=False (pixel space): "
                             "set model.latent=True or precompute_latents=False")
        return None
    vae, params, source = load_vae(config)
    codec = LatentCodec(vae, params, source)
    check_in_channels(config, codec)
    return codec
