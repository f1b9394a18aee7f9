"""PyTorch (diffusers / transformers safetensors) -> Flax weight converters; see common.py."""
