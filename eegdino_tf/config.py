"""The architecture's numbers in one place: patch geometry, the temporal conv stack, the three
released sizes, and a dataclass for any other shape (``docs/architecture.md``, "Sizes")."""

from __future__ import annotations

import dataclasses
import math
import numbers
import sys
from collections.abc import Iterable
from typing import Any

from eegdino_tf.errors import ConfigError

#: Samples per patch: 1 s at the model's 200 Hz.
PATCH_SIZE = 200
#: Sampling rate the model was trained on.
SAMPLING_RATE = 200.0
#: Channel-embedding slots: inputs may have 1..MAX_CHANNELS channels.
MAX_CHANNELS = 19
#: Compute precisions a model can run in (``"auto"`` picks one of them per machine).
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
#: What ``predict`` runs the model with: ``auto`` (the default: LiteRT where a conversion is at
#: hand or pays for itself, else Keras; ``EEGModel.choose_runtime``), Keras (its compiled
#: ``tf.function``, XLA or not), ``xla`` (that function under XLA) or LiteRT
#: (:mod:`eegdino_tf.litert`: float32, on the CPU).
RUNTIMES = ("auto", "keras", "xla", "litert")
#: Frequency bins of a patch's spectrum (``|rfft|`` of 200 samples).
SPECTRAL_BINS = PATCH_SIZE // 2 + 1
#: Taps of the depthwise time encoding along the patch axis.
TIME_KERNEL = 5

#: Sane maxima of a model's shape, so that a weight file cannot ask for an absurd model:
#: transformer blocks (the large size has 24),
MAX_DEPTH = 256
#: any width (``embed_dim``, ``mlp_dim``, each conv width, ``num_heads``, ``norm_groups``;
#: the large size's widest is its MLP, 2048),
MAX_WIDTH = 16384
#: and classes of a classification head.
MAX_CLASSES = 100_000


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """Kernel, stride and zero padding of one 1-D convolution inside a patch."""

    kernel: int
    stride: int
    padding: int

    def out_length(self, length: int) -> int:
        """Output positions for ``length`` input positions."""
        return (length + 2 * self.padding - self.kernel) // self.stride + 1


#: The temporal conv stack, per patch: conv1 maps the 200 samples to 8 positions, conv2 and
#: conv3 keep them. Each conv is followed by GroupNorm and GELU (the widths come from the
#: config; braindecode calls this ``channels_kernel_stride_padding_norm``).
TEMPORAL_CONVS = (
    ConvGeometry(kernel=49, stride=25, padding=24),
    ConvGeometry(kernel=3, stride=1, padding=1),
    ConvGeometry(kernel=3, stride=1, padding=1),
)


def conv_lengths() -> tuple[int, ...]:
    """Positions entering each conv of :data:`TEMPORAL_CONVS`, then leaving the last one."""
    lengths = [PATCH_SIZE]
    for conv in TEMPORAL_CONVS:
        lengths.append(conv.out_length(lengths[-1]))
    return tuple(lengths)


#: Positions the temporal conv stack leaves per patch (so ``embed_dim = conv_channels[2] * 8``).
CONV_POSITIONS = conv_lengths()[-1]


@dataclasses.dataclass(frozen=True)
class EEGDinoConfig:
    """Shape of an EEG-DINO encoder (``docs/architecture.md``, "Sizes").

    Attributes:
        embed_dim: token width ``D``; always ``conv_channels[2] * 8``.
        depth: number of transformer blocks.
        num_heads: attention heads (8 for every released size).
        mlp_dim: hidden width of each block's MLP.
        conv_channels: output channels of the three temporal convolutions.
        norm_groups: GroupNorm groups in the temporal conv stack.
        input_scale: factor applied to the raw-microvolt input (the model was trained on
            microvolts / 100).

    ``name`` is the released size with exactly this shape (every field above but
    ``input_scale``), or ``"custom"``.
    """

    embed_dim: int
    depth: int
    num_heads: int = 8
    mlp_dim: int = 512
    conv_channels: tuple[int, int, int] = (25, 25, 25)
    norm_groups: int = 5
    input_scale: float = 0.01

    def __post_init__(self) -> None:
        problems = [
            f"{name}={getattr(self, name)!r} must be an integer in 1..{limit}"
            for name, limit in _DIMENSIONS
            if _dimension(getattr(self, name), limit) is None
        ]
        widths = _widths(self.conv_channels)
        convs = [_dimension(c, MAX_WIDTH) for c in widths]
        if len(convs) != 3 or None in convs:
            problems.append(
                f"conv_channels={list(widths) or self.conv_channels!r} must be 3 integers "
                f"in 1..{MAX_WIDTH}"
            )
        if not isinstance(self.input_scale, numbers.Real) or not math.isfinite(self.input_scale):
            problems.append(f"input_scale={self.input_scale!r} must be a finite number")
        if problems:
            raise ConfigError("invalid EEG-DINO config: " + "; ".join(problems))
        for name, _ in _DIMENSIONS:
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "conv_channels", tuple(int(c) for c in convs))
        if self.embed_dim != self.conv_channels[2] * CONV_POSITIONS:
            problems.append(
                f"embed_dim={self.embed_dim} must equal conv_channels[2] * {CONV_POSITIONS}"
                f" ({self.conv_channels[2] * CONV_POSITIONS})"
            )
        if self.embed_dim % self.num_heads:
            problems.append(f"num_heads={self.num_heads} must divide embed_dim={self.embed_dim}")
        if any(c % self.norm_groups for c in self.conv_channels):
            problems.append(
                f"norm_groups={self.norm_groups} must divide every conv width "
                f"{list(self.conv_channels)} (one of {divisors(self.conv_channels)})"
            )
        if problems:
            raise ConfigError("invalid EEG-DINO config: " + "; ".join(problems))

    @property
    def name(self) -> str:
        """The released size with this exact shape, or ``"custom"``."""
        shape = self._shape()
        return next((n for n, p in PRESETS.items() if p._shape() == shape), "custom")

    @property
    def conv_blocks(self) -> tuple[tuple[int, ConvGeometry], ...]:
        """``(width, geometry)`` of each temporal conv, in order."""
        return tuple(zip(self.conv_channels, TEMPORAL_CONVS, strict=True))

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
            raise ConfigError(
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
        """The config :meth:`to_dict` wrote: every field, no other key (else a ConfigError)."""
        names = [f.name for f in dataclasses.fields(cls)]
        if set(data) != set(names):
            raise ConfigError(
                f"a config holds exactly the fields {names}; unknown "
                f"{sorted(set(data) - set(names))}, missing {sorted(set(names) - set(data))}"
            )
        return cls(**data)


#: The integer fields of :class:`EEGDinoConfig` besides ``conv_channels``, with their maxima.
_DIMENSIONS = (
    ("embed_dim", MAX_WIDTH),
    ("depth", MAX_DEPTH),
    ("num_heads", MAX_WIDTH),
    ("mlp_dim", MAX_WIDTH),
    ("norm_groups", MAX_WIDTH),
)


def _dimension(value: Any, limit: int) -> int | None:
    """``value`` as an int if it is an integer (not a bool) in ``1..limit``, else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value) if 1 <= value <= limit else None


def _widths(value: Any) -> tuple:
    """``value``'s items if it is a sequence of widths (not a string), else ``()``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return ()
    return tuple(value)


def class_count(num_classes: Any) -> int:
    """``num_classes`` as an int, if it is a class count in ``1..MAX_CLASSES``."""
    count = _dimension(num_classes, MAX_CLASSES)
    if count is None:
        raise ConfigError(f"num_classes={num_classes!r} must be an integer in 1..{MAX_CLASSES}")
    return count


def batch_count(batch_size: Any) -> int:
    """``batch_size`` as an int, if it is a positive integer (not a bool)."""
    count = _dimension(batch_size, sys.maxsize)
    if count is None:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    return count


def divisors(widths: tuple[int, ...]) -> list[int]:
    """The group counts GroupNorm allows for these conv widths: the divisors of all of them."""
    common = math.gcd(*widths)
    return [g for g in range(1, common + 1) if common % g == 0]


PRESETS: dict[str, EEGDinoConfig] = {
    "small": EEGDinoConfig(
        embed_dim=200,
        depth=12,
        num_heads=8,
        mlp_dim=512,
        conv_channels=(25, 25, 25),
        norm_groups=5,
    ),
    "medium": EEGDinoConfig(
        embed_dim=512,
        depth=16,
        num_heads=8,
        mlp_dim=1024,
        conv_channels=(64, 128, 64),
        norm_groups=8,
    ),
    "large": EEGDinoConfig(
        embed_dim=1024,
        depth=24,
        num_heads=8,
        mlp_dim=2048,
        conv_channels=(128, 256, 128),
        norm_groups=16,
    ),
}


def get_config(config: EEGDinoConfig | str, **overrides: Any) -> EEGDinoConfig:
    """Resolve a preset name or a config, then apply ``overrides`` (e.g. ``num_heads=16``)."""
    if isinstance(config, str):
        if config not in PRESETS:
            raise ConfigError(f"unknown preset {config!r}; choose one of {sorted(PRESETS)}")
        config = PRESETS[config]
    return config.replace(**overrides) if overrides else config


def preset_norm_groups(embed_dim: int, conv_channels: tuple[int, ...]) -> int | None:
    """The GroupNorm group count of the released size with this width and these conv widths
    (a weight file does not hold it), or None: then nobody knows it, and it must be given."""
    shape = (embed_dim, tuple(conv_channels))
    return next(
        (c.norm_groups for c in PRESETS.values() if (c.embed_dim, c.conv_channels) == shape),
        None,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """How a model runs, as opposed to its shape: the keyword options of every builder and
    loader (``build_encoder``, ``build_classifier``, ``load_encoder``, ``load_classifier``).

    Attributes:
        precision: ``"float32"``, ``"mixed_float16"``, ``"mixed_bfloat16"``, or ``"auto"``
            (the fastest that keeps the accuracy bounds on this machine).
        partial_patch: what to do with samples past the last whole 1 s patch: ``"error"``,
            ``"pad"`` (zero-pad to a whole patch) or ``"crop"`` (drop them).
        check_finite: reject NaN / inf input with an :class:`~eegdino_tf.InputError`.
        check_weights: when loading, reject weights with NaN / inf values, or float64 values
            beyond float32's range, with a :class:`~eegdino_tf.WeightsError` naming the key
            (the loaders always refuse non-floating weights and wrong shapes).
        dropout: dropout rate in the encoder, in training only (the reference's
            ``drop_prob``: after the spectral projection, on the attention weights, after the
            attention projection and after the MLP).
        drop_path: stochastic-depth rate on both residual branches of every block.
        head_dropout: dropout after the classification head's two hidden layers.

    The defaults are the reference's (braindecode ``EEGDINO``); none of them acts in
    ``predict``, evaluation or exports.
    """

    precision: str = "float32"
    partial_patch: str = "error"
    check_finite: bool = True
    check_weights: bool = True
    dropout: float = 0.1
    drop_path: float = 0.1
    head_dropout: tuple[float, float] = (0.5, 0.3)

    def __post_init__(self) -> None:
        rates = {"dropout": self.dropout, "drop_path": self.drop_path}
        if len(tuple(self.head_dropout)) != 2:
            raise ConfigError(f"head_dropout needs 2 rates, got {self.head_dropout!r}")
        object.__setattr__(self, "head_dropout", tuple(float(r) for r in self.head_dropout))
        rates.update({f"head_dropout[{i}]": r for i, r in enumerate(self.head_dropout)})
        bad = [f"{name}={rate!r}" for name, rate in rates.items() if not 0.0 <= rate < 1.0]
        if bad:
            raise ConfigError(f"dropout rates must be in [0, 1): {', '.join(bad)}")

    @classmethod
    def split(cls, keywords: dict[str, Any]) -> tuple[ModelOptions, dict[str, Any]]:
        """``keywords`` as (these options, the remaining config-field overrides)."""
        names = {f.name for f in dataclasses.fields(cls)}
        options = cls(**{k: v for k, v in keywords.items() if k in names})
        return options, {k: v for k, v in keywords.items() if k not in names}

    def as_kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def encoder_kwargs(self) -> dict[str, Any]:
        """The options an :class:`~eegdino_tf.EEGDinoEncoder` takes (all but the head's and
        the loaders')."""
        return {
            k: v for k, v in self.as_kwargs().items() if k not in ("head_dropout", "check_weights")
        }
