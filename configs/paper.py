"""Paper config: Dysen-VDM at the size of Fei et al. (latent video diffusion, 16 frames of 256x256).

Use: --config=configs/paper.py (stage II/III training on a caption file of real videos, e.g. WebVid),
override any key with --config.train.batch_size=32 etc. Variants are the Table 4 ablations as in
configs/tiny.py (`:no_dysen`, `:no_imagination`, `:no_swc`, `:no_rl_icl`, `:gnn`) and the training stages
(`:stage2`, `:stage3`; stage I is configs/vidrd_vae.py), combinable with commas.

What the paper fixes (§5.1, §3.1, App. A): an LDM backbone whose 3D-UNet works on latents
Z_0 = E(X) (frames 256x256 -> latents 32x32x4), the text H^Y from CLIP, RGTrm with L = 12 layers,
k = 8 heads and every dimension 768, T = 1000 diffusion steps, the epsilon loss of eq. 1, D = 5
in-context demonstrations, 16 A100 GPUs. The backbone is an LDM [52] with CLIP text; we read it as
Stable Diffusion 1.x's UNet layout (320/640/1280/1280, 2 ResBlocks per level, attention at the
first three levels, 8 heads, cross-attention dim 768 = CLIP ViT-L/14) inflated with the temporal
layers of eq. 11-12 and the H^G cross-attention of eq. 6. Everything the
paper does not give (batch, learning rate, schedule details, DSG sizes) is marked "not in the
paper" with the common choice for SD-based video models.

The model keys follow `dysen_jax.models.unet_config.from_model_config` (the UNet),
`dysen_jax.models.text_encoder.build_text_encoder` (text_encoder, text_encoder_path,
text_encoder_layer) and `dysen_jax.models.vae.VAEConfig` (the `vae` section, its fields only).
model.text_encoder = "clip" needs model.text_encoder_path (a converted CLIPTextModel); with
`--config.model.text_encoder=tiny` the word-level encoder of the same width/depth stands in.
"""

import ml_collections

from dysen_jax.ablations import ABLATIONS, apply_switches
from dysen_jax.parallel.logical import DEFAULT_MIN_SHARD_SIZE, DEFAULT_RULES
from dysen_jax.metrics.settings import evaluate_config
from dysen_jax.planner.settings import planner_config




# The paper's training stages II and III (§4, "Training"; stage I is configs/vidrd_vae.py). Stage II
# pretrains the video UNet with text + DSG from steps I-II of the planner, training what is new on top
# of the image weights (temporal layers, spatial self-attention as VidRD does, the DSG branch: RGTrm,
# DSG cross-attention, per-frame affine, nulls); stage III updates the whole denoiser with the full
# Dysen DSGs (step III imagination) from stage II's checkpoint: add
# --config.init_from.checkpoint=STAGE2_WORKDIR. The text encoder and the VAE stay frozen in both.
STAGE2_TRAINABLE = (r"^(rgtrm|gnn|null_dsg|null_text)/|temp_|transformer_in|frame_affine|/attn1/|/attn_dsg/|"
                    r"/norm_dsg/")
STAGES = {
    "stage2": {"train.trainable": STAGE2_TRAINABLE, "planner.imagination": False},
    "stage3": {"train.trainable": "", "planner.imagination": True},
}


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """`variant`: comma-separated names among the ABLATIONS and STAGES, e.g. 'stage2,no_rl_icl'."""
    c = base_config()
    for v in filter(None, (v.strip() for v in variant.split(","))):
        switches = {**ABLATIONS, **STAGES}
        if v not in switches:
            raise ValueError(f"configs/paper.py has no variant {v!r}: use '' or any of "
                             f"{', '.join(switches)} (comma-separated)")
        apply_switches(c, switches[v])
    return c


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Real videos with captions (dysen_jax/data/sources.py): WebVid for stages I-II, then UCF-101 /
    # MSR-VTT / ActivityNet for fine-tuning. Records hold RGB frames; the VAE encodes them in the
    # train step (or once, in preprocess, with data.precompute_latents=True), so the model sees
    # latents [F, resolution/8, resolution/8, 4].
    c.data = ml_collections.ConfigDict()
    c.data.dataset = "captions"
    c.data.captions_file = ""       # .jsonl {"caption","video"} / .csv caption,video (required)
    c.data.num_train = 0            # used by the synthetic dataset only
    c.data.num_frames = 16          # F (paper: 16-frame clips)
    c.data.resolution = 256         # H = W in pixels; latents are resolution / 8 (the VAE) = 32
    c.data.max_actions = 3          # synthetic dataset only
    c.data.num_shards = 1024        # TFRecord shards (>= number of hosts; many, for shuffling)
    c.data.shuffle_buffer = 10_000
    c.data.data_dir = ""            # TFRecord dir; "" = <workdir>/data
    c.data.plan_batch_size = 64     # captions planned per batch (the LLM's requests of a batch run concurrently)
    c.data.precompute_latents = False  # True: preprocess stores the VAE posterior (mean, logvar) per clip; training skips the encoder
    c.data.latent_batch_size = 4    # clips per VAE encoder call in preprocess (precompute_latents)
    c.data.input_streams = 1        # the global batch is S tf.data streams: S = a multiple of the process count; data order depends on S only
    c.data.frame_stride = 4         # every 4th frame (paper: 16 keyframes from a 2 s clip); 0 = spread over the video
    c.data.random_start = True      # the clip starts at a random frame (else the centred window)
    c.data.crop = "center"          # square cut along the longer side, then resized (paper: centre crop) | random
    c.data.image_captions_file = ""  # .jsonl {"caption","image"} / .csv caption,image: images that become pseudo-videos
    c.data.pseudo_video_ratio = 0.0  # fraction of items that are pseudo-videos (VidRD §4.2 zoom + pan); 1 = images only
    c.data.zoom_range = (1.0, 1.5)  # pseudo-videos: zoom of the first / last frame, each uniform in (min, max); 1 = whole
    c.data.pan = 0.2                # pseudo-videos: largest move of the crop centre per axis, / the shorter side

    # Planner (steps I-III with an LLM, D = 5 RL-chosen demonstrations): dysen_jax/planner/settings.py.
    c.planner = planner_config()
    c.planner.backend = "openai"    # the paper plans with ChatGPT; any OpenAI-compatible server works
    c.planner.selection = "rl"      # RL-based ICL (needs planner.selector_path from train-selector)

    # DSG tensor sizes (dysen_jax/dsg/tensorize.py). Not in the paper: one scene graph per frame at
    # most, and room for step III's enrichment (up to planner.max_scene_items triplets per scene).
    c.dsg = ml_collections.ConfigDict()
    c.dsg.max_steps = 16            # M distinct scene graphs (<= F)
    c.dsg.max_nodes = 64            # N node slots over the whole DSG (objects + relations + attributes)
    c.dsg.max_label_words = 4       # W words per node label
    c.dsg.num_hash_buckets = 1024   # ids for unseen words (open vocabulary)

    # Text tokens: CLIP's BPE context length.
    c.text = ml_collections.ConfigDict()
    c.text.max_len = 77

    # Denoiser: CLIP text tower (H^Y) + RGTrm (H^G) + 3D-UNet on latents. UNet keys: see
    # dysen_jax/models/unet_config.py `from_model_config` (SD 1.x UNet2DConditionModel layout).
    c.model = ml_collections.ConfigDict()
    c.model.vocab_size = -1         # -1: from the data's manifest (the DSG word vocabulary)
    c.model.text_encoder = "clip"   # CLIP ViT-L/14 text tower, frozen (dysen_jax/models/text_encoder.py)
    c.model.text_encoder_path = ""  # converted CLIPTextModel (python -m dysen_jax.convert --kind clip_text); required
    c.model.text_encoder_layer = -1  # CLIP's last hidden state (SD 1.x)
    c.model.text_width = 768        # CLIP ViT-L/14 text width (also the size of the "tiny" stand-in)
    c.model.text_layers = 12
    c.model.text_heads = 12
    c.model.cross_attention_dim = 768  # width of H^Y that SD's cross-attention (attn2) expects
    c.model.rgtrm_width = 768       # paper: all dimensions 768
    c.model.rgtrm_layers = 12       # paper: L = 12
    c.model.rgtrm_heads = 8         # paper: k = 8
    c.model.rgtrm_scan = True       # layers under nn.scan: compile time flat in L (benchmarks/rgtrm_compile.py)
    c.model.rgtrm_remat = "none"    # none | full | dots | dots_no_batch (the RGTrm is small next to the UNet)
    c.model.use_dsg = True          # False: text-only ("w/o Dysen" = Latent-VDM)
    c.model.dsg_encoder = "rgtrm"   # rgtrm | gnn (a plain graph convolution net, Table 4\'s "RGTrm -> GNN")
    c.model.latent = True           # latent diffusion: the UNet works on VAE latents (dysen_jax/training/latents.py)
    c.model.in_channels = 4         # latent channels (= vae.latent_channels)
    c.model.channels = (320, 640, 1280, 1280)             # SD block_out_channels (32, 16, 8, 4 latent px)
    c.model.num_res_blocks = 2                            # SD layers_per_block
    c.model.attention_levels = (True, True, True, False)  # SD: CrossAttnDownBlock2D x3, then DownBlock2D
    c.model.heads = 8               # SD 1.x: 8 heads at every level (an int, or one count per level)
    c.model.transformer_layers_per_block = 1
    c.model.use_linear_projection = False  # SD 1.x proj_in/proj_out are 1x1 convs (same map as our Dense)
    c.model.norm_num_groups = 32
    c.model.upcast_attention = False
    c.model.frame_affine = True     # eq. 11 per-frame scale/shift in every ResNet
    c.model.temporal_conv = True    # temporal conv after every ResNet (zero-init, residual)
    c.model.temporal_attention = True  # temporal attention after every spatial transformer (eq. 12)
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

    # Stable Diffusion's KL autoencoder, frozen (dysen_jax/models/vae.py VAEConfig fields only).
    c.vae = ml_collections.ConfigDict()
    c.vae.in_channels = 3
    c.vae.out_channels = 3
    c.vae.block_out_channels = (128, 256, 512, 512)  # 4 levels: 256 px -> 32 latent px (x8)
    c.vae.layers_per_block = 2
    c.vae.latent_channels = 4       # = model.in_channels
    c.vae.norm_num_groups = 32
    c.vae.scaling_factor = 0.18215  # SD 1.x / 2.x latent scaling
    c.vae.temporal_decoder = False  # True: VidRD's zero-init temporal convs after each decoder ResNet

    # Converted checkpoints to start from (python -m dysen_jax.convert; "" = fresh init). The text
    # tower's is model.text_encoder_path.
    c.init_from = ml_collections.ConfigDict()
    c.init_from.checkpoint = ""      # a previous stage's workdir: its newest checkpoint's EMA params (matching names)
    c.init_from.unet = ""           # SD 1.x UNet2DConditionModel, converted: the spatial layers
    c.init_from.vae = ""            # SD AutoencoderKL, converted (or a stage-I workdir); required with model.latent

    # Diffusion: LDM's schedule and eq. 1's epsilon loss, T = 1000.
    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.schedule = "scaled_linear"  # SD betas 0.00085 .. 0.012
    c.diffusion.num_timesteps = 1000
    c.diffusion.prediction = "epsilon"
    c.diffusion.text_drop_prob = 0.1  # classifier-free guidance: P(text replaced by its null), per example
    c.diffusion.dsg_drop_prob = 0.1   # P(DSG replaced by its null), drawn independently of the text's
    c.diffusion.frame_noise_share = 0.0  # fraction of the noise variance a clip's frames share (diffusion/noise.py); 0 = i.i.d.
    c.diffusion.timestep_shift = 1.0  # training t: SD3's shift s·u/(1+(s-1)u) of u ~ U(0,1); 1 = uniform, > 1 = more noisy steps

    # Training (not in the paper beyond "16 A100s": usual SD video fine-tuning values).
    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 64          # global batch: 4 clips per GPU on 16 GPUs
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

    # Sampling: DDIM + classifier-free guidance (VidRD's 50 steps; guidance is not in the paper).
    c.sample = ml_collections.ConfigDict()
    c.sample.steps = 50
    c.sample.eta = 0.0
    c.sample.sampler = "ddim"        # ddim | ddpm (ancestral, = DDIM with eta 1; eta is then ignored)
    c.sample.frame_noise_share = -1.0  # sampler noise prior: -1 = diffusion.frame_noise_share (trained); more = frames share more noise
    c.sample.guidance = 7.5         # text guidance scale s_text (compositional CFG, diffusion/samplers.py)
    c.sample.dsg_guidance = 7.5     # DSG scale s_dsg given the text; = guidance: classic CFG (2 branches); 1, 1 = conditional
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
