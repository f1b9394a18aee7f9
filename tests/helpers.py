"""Shared test building blocks."""

from __future__ import annotations

import ml_collections

from configs import tiny


def tiny_test_config(**overrides) -> ml_collections.ConfigDict:
    """configs/tiny.py:smoke (the same programs as the CLI tests, so compiles hit the XLA cache)."""
    c = tiny.get_config("smoke")
    c.train.sample_at_end = False
    for key, value in overrides.items():
        section, name = key.split(".")
        c[section][name] = value
    return c
