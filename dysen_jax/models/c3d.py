"""C3D (Tran et al. 2015) in Flax: the video classifier behind the video Inception Score.

The standard layout (conv1, conv2, conv3a/b, conv4a/b, conv5a/b: 3x3x3 convs with padding 1 and
ReLU; pool1 1x2x2, pool2-4 2x2x2, pool5 2x2x2 with spatial padding 1; fc6, fc7 with ReLU; fc8 ->
class logits) on 16 x 112 x 112 clips, as the PyTorch ports (c3d-pytorch) define it. Widths and
the class count come from the checkpoint (`C3DConfig.from_state_dict_shapes`), so narrower test
models use the same code. Inputs are NDHWC; before fc6 the features are flattened in PyTorch's
(C, T, H, W) order so converted fc6 weights apply unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

CONV_NAMES = ("conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b")
POOL_AFTER = {"conv1": (1, 2, 2), "conv2": (2, 2, 2), "conv3b": (2, 2, 2), "conv4b": (2, 2, 2), "conv5b": (2, 2, 2)}
CLIP_FRAMES, CLIP_SIZE = 16, 112


@dataclasses.dataclass(frozen=True)
class C3DConfig:
    """Conv widths (8, in CONV_NAMES order), fc6/fc7 widths and the number of classes (defaults: standard)."""

    channels: tuple[int, ...] = (64, 128, 256, 256, 512, 512, 512, 512)
    fc_widths: tuple[int, int] = (4096, 4096)
    num_classes: int = 101

    @classmethod
    def from_state_dict_shapes(cls, shapes: Mapping[str, Sequence[int]]) -> "C3DConfig":
        """From torch tensor shapes {"conv1.weight": (64, 3, 3, 3, 3), ..., "fc8.weight": (101, 4096)}."""
        missing = [f"{n}.weight" for n in CONV_NAMES + ("fc6", "fc7", "fc8") if f"{n}.weight" not in shapes]
        if missing:
            raise ValueError(f"not a C3D state_dict: missing {missing} (names of the standard C3D: conv1 ... fc8)")
        return cls(tuple(int(shapes[f"{n}.weight"][0]) for n in CONV_NAMES),
                   (int(shapes["fc6.weight"][0]), int(shapes["fc7.weight"][0])), int(shapes["fc8.weight"][0]))


class C3D(nn.Module):
    """clips [B, 16, 112, 112, 3] (float, normalised by the caller) -> class logits [B, num_classes]."""

    config: C3DConfig = C3DConfig()

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        for name, width in zip(CONV_NAMES, self.config.channels):
            x = nn.relu(nn.Conv(width, (3, 3, 3), padding=1, name=name)(x))
            if name in POOL_AFTER:
                pad = ((0, 0), (1, 1), (1, 1)) if name == "conv5b" else "VALID"
                x = nn.max_pool(x, POOL_AFTER[name], strides=POOL_AFTER[name], padding=pad)
        x = jnp.transpose(x, (0, 4, 1, 2, 3)).reshape(x.shape[0], -1)   # torch's (C, T, H, W) flattening
        for name, width in zip(("fc6", "fc7"), self.config.fc_widths):
            x = nn.relu(nn.Dense(width, name=name)(x))     # dropout 0.5 in training; evaluation only here
        return nn.Dense(self.config.num_classes, name="fc8")(x)
