"""What a fine-tuning run is told: the recipe (:class:`FinetuneRecipe`) and the run's settings
(:class:`FinetuneSettings`). Plain data, importable without Keras (the command line reads the
defaults from here)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from eegdino_tf.errors import ConfigError

#: The default warm-up (LaBraM's), in epochs ...
WARMUP_EPOCHS = 5.0
#: ... but at most this share of the run's steps.
WARMUP_SHARE = 0.1


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneRecipe:
    """Optimizer, schedule and loss of a fine-tuning run (defaults: see the module doc).

    Attributes:
        learning_rate: peak learning rate of the head.
        layer_decay: learning-rate factor per level down the encoder (1.0: no decay).
        weight_decay: decoupled AdamW weight decay (not on norms, biases, the global token).
        warmup_epochs: linear warm-up from 0 to ``learning_rate``, then cosine decay; ``None``:
            :data:`WARMUP_EPOCHS`, but at most :data:`WARMUP_SHARE` of the run.
        min_learning_rate: where the cosine decay ends.
        label_smoothing: cross-entropy label smoothing.
        freeze_encoder_epochs: train only the head for this many epochs, then everything;
            ``None`` keeps the encoder frozen throughout (a linear probe of the head).
        beta_1, beta_2, epsilon: Adam's (epsilon as PyTorch adds it, after bias correction).
    """

    learning_rate: float = 5e-4
    layer_decay: float = 0.65
    weight_decay: float = 0.05
    warmup_epochs: float | None = None
    min_learning_rate: float = 1e-6
    label_smoothing: float = 0.1
    freeze_encoder_epochs: int | None = 0
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8

    def __post_init__(self) -> None:
        def check(name: str, ok: Any, expected: str) -> None:
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and ok(value)):
                raise ConfigError(f"{name}={value!r} must be {expected}")

        check("min_learning_rate", lambda v: 0 <= v < math.inf, ">= 0")
        check(
            "learning_rate",
            lambda v: self.min_learning_rate < v < math.inf,
            f"above min_learning_rate={self.min_learning_rate!r}",
        )
        check("layer_decay", lambda v: 0 < v <= 1, "in (0, 1]")
        check("weight_decay", lambda v: 0 <= v < math.inf, ">= 0")
        check("label_smoothing", lambda v: 0 <= v < 1, "in [0, 1)")
        if self.warmup_epochs is not None:
            check("warmup_epochs", lambda v: 0 <= v < math.inf, ">= 0 (or None)")
        if self.freeze_encoder_epochs is not None:
            check("freeze_encoder_epochs", lambda v: int(v) == v >= 0, "a whole number >= 0")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneSettings:
    """How :func:`finetune_recordings` trains (everything but the data, weights and output).

    Attributes:
        epochs: at most this many epochs.
        batch_size: windows per batch.
        precision: the encoder's compute precision (``load_encoder``'s).
        split_by: hold out whole ``"file"``s or whole ``"subject"``s.
        val_fraction: the share of files (or subjects) held out.
        patience: stop after this many epochs without a better held-out balanced accuracy.
        recipe: optimizer, schedule and loss (default :class:`FinetuneRecipe`'s).
        seed: the split's and training's seed.
        channels, window, stride: how recordings become windows (``open_recording``'s).
        verbose: Keras' (0, 1 or 2).
        model_options: to :func:`~eegdino_tf.load_encoder` (``norm_groups``, ``dropout``,
            ``drop_path``, ...; ``head_dropout`` to the head).
    """

    epochs: int = 30
    batch_size: int = 16
    precision: str = "float32"
    split_by: str = "file"
    val_fraction: float = 0.2
    patience: int = 5
    recipe: FinetuneRecipe = dataclasses.field(default_factory=FinetuneRecipe)
    seed: int = 0
    channels: Sequence[str] | str | None = None
    window: float = 10.0
    stride: float | None = None
    verbose: Any = 2
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, settings: FinetuneSettings | None = None, **options: Any) -> FinetuneSettings:
        """``settings`` with ``options`` applied: a field's name sets that field, any other
        name is a model option."""
        settings = settings or cls()
        fields = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in options.items() if k in fields}
        extra = {k: v for k, v in options.items() if k not in fields}
        if given.get("recipe", ...) is None:
            given["recipe"] = FinetuneRecipe()
        if extra:
            given["model_options"] = {**given.get("model_options", settings.model_options), **extra}
        return dataclasses.replace(settings, **given)

    def check(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a whole number >= 1")
