"""Tiny config: pixel-space Dysen-VDM on the synthetic dynamic-shapes dataset, trains on one CPU.

Use: --config=configs/tiny.py, override any key with --config.train.num_steps=10 etc.
Variant `--config=configs/tiny.py:smoke` shrinks everything so a run takes seconds (the tests use it);
the paper's Table 4 ablations are variants too (`:no_dysen`, `:no_imagination`, `:no_swc`,
`:no_rl_icl`, `:gnn`, combinable: `:smoke,no_swc`). `:no_swc` and `:no_rl_icl` need `--config.planner.backend=openai`
(`:no_imagination` also works with the offline planner, whose step III is object permanence).
Variant `:latent` is latent diffusion as in the paper, with a tiny *random-init* VAE (no pretrained
weights exist offline; 32 px frames -> 8x8x4 latents, `init_from.vae="random"`): it exercises the
latent path (encode, DDIM in latent space, decode) end to end but its decoded videos are noise;
`:smoke,latent` is the seconds-long version (16 px -> 4x4x4). `:small` is the benchmarks' second size
(64 px, 16 frames, a 4-level UNet; benchmarks/train_step.py). Add
`--config.data.precompute_latents=True` to store the VAE posterior in the TFRecords at preprocess.
"""

import ml_collections

from dysen_jax.ablations import ABLATIONS, apply_switches
from dysen_jax.parallel.logical import DEFAULT_MIN_SHARD_SIZE, DEFAULT_RULES
from dysen_jax.metrics.settings import evaluate_config
from dysen_jax.planner.settings import planner_config




def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """`variant`: comma-separated names among 'smoke', 'latent', 'small' and the ABLATIONS, e.g. 'smoke,no_swc'."""
    c = base_config()
    for name in filter(None, (v.strip() for v in variant.split(","))):
        if name == "smoke":
            shrink_for_smoke_test(c)
        elif name == "latent":
            use_tiny_latent_vae(c)
        elif name == "small":
            grow_to_small(c)
        elif name in ABLATIONS:
            apply_switches(c, ABLATIONS[name])
        else:
            raise ValueError(f"configs/tiny.py has no variant {name!r}: use '', 'smoke', 'latent', 'small' or any of "
                             f"{', '.join(ABLATIONS)} (comma-separated)")
    return c


def shrink_for_smoke_test(c: ml_collections.ConfigDict) -> None:
    """16 px, 16 clips, a 0.1M-param model and 4 steps: checks the plumbing, learns nothing."""
    c.data.num_train = 16
    c.data.num_shards = 2
    c.data.resolution = 16
    c.data.shuffle_buffer = 16
    c.model.text_width = 16
    c.model.text_layers = 1
    c.model.text_heads = 2
    c.model.rgtrm_width = 16
    c.model.rgtrm_layers = 1
    c.model.rgtrm_heads = 2
    c.model.channels = (8, 16)
    c.model.attention_levels = (False, True)
    c.model.temporal_attention_levels = ()
    c.model.heads = 2
    c.train.num_steps = 4
    c.train.warmup_steps = 1
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.train.keep_checkpoints = 3
    c.sample.steps = 2
    c.evaluate.num_videos = 2
    c.evaluate.max_actions = 2


def grow_to_small(c: ml_collections.ConfigDict) -> None:
    """The "small" config of the benchmarks: 64 px, 16 frames, a 4-level 13M-param UNet at SD's
    proportions (widths 32-256, 2 ResNets per level, attention below the top level)."""
    c.data.resolution = 64
    c.data.num_frames = 16
    c.model.channels = (32, 64, 128, 256)
    c.model.num_res_blocks = 2
    c.model.attention_levels = (False, True, True, True)
    c.model.temporal_attention_levels = ()
    c.model.heads = 4
    c.model.rgtrm_width = 128
    c.model.text_width = 128
    c.dsg.max_steps = 16


def use_tiny_latent_vae(c: ml_collections.ConfigDict) -> None:
    """Latent diffusion on the `vae` section's tiny VAE, randomly initialised (tests/demo only)."""
    c.model.latent = True
    c.model.in_channels = c.vae.latent_channels
    c.init_from.vae = "random"


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Synthetic dynamic-shapes data (dysen_jax/data/shapes.py).
    c.data = ml_collections.ConfigDict()
    c.data.dataset = "dynamic_shapes"
    c.data.num_train = 512          # examples written by preprocess
    c.data.num_frames = 8           # F
    c.data.resolution = 32          # H = W
    c.data.max_actions = 3          # 1..max_actions events per clip
    c.data.num_shards = 4           # TFRecord shards
    c.data.shuffle_buffer = 512
    c.data.data_dir = ""            # TFRecord dir; "" = <workdir>/data (preprocess writes it when missing)
    c.data.captions_file = ""       # dataset="captions" reads this .jsonl {"caption","video"} / .csv caption,video
    c.data.plan_batch_size = 64     # captions planned per batch (the LLM's requests of a batch run concurrently)
    c.data.precompute_latents = False  # True (needs model.latent): preprocess stores the VAE posterior per clip
    c.data.latent_batch_size = 8    # clips per VAE encoder call in preprocess (precompute_latents)
    c.data.input_streams = 1        # the global batch is S tf.data streams: S = a multiple of the process count; data order depends on S only
    c.data.frame_stride = 0         # real videos: 0 = F frames spread over the whole video; k = every k-th frame
    c.data.random_start = False     # with frame_stride: the clip starts at a random frame (else the centred window)
    c.data.crop = "center"          # square cut along the longer side, then resized: center | random
    c.data.image_captions_file = ""  # .jsonl {"caption","image"} / .csv caption,image: images that become pseudo-videos
    c.data.pseudo_video_ratio = 0.0  # fraction of items that are pseudo-videos (VidRD §4.2 zoom + pan); 1 = images only
    c.data.zoom_range = (1.0, 1.5)  # pseudo-videos: zoom of the first / last frame, each uniform in (min, max); 1 = whole
    c.data.pan = 0.2                # pseudo-videos: largest move of the crop centre per axis, / the shorter side

    # Planner used by preprocess and sample: every key is documented in dysen_jax/planner/settings.py.
    c.planner = planner_config()

    # Converted weights to start from (training/pretrained.py): a UNet written by
    # `python -m dysen_jax.convert --kind unet2d|unet3d` replaces params["unet"] at initialisation.
    c.init_from = ml_collections.ConfigDict()
    c.init_from.checkpoint = ""      # a previous stage's workdir: its newest checkpoint's EMA params (matching names)
    c.init_from.unet = ""
    # The frozen VAE of latent diffusion (model.latent; dysen_jax/training/latents.py): a folder from
    # `python -m dysen_jax.convert --kind vae`, a stage-I workdir, or "random" (tests/demo: variant :latent).
    c.init_from.vae = ""

    # DSG tensor sizes (dysen_jax/dsg/tensorize.py).
    c.dsg = ml_collections.ConfigDict()
    c.dsg.max_steps = 8             # M distinct scene graphs
    c.dsg.max_nodes = 16            # N node slots (objects + relations + attributes)
    c.dsg.max_label_words = 4       # W words per node label
    c.dsg.num_hash_buckets = 64     # ids for unseen words (open vocabulary)

    # Text tokens for the tiny word-level text encoder.
    c.text = ml_collections.ConfigDict()
    c.text.max_len = 24

    # Denoiser: text encoder + RGTrm + 3D-UNet (dysen_jax/models).
    c.model = ml_collections.ConfigDict()
    c.model.vocab_size = -1         # -1: taken from the preprocessed data's manifest
    c.model.text_width = 64
    c.model.text_layers = 2
    c.model.text_heads = 4
    c.model.rgtrm_width = 64
    c.model.rgtrm_layers = 2
    c.model.rgtrm_heads = 4
    c.model.rgtrm_scan = False      # True: RGTrm layers under nn.scan (params stacked [L, ...]; compile time flat in L)
    c.model.rgtrm_remat = "none"    # RGTrm per-layer remat: none | full | dots | dots_no_batch
    c.model.text_encoder = "tiny"   # tiny (word-level, trained) | clip | minilm (pretrained, frozen; see README)
    c.model.text_encoder_path = ""  # converted params folder (python -m dysen_jax.convert); minilm: "" = shipped
    c.model.text_encoder_layer = -1  # CLIP hidden state to use: -1 last, -2 penultimate (SD 2.x)
    c.model.use_dsg = True          # False: text-only ("w/o Dysen")
    c.model.dsg_encoder = "rgtrm"   # rgtrm | gnn (a plain graph convolution net, Table 4\'s "RGTrm -> GNN")
    c.model.latent = False          # True: latent diffusion on the `vae` section's latents (variant :latent)
    c.model.in_channels = 3         # denoiser input channels: 3 (RGB) in pixel space, vae.latent_channels if latent
    # 3D-UNet (dysen_jax/models/unet3d.py): SD's diffusers layout + temporal layers; keys -> UNet3DConfig
    # via unet_config.from_model_config (unset keys take its defaults).
    c.model.channels = (16, 32, 64)  # block_out_channels: UNet width per resolution level (32, 16, 8 px)
    c.model.num_res_blocks = 1       # layers_per_block
    c.model.attention_levels = (False, False, True)  # CrossAttn blocks (spatial, DSG, text, temporal attention) here
    c.model.heads = 4               # attention heads per level (int or one per level)
    c.model.norm_num_groups = 8     # GroupNorm groups (SD: 32); must divide every width
    c.model.frame_affine = True     # eq. 11 per-frame scale/shift in every ResNet
    c.model.temporal_conv = True    # VidRD/ModelScope temporal conv after every ResNet (zero-init, residual)
    c.model.temporal_attention = True  # temporal attention after every spatial transformer (zero-init, residual)
    c.model.temporal_attention_levels = (False, True, True)  # per level: temporal attention after every layer (16, 8 px); () = attention_levels
    c.model.temporal_transformer_in = False  # ModelScope's extra temporal attention after conv_in
    c.model.temporal_norm = "frame"  # temporal GroupNorm statistics per frame (causality) | "clip" (ModelScope)
    c.model.temporal_position = "sinusoidal"  # frame positions before the temporal attentions | "none"
    c.model.temporal_causal = False  # eq. 12 lower-triangular mask in the temporal attentions (paper: True; the bundle, stage 8: False)
    c.model.temporal_conv_causal = True  # temporal convs see frames f-2..f (None: = temporal_causal); stages 1-8 trained them so
    c.model.pooled_conditions = True  # text (per clip) and DSG (per frame) masked means -> + timestep embedding (Imagen/SDXL-style)
    c.model.max_frames = 16         # per-frame affine (eq. 11) table size; >= data.num_frames
    c.model.dropout = 0.0
    c.model.dtype = "float32"       # compute dtype; params are always float32
    c.model.unet_remat = "none"     # UNet per-layer remat (ResNet/transformer/temporal): none | full | dots | dots_no_batch

    # A tiny KL autoencoder for model.latent=True (dysen_jax/models/vae.py VAEConfig fields only):
    # 3 levels = x4 downsampling, 32 px -> 8x8x4 latents.
    c.vae = ml_collections.ConfigDict()
    c.vae.in_channels = 3
    c.vae.out_channels = 3
    c.vae.block_out_channels = (8, 16, 16)
    c.vae.layers_per_block = 1
    c.vae.latent_channels = 4       # = model.in_channels when latent
    c.vae.norm_num_groups = 4
    c.vae.scaling_factor = 1.0      # a random-init VAE has no calibrated latent scale (SD: 0.18215)
    c.vae.temporal_decoder = False  # True: VidRD's zero-init temporal convs after each decoder ResNet

    # Diffusion (dysen_jax/diffusion).
    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.schedule = "cosine"  # linear | scaled_linear | cosine
    c.diffusion.num_timesteps = 1000
    c.diffusion.prediction = "v"     # epsilon | v
    c.diffusion.text_drop_prob = 0.1  # classifier-free guidance: P(text replaced by its null), per example
    c.diffusion.dsg_drop_prob = 0.1   # P(DSG replaced by its null), drawn independently of the text's
    c.diffusion.frame_noise_share = 0.5  # fraction of the noise variance a clip's frames share (diffusion/noise.py); 0 = i.i.d.
    c.diffusion.timestep_shift = 1.0  # training t: SD3's shift s·u/(1+(s-1)u) of u ~ U(0,1); 1 = uniform, > 1 = more noisy steps

    # Training (dysen_jax/train.py).
    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 8           # global batch
    c.train.num_steps = 200
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 20
    c.train.weight_decay = 0.0
    c.train.grad_clip = 1.0
    c.train.ema_decay = 0.99
    c.train.log_every = 25
    c.train.checkpoint_every = 100
    c.train.keep_checkpoints = 2
    c.train.sample_at_end = True
    c.train.sample_every = 0         # also sample to TensorBoard (GIF) every N steps; 0 = never
    c.train.stage = "diffusion"      # diffusion (stages II/III: the denoiser) | autoencoder (stage I, configs/vidrd_vae.py)
    c.train.trainable = ""           # regex over param paths ('unet/.../kernel'); "" = all (minus frozen towers)
    c.train.grad_accum_steps = 1     # micro-batches per step (same update, less activation memory)
    c.train.max_nonfinite_steps = 10  # stop after this many non-finite steps in a row (each one is skipped)
    c.train.peak_tflops = 0.0        # per-device peak for the logged MFU; 0 = measure a matmul at start

    # Device mesh (dysen_jax/parallel): axis sizes, -1 = all remaining devices; batch over data x fsdp.
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1                 # params/optimizer state split over it too (ZeRO-3)
    c.mesh.tensor = 1               # Megatron-style split of heads / MLP / conv hidden widths
    c.mesh.rules = DEFAULT_RULES    # (logical axis, mesh axis or None) pairs, dysen_jax/parallel/logical.py
    c.mesh.min_shard_size = DEFAULT_MIN_SHARD_SIZE  # arrays with fewer elements are replicated

    # Sampling (dysen_jax/sample.py).
    c.sample = ml_collections.ConfigDict()
    c.sample.steps = 25
    c.sample.eta = 0.0
    c.sample.sampler = "ddim"        # ddim | ddpm (ancestral, = DDIM with eta 1; eta is then ignored)
    c.sample.frame_noise_share = -1.0  # sampler noise prior: -1 = diffusion.frame_noise_share (trained); more = frames share more noise
    c.sample.guidance = 3.0         # text guidance scale s_text (compositional CFG, diffusion/samplers.py)
    c.sample.dsg_guidance = 3.0     # DSG scale s_dsg given the text; = guidance: classic CFG (2 branches); 1, 1 = conditional
    c.sample.negative_prompt = ""   # text the unconditional branches see instead of the null text; "" = none
    c.sample.num_frames = 0         # video frames: 0 = one clip (data.num_frames = N), k*N = a VidRD long video of k clips
    c.sample.prompt_frames = 4      # VidRD M: clip k's last M frames prompt clip k+1 (staged guidance, eq. 8)
    c.sample.pns_alpha = 4.0        # VidRD past-dependent noise sampling alpha (eq. 7); 0 = fresh noise, inf = FNR only
    c.sample.staged_beta = 0.4      # VidRD staged guidance beta in [0, 1] (eq. 8); 0 = no copying
    c.sample.batch_size = 1         # prompts sampled together with --prompts FILE
    c.sample.prompt = "the red circle moves right, then the blue square jumps"
    c.sample.fps = 4

    # Evaluation (python -m dysen_jax.evaluate; dysen_jax/evaluate.py). FVD/FID are heavy; CLIPSIM/IS run
    # only when a local model path is given (no weights ship offline).
    c.evaluate = evaluate_config(num_videos=32, parser="shapes", fvd=False, fid=False, batch_size=8)
    return c
