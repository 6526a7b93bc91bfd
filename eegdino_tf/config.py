"""Model configurations: the three released sizes and a dataclass for any other shape."""

from __future__ import annotations

import dataclasses
from typing import Any

#: Samples per patch: 1 s at the model's 200 Hz.
PATCH_SIZE = 200
#: Sampling rate the model was trained on.
SAMPLING_RATE = 200.0
#: Channel-embedding slots: inputs may have 1..MAX_CHANNELS channels.
MAX_CHANNELS = 19
#: Positions the temporal conv stack leaves per patch (so ``embed_dim = conv_channels[2] * 8``).
CONV_POSITIONS = 8


@dataclasses.dataclass(frozen=True)
class EEGDinoConfig:
    """Shape of an EEG-DINO encoder (see ``ARCHITECTURE.md``, "Sizes").

    Attributes:
        embed_dim: token width ``D``; always ``conv_channels[2] * 8``.
        depth: number of transformer blocks.
        num_heads: attention heads (8 for every released size).
        mlp_dim: hidden width of each block's MLP.
        conv_channels: output channels of the three temporal convolutions.
        norm_groups: GroupNorm groups in the temporal conv stack.
        input_scale: factor applied to the raw-microvolt input (the model was trained on
            microvolts / 100).
        name: preset name, or ``"custom"``.
    """

    embed_dim: int
    depth: int
    num_heads: int = 8
    mlp_dim: int = 512
    conv_channels: tuple[int, int, int] = (25, 25, 25)
    norm_groups: int = 5
    input_scale: float = 0.01
    name: str = "custom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "conv_channels", tuple(int(c) for c in self.conv_channels))
        problems = []
        if len(self.conv_channels) != 3:
            problems.append(f"conv_channels needs 3 widths, got {self.conv_channels}")
        elif self.embed_dim != self.conv_channels[2] * CONV_POSITIONS:
            problems.append(
                f"embed_dim ({self.embed_dim}) must equal conv_channels[2] * {CONV_POSITIONS}"
                f" ({self.conv_channels[2] * CONV_POSITIONS})"
            )
        if self.num_heads < 1 or self.embed_dim % self.num_heads:
            problems.append(
                f"num_heads ({self.num_heads}) must divide embed_dim ({self.embed_dim})"
            )
        if any(c % self.norm_groups for c in self.conv_channels):
            problems.append(
                f"norm_groups ({self.norm_groups}) must divide every conv width "
                f"{self.conv_channels}"
            )
        if self.depth < 1:
            problems.append(f"depth must be >= 1, got {self.depth}")
        if problems:
            raise ValueError("invalid EEG-DINO config: " + "; ".join(problems))
        if self.name == "custom":
            shape = self._shape()
            name = next((n for n, p in PRESETS.items() if p._shape() == shape), "custom")
            object.__setattr__(self, "name", name)

    def _shape(self) -> tuple:
        """The fields that fix the architecture and the weight shapes."""
        return (
            self.embed_dim,
            self.depth,
            self.num_heads,
            self.mlp_dim,
            self.conv_channels,
            self.norm_groups,
        )

    def replace(self, **overrides: Any) -> EEGDinoConfig:
        """A copy with some fields changed (unknown names are an error)."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(
                f"unknown config field(s) {sorted(unknown)}; known: "
                f"{[f.name for f in dataclasses.fields(self)]}"
            )
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["conv_channels"] = list(self.conv_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EEGDinoConfig:
        return cls(**data)


PRESETS: dict[str, EEGDinoConfig] = {
    "small": EEGDinoConfig(200, 12, 8, 512, (25, 25, 25), 5, name="small"),
    "medium": EEGDinoConfig(512, 16, 8, 1024, (64, 128, 64), 8, name="medium"),
    "large": EEGDinoConfig(1024, 24, 8, 2048, (128, 256, 128), 16, name="large"),
}


def get_config(config: EEGDinoConfig | str, **overrides: Any) -> EEGDinoConfig:
    """Resolve a preset name or a config, then apply ``overrides`` (e.g. ``num_heads=16``)."""
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown preset {config!r}; choose one of {sorted(PRESETS)}")
        config = PRESETS[config]
    return config.replace(**overrides) if overrides else config


def size_name(embed_dim: int) -> str:
    """The released size with this width, or ``"custom"``."""
    return next((n for n, c in PRESETS.items() if c.embed_dim == embed_dim), "custom")
