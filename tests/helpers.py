"""Shared test fixtures' building blocks: a tiny config and tiny preprocessed data."""

from __future__ import annotations

import ml_collections

from configs import tiny


def tiny_test_config(**overrides) -> ml_collections.ConfigDict:
    """configs/tiny.py shrunk so a train step compiles and runs in seconds."""
    c = tiny.get_config()
    c.data.num_train = 16
    c.data.num_shards = 2
    c.data.resolution = 16
    c.data.num_frames = 8
    c.data.shuffle_buffer = 16
    c.model.text_width = 16
    c.model.text_layers = 1
    c.model.text_heads = 2
    c.model.rgtrm_width = 16
    c.model.rgtrm_layers = 1
    c.model.rgtrm_heads = 2
    c.model.channels = (8, 16)
    c.model.attention_levels = (False, True)
    c.model.heads = 2
    c.train.batch_size = 8
    c.train.num_steps = 3
    c.train.warmup_steps = 1
    c.train.log_every = 1
    c.train.checkpoint_every = 1
    c.train.sample_at_end = False
    c.sample.steps = 2
    for key, value in overrides.items():
        section, name = key.split(".")
        c[section][name] = value
    return c
