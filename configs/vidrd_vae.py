"""Stage I config: fine-tune VidRD's temporal VAE decoder on the synthetic dynamic-shapes clips.

Use: --config=configs/vidrd_vae.py (python -m dysen_jax.train dispatches on train.stage="autoencoder"
to dysen_jax/training/autoencoder.py); `:smoke` is the seconds-long variant the tests use.

The data, planner, dsg, text and model sections are configs/tiny.py's (same variant), so
`python -m dysen_jax.preprocess --config=configs/vidrd_vae.py --output_dir=DIR` writes the very
TFRecords the diffusion stages read (this stage only uses their `video`). Added: `vae` (a
VAEConfig, dysen_jax/models/vae.py; its fields only), `init_from.vae` and `autoencoder` (the loss
and the discriminator). With init_from.vae = a converted SD VAE, set `vae` to its architecture
(e.g. configs/paper.py's) and data.resolution to a multiple of 8.
"""

import importlib.util
import os

import ml_collections


def _tiny_config(variant: str) -> ml_collections.ConfigDict:
    """configs/tiny.py's get_config, loaded by path (config files are not a package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny.py")
    spec = importlib.util.spec_from_file_location("_dysen_configs_tiny", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """`variant`: '' or 'smoke'."""
    names = [v.strip() for v in variant.split(",") if v.strip()]
    unknown = [v for v in names if v != "smoke"]
    if unknown:
        raise ValueError(f"configs/vidrd_vae.py has no variant {unknown[0]!r}: use '' or 'smoke'")
    smoke = "smoke" in names
    c = _tiny_config("smoke" if smoke else "")

    # Tiny KL autoencoder (VAEConfig fields): 32 px -> 16x16x4 latents. The temporal decoder is
    # always on in this stage (VidRD: a zero-init 3x1x1 block after every decoder ResNet).
    c.vae = ml_collections.ConfigDict()
    c.vae.in_channels = 3
    c.vae.out_channels = 3
    c.vae.block_out_channels = (32, 64)
    c.vae.layers_per_block = 1
    c.vae.latent_channels = 4
    c.vae.norm_num_groups = 8
    c.vae.scaling_factor = 0.18215
    c.vae.temporal_decoder = True
    c.vae.temporal_num_convs = 4      # convs per temporal block (ModelScope / VidRD: 4)

    # Start from a converted image VAE (`python -m dysen_jax.convert --kind vae`) or a stage-I
    # workdir; "" = a fresh random VAE of `vae` (the tiny demo).
    c.init_from.vae = ""

    # Stage I loss (VidRD sec. 4.4 on top of LDM's autoencoder loss, dysen_jax/training/autoencoder_loss.py).
    c.autoencoder = ml_collections.ConfigDict()
    c.autoencoder.rec_loss = "l1"       # l1 (LDM) | l2: mean per-pixel error
    c.autoencoder.kl_weight = 1e-5      # VidRD: 1e-5 (LDM: 1e-6); KL summed per frame latent
    c.autoencoder.adv_weight = 0.5      # VidRD: 0.5 x the generator's adversarial loss
    c.autoencoder.adaptive_adv_weight = False  # True: LDM's grad-norm ratio at the decoder's last conv x adv_weight
    c.autoencoder.disc_start = 50       # steps before the discriminator (and the adversarial term) switch on
    c.autoencoder.disc_channels = 16    # PatchGAN width of the first conv (LDM: 64)
    c.autoencoder.disc_layers = 2       # stride-2 conv layers (LDM: 3); 32 px -> 6x6 patches of 22 px
    c.autoencoder.disc_norm = "group"   # group | none (LDM's BatchNorm replaced: see models/discriminator.py)
    c.autoencoder.disc_learning_rate = 2e-4
    c.autoencoder.adam_b1 = 0.5         # both optimizers' Adam betas (LDM)
    c.autoencoder.adam_b2 = 0.9

    c.train.stage = "autoencoder"       # python -m dysen_jax.train runs training/autoencoder.py
    c.train.learning_rate = 2e-4        # temporal blocks (warmup + cosine, training/state.py)
    c.train.sample_at_end = False
    if not smoke:                       # (smoke keeps tiny.py's 4 steps, log every 1, checkpoint every 2)
        c.train.num_steps = 100         # CPU demo length (the decoder on 64 frames per batch dominates)
        c.train.log_every = 10
        c.train.checkpoint_every = 50

    if smoke:
        c.vae.block_out_channels = (8, 16)
        c.vae.norm_num_groups = 4
        c.vae.temporal_num_convs = 2
        c.autoencoder.disc_start = 2
        c.autoencoder.disc_channels = 8
        c.autoencoder.disc_layers = 2       # 16 px -> 2x2 patches
        c.train.learning_rate = 1e-3
    return c
