"""The reference paper's U-Net, in Keras."""
from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers


@dataclass(frozen=True)
class UNetConfig:
    """Architecture hyper-parameters. The defaults reproduce the paper (7,779,385 parameters)."""

    base_filters: int = 8      # filters of the first level, doubled at every level down
    depth: int = 6             # number of 2x2 max-pool steps in the contracting path
    input_size: int = 256      # square input side; must be a multiple of 2**depth
    channels: int = 3

    @property
    def size_multiple(self) -> int:
        return 2 ** self.depth

    def __post_init__(self) -> None:
        if self.input_size % self.size_multiple:
            raise ValueError(f"input_size {self.input_size} is not a multiple of 2**depth = {self.size_multiple}")


def _double_conv(x, filters: int, name: str):
    x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv1")(x)
    return layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv2")(x)


def build_unet(config: UNetConfig = UNetConfig(), dynamic_size: bool = False) -> keras.Model:
    """Contracting path (two 3x3 'same' ReLU convs + 2x2 max-pool per level), bottleneck,
    expanding path (2x2 stride-2 transposed conv, concat with the skip, two 3x3 convs),
    1x1 sigmoid head giving the foreground probability.

    ``dynamic_size`` leaves H and W unspecified (the net is fully convolutional).
    """
    side = None if dynamic_size else config.input_size
    inputs = keras.Input((side, side, config.channels), name="image")
    x, skips = inputs, []
    for level in range(config.depth):
        x = _double_conv(x, config.base_filters * 2 ** level, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    x = _double_conv(x, config.base_filters * 2 ** config.depth, "bottleneck")
    for level in reversed(range(config.depth)):
        filters = config.base_filters * 2 ** level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"up{level}_tconv")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        x = _double_conv(x, filters, f"up{level}")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="probability")(x)
    return keras.Model(inputs, outputs, name="unet")
