"""Stable Diffusion 2.1-base config: Dysen-VDM on VidRD's backbone, 16 frames of 256x256 (latent 32x32x4).

Use: --config=configs/sd21_256.py, override any key with --config.train.batch_size=32 etc. Variants
are the Table 4 ablations as in configs/tiny.py (`:no_dysen`, `:no_imagination`, `:no_swc`,
`:no_rl_icl`, `:gnn`, combinable with commas).

VidRD (§4.1, §4.2) starts the spatial layers of its video UNet from SD 2.1-base, keeps SD's VAE
(optionally with a fine-tuned temporal decoder) and its frozen OpenCLIP ViT-H/14 text tower
(width 1024, the penultimate of its 24 layers), adds zero-initialised temporal convs and temporal
attention, and samples with 50 DDIM steps at guidance 10. SD 2.1-base's UNet: block widths
320/640/1280/1280, 2 ResBlocks per level, cross-attention at the first three levels, heads of
width 64 (5/10/20/20 heads), linear proj_in/out, cross-attention dim 1024, epsilon prediction,
scaled-linear betas, T = 1000. The DSG branch is Dysen-VDM's RGTrm at paper size (L = 12, 8 heads,
768); eq. 6 cross-attends to H^G then H^Y.

The model keys follow `dysen_jax.models.unet_config.from_model_config` (the UNet, per-level
heads), `dysen_jax.models.text_encoder.build_text_encoder` (text_encoder, text_encoder_path,
text_encoder_layer) and `dysen_jax.models.vae.VAEConfig` (the `vae` section, its fields only).
model.text_encoder = "clip" needs model.text_encoder_path (the converted OpenCLIP tower of SD 2.1);
with `--config.model.text_encoder=tiny` the word-level encoder of the same width/depth stands in.
"""

import ml_collections

from dysen_jax.ablations import ABLATIONS, apply_switches
from dysen_jax.parallel.logical import DEFAULT_MIN_SHARD_SIZE, DEFAULT_RULES
from dysen_jax.metrics.settings import evaluate_config
from dysen_jax.planner.settings import planner_config




def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """`variant`: comma-separated names among the ABLATIONS, e.g. 'no_swc,no_rl_icl'."""
    c = base_config()
    for v in filter(None, (v.strip() for v in variant.split(","))):
        if v not in ABLATIONS:
            raise ValueError(f"configs/sd21_256.py has no variant {v!r}: use '' or any of "
                             f"{', '.join(ABLATIONS)} (comma-separated)")
        apply_switches(c, ABLATIONS[v])
    return c


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Real videos with captions (dysen_jax/data/sources.py). Records hold RGB frames; the VAE
    # encodes them in the train step (or once, in preprocess, with data.precompute_latents=True), so
    # the model sees latents [F, resolution/8, resolution/8, 4].
    c.data = ml_collections.ConfigDict()
    c.data.dataset = "captions"
    c.data.captions_file = ""       # .jsonl {"caption","video"} / .csv caption,video (required)
    c.data.num_train = 0            # used by the synthetic dataset only
    c.data.num_frames = 16          # F (VidRD evaluates 16-frame clips)
    c.data.resolution = 256         # H = W in pixels; latents are resolution / 8 (the VAE) = 32
    c.data.max_actions = 3          # synthetic dataset only
    c.data.num_shards = 1024        # TFRecord shards (>= number of hosts; many, for shuffling)
    c.data.shuffle_buffer = 10_000
    c.data.data_dir = ""            # TFRecord dir; "" = <workdir>/data
    c.data.plan_batch_size = 64     # captions planned per batch (the LLM's requests of a batch run concurrently)
    c.data.precompute_latents = False  # True: preprocess stores the VAE posterior (mean, logvar) per clip; training skips the encoder
    c.data.latent_batch_size = 4    # clips per VAE encoder call in preprocess (precompute_latents)
    c.data.input_streams = 1        # the global batch is S tf.data streams: S = a multiple of the process count; data order depends on S only
    c.data.frame_stride = 4         # VidRD §5.1: frames sampled every 4 frames; 0 = spread over the whole video
    c.data.random_start = True      # VidRD: the starting frame is random along the timeline (else the centred window)
    c.data.crop = "random"          # VidRD: shorter side resized, then a random crop | center
    c.data.image_captions_file = ""  # .jsonl {"caption","image"} / .csv caption,image: images that become pseudo-videos
    c.data.pseudo_video_ratio = 0.0  # fraction of items that are pseudo-videos (VidRD §4.2 zoom + pan); 1 = images only
    c.data.zoom_range = (1.0, 1.5)  # pseudo-videos: zoom of the first / last frame, each uniform in (min, max); 1 = whole
    c.data.pan = 0.2                # pseudo-videos: largest move of the crop centre per axis, / the shorter side

    # Planner (steps I-III with an LLM, D = 5 RL-chosen demonstrations): dysen_jax/planner/settings.py.
    c.planner = planner_config()
    c.planner.backend = "openai"
    c.planner.selection = "rl"      # needs planner.selector_path from `plan train-selector`

    # DSG tensor sizes (dysen_jax/dsg/tensorize.py); not in the papers, as in configs/paper.py.
    c.dsg = ml_collections.ConfigDict()
    c.dsg.max_steps = 16            # M distinct scene graphs (<= F)
    c.dsg.max_nodes = 64            # N node slots over the whole DSG (objects + relations + attributes)
    c.dsg.max_label_words = 4       # W words per node label
    c.dsg.num_hash_buckets = 1024   # ids for unseen words (open vocabulary)

    # Text tokens: OpenCLIP's BPE context length.
    c.text = ml_collections.ConfigDict()
    c.text.max_len = 77

    # Denoiser: OpenCLIP ViT-H text tower (H^Y) + RGTrm (H^G) + SD 2.1-base UNet inflated to video. UNet
    # keys: see dysen_jax/models/unet_config.py `from_model_config` (UNet2DConditionModel layout).
    c.model = ml_collections.ConfigDict()
    c.model.vocab_size = -1         # -1: from the data's manifest (the DSG word vocabulary)
    c.model.text_encoder = "clip"   # OpenCLIP ViT-H/14 in CLIPTextModel layout, frozen (dysen_jax/models/text_encoder.py)
    c.model.text_encoder_path = ""  # converted SD 2.1-base text_encoder/ (python -m dysen_jax.convert --kind clip_text); required
    # SD 2.x conditions on OpenCLIP's penultimate hidden state; diffusers' text_encoder/ (and our conversion of an
    # original SD 2.x file) keep 23 of the 24 layers, so that state is the converted tower's last one.
    c.model.text_encoder_layer = -1
    c.model.text_width = 1024       # OpenCLIP ViT-H/14 text width (also the size of the "tiny" stand-in)
    c.model.text_layers = 23        # 24 layers, of which SD 2.x uses 23 (penultimate)
    c.model.text_heads = 16
    c.model.cross_attention_dim = 1024  # width of H^Y that SD 2.x's cross-attention (attn2) expects
    c.model.rgtrm_width = 768       # Dysen-VDM: all dimensions 768
    c.model.rgtrm_layers = 12       # L = 12
    c.model.rgtrm_heads = 8         # k = 8
    c.model.rgtrm_scan = True       # layers under nn.scan: compile time flat in L (benchmarks/rgtrm_compile.py)
    c.model.rgtrm_remat = "none"    # none | full | dots | dots_no_batch
    c.model.use_dsg = True          # False: text-only ("w/o Dysen")
    c.model.dsg_encoder = "rgtrm"   # rgtrm | gnn (a plain graph convolution net, Table 4\'s "RGTrm -> GNN")
    c.model.latent = True           # latent diffusion: the UNet works on VAE latents (dysen_jax/training/latents.py)
    c.model.in_channels = 4         # latent channels (= vae.latent_channels)
    c.model.channels = (320, 640, 1280, 1280)             # SD block_out_channels (32, 16, 8, 4 latent px)
    c.model.num_res_blocks = 2                            # SD layers_per_block
    c.model.attention_levels = (True, True, True, False)  # SD: CrossAttnDownBlock2D x3, then DownBlock2D
    c.model.heads = (5, 10, 20, 20)  # SD 2.x: heads of width 64 (diffusers' "attention_head_dim")
    c.model.transformer_layers_per_block = 1
    c.model.use_linear_projection = True  # SD 2.x proj_in/proj_out are Dense
    c.model.norm_num_groups = 32
    c.model.upcast_attention = False  # 2.1-base: False (the 768 px v-model: True)
    c.model.frame_affine = True     # eq. 11 per-frame scale/shift in every ResNet
    c.model.temporal_conv = True    # VidRD Temp-Conv after every ResNet (zero-init, residual)
    c.model.temporal_attention = True  # VidRD Temp-Attn after every spatial transformer (eq. 12 mask)
    c.model.temporal_attention_levels = ()  # () = the levels of attention_levels (ModelScope's placement)
    c.model.temporal_transformer_in = False  # ModelScope's extra temporal attention after conv_in
    c.model.temporal_norm = "frame"  # per-frame GroupNorm statistics (needed for causality)
    c.model.temporal_position = "sinusoidal"  # frame positions before the temporal attention
    c.model.temporal_causal = True  # eq. 12 lower-triangular mask
    c.model.temporal_conv_causal = ml_collections.config_dict.placeholder(bool)  # None: = temporal_causal; set apart for e.g. causal attention over symmetric convs
    c.model.pooled_conditions = False  # text (per clip) and DSG (per frame) masked means -> + timestep embedding (Imagen/SDXL-style)
    c.model.max_frames = 16         # per-frame affine (eq. 11) table size; >= data.num_frames
    c.model.dropout = 0.0
    c.model.dtype = "bfloat16"      # compute dtype; params are always float32
    c.model.unet_remat = "full"     # UNet per-layer remat: none | full | dots | dots_no_batch (full: 16-frame clips fit)

    # Stable Diffusion's KL autoencoder (dysen_jax/models/vae.py VAEConfig fields only): frozen
    # encoder; VidRD fine-tunes zero-init temporal convs in the decoder.
    c.vae = ml_collections.ConfigDict()
    c.vae.in_channels = 3
    c.vae.out_channels = 3
    c.vae.block_out_channels = (128, 256, 512, 512)  # 4 levels: 256 px -> 32 latent px (x8)
    c.vae.layers_per_block = 2
    c.vae.latent_channels = 4       # = model.in_channels
    c.vae.norm_num_groups = 32
    c.vae.scaling_factor = 0.18215  # SD 2.x latent scaling
    c.vae.temporal_decoder = True   # VidRD: temporal convs after each decoder ResNet (only they train)

    # Converted checkpoints to start from (python -m dysen_jax.convert; "" = fresh init). The text
    # tower's is model.text_encoder_path.
    c.init_from = ml_collections.ConfigDict()
    c.init_from.checkpoint = ""      # a previous stage's workdir: its newest checkpoint's EMA params (matching names)
    c.init_from.unet = ""           # stabilityai/stable-diffusion-2-1-base unet/, converted: the spatial layers
    c.init_from.vae = ""            # .../vae/, converted (or a stage-I workdir); required with model.latent

    # Diffusion: SD 2.1-base's schedule and objective.
    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.schedule = "scaled_linear"  # SD betas 0.00085 .. 0.012
    c.diffusion.num_timesteps = 1000
    c.diffusion.prediction = "epsilon"  # 2.1-base is epsilon (the 768 px 2.1 is v)
    c.diffusion.text_drop_prob = 0.1  # classifier-free guidance: P(text replaced by its null), per example
    c.diffusion.dsg_drop_prob = 0.1   # P(DSG replaced by its null), drawn independently of the text's
    c.diffusion.frame_noise_share = 0.0  # fraction of the noise variance a clip's frames share (diffusion/noise.py); 0 = i.i.d.
    c.diffusion.timestep_shift = 1.0  # training t: SD3's shift s·u/(1+(s-1)u) of u ~ U(0,1); 1 = uniform, > 1 = more noisy steps

    # Training (not in the papers: usual SD video fine-tuning values).
    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 64          # global batch
    c.train.num_steps = 100_000
    c.train.learning_rate = 5e-5
    c.train.warmup_steps = 1_000
    c.train.weight_decay = 1e-2
    c.train.grad_clip = 1.0
    c.train.ema_decay = 0.9999
    c.train.log_every = 100
    c.train.checkpoint_every = 2_500
    c.train.keep_checkpoints = 3
    c.train.sample_at_end = True
    c.train.sample_every = 0         # also sample to TensorBoard (GIF) every N steps; 0 = never
    c.train.stage = "diffusion"      # diffusion (stages II/III: the denoiser) | autoencoder (stage I, configs/vidrd_vae.py)
    c.train.trainable = ""           # regex over param paths ('unet/.../kernel'); "" = all (minus frozen towers)
    c.train.grad_accum_steps = 1     # micro-batches per step (same update, less activation memory)
    c.train.max_nonfinite_steps = 10  # stop after this many non-finite steps in a row (each one is skipped)
    c.train.peak_tflops = 0.0        # per-device peak for the logged MFU; 0 = measure a matmul at start

    # Device mesh: params/optimizer state sharded over fsdp (8 GPUs of a host, or a TPU slice's
    # chips), batch over data x fsdp; -1 = all remaining devices (the hosts).
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 8
    c.mesh.tensor = 1               # Megatron-style split of heads / MLP / conv hidden widths
    c.mesh.rules = DEFAULT_RULES    # (logical axis, mesh axis or None) pairs, dysen_jax/parallel/logical.py
    c.mesh.min_shard_size = DEFAULT_MIN_SHARD_SIZE  # arrays with fewer elements are replicated

    # [pending] VidRD long videos (dysen_jax/diffusion/long_video.py): clips of data.num_frames frames.
    c.long_video = ml_collections.ConfigDict()
    c.long_video.num_clips = 4      # clips generated in turn
    c.long_video.prompt_frames = 4  # M: the last M frames of a clip prompt the next one
    c.long_video.alpha = 4.0        # past-dependent noise sampling
    c.long_video.beta = 0.4         # denoising with staged guidance

    # Sampling: VidRD's 50 DDIM steps at guidance 10.
    c.sample = ml_collections.ConfigDict()
    c.sample.steps = 50
    c.sample.eta = 0.0
    c.sample.sampler = "ddim"        # ddim | ddpm (ancestral, = DDIM with eta 1; eta is then ignored)
    c.sample.frame_noise_share = -1.0  # sampler noise prior: -1 = diffusion.frame_noise_share (trained); more = frames share more noise
    c.sample.guidance = 10.0         # text guidance scale s_text (compositional CFG, diffusion/samplers.py)
    c.sample.dsg_guidance = 10.0     # DSG scale s_dsg given the text; = guidance: classic CFG (2 branches); 1, 1 = conditional
    c.sample.negative_prompt = ""   # text the unconditional branches see instead of the null text; "" = none
    c.sample.num_frames = 0         # video frames: 0 = one clip (data.num_frames = N), k*N = a VidRD long video of k clips
    c.sample.prompt_frames = 4      # VidRD M: clip k's last M frames prompt clip k+1 (staged guidance, eq. 8)
    c.sample.pns_alpha = 4.0        # VidRD past-dependent noise sampling alpha (eq. 7); 0 = fresh noise, inf = FNR only
    c.sample.staged_beta = 0.4      # VidRD staged guidance beta in [0, 1] (eq. 8); 0 = no copying
    c.sample.batch_size = 1         # prompts sampled together with --prompts FILE
    c.sample.prompt = "a woman puts a bottle of water on the table, then sits down and reads a book"
    c.sample.fps = 8

    # Evaluation (python -m dysen_jax.evaluate; dysen_jax/evaluate.py). FVD/FID are heavy; CLIPSIM/IS run
    # only when a local model path is given (no weights ship offline).
    c.evaluate = evaluate_config()
    return c
