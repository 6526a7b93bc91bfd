"""EEG-DINO as Keras models: the encoder backbone, the classifier, and their loaders.

How the data moves through :class:`EEGDinoEncoder` (B batch, C channels, T samples at 200 Hz,
P = T / 200 one-second patches, D width):

1. ``eeg`` ``[B, C, T]`` raw microvolts -> :class:`EEGInput` checks the shape and values and
   multiplies by ``input_scale`` (0.01: the model was trained on microvolts / 100).
2. :class:`PatchEmbedding` cuts each channel into P patches of 200 samples (N = C * P
   tokens, channel-major) and sums three views of every patch: a temporal conv stack
   (3 x Conv -> GroupNorm over the whole example -> GELU), a linear map of its DFT magnitude,
   and the embedding of its channel slot; a depthwise conv along the patch axis adds time
   information. ``[B, N, D]``.
3. ``depth`` pre-norm :class:`TransformerBlock` s (8-head attention with q/v biases, GELU MLP);
   after the first one, :class:`GlobalToken` prepends a learned token. ``[B, 1 + N, D]``.

:class:`EEGDinoClassifier` runs the encoder and its :class:`ClassificationHead`
(``[B, num_classes]`` logits).
"""

from __future__ import annotations

import os
from typing import Any

import keras

from eegdino_tf import hardware, keras_file
from eegdino_tf import weights as W
from eegdino_tf.config import (
    EEGDinoConfig,
    ModelOptions,
    class_count,
    get_config,
)
from eegdino_tf.errors import ConfigError, MissingHeadError
from eegdino_tf.layers import (
    ClassificationHead,
    EEGInput,
    GlobalToken,
    PatchEmbedding,
    TransformerBlock,
)
from eegdino_tf.runtime import EEGModel

_SERIALIZABLE = keras.saving.register_keras_serializable(package="eegdino_tf")


@_SERIALIZABLE
class EEGDinoEncoder(EEGModel):
    """EEG-DINO encoder: raw microvolts ``[B, C, T]`` -> tokens ``[B, 1 + C*T/200, D]``.

    Token 0 is the global token. Arguments mirror :class:`~eegdino_tf.EEGDinoConfig`, plus
    ``partial_patch`` and ``check_finite`` (see :class:`EEGInput`) and ``precision``
    (``"float32"``, ``"mixed_float16"``, ``"mixed_bfloat16"``, or ``"auto"``: the fastest of
    them that keeps the accuracy bounds on this machine, see
    :func:`eegdino_tf.hardware.auto_precision`; outputs stay float32).
    """

    #: The output's name in an exported artifact (:mod:`eegdino_tf.tracing`).
    serving_output = "tokens"

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int = 8,
        mlp_dim: int = 512,
        conv_channels: tuple[int, int, int] = (25, 25, 25),
        norm_groups: int = 5,
        input_scale: float = 0.01,
        partial_patch: str = "error",
        check_finite: bool = True,
        precision: str = "float32",
        dropout: float = 0.1,
        drop_path: float = 0.1,
        name: str = "eegdino_encoder",
        **kwargs: Any,
    ):
        config = EEGDinoConfig(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            conv_channels=tuple(conv_channels),
            norm_groups=norm_groups,
            input_scale=input_scale,
        )
        precision = hardware.resolve_precision(precision, embed_dim)
        policy = keras.DTypePolicy(precision)
        eeg = keras.Input(shape=(None, None), name="eeg")
        x = EEGInput(input_scale, partial_patch, check_finite, name="eeg_input")(eeg)
        x = PatchEmbedding(
            embed_dim,
            config.conv_channels,
            norm_groups,
            dropout,
            name="patch_embedding",
            dtype=policy,
        )(x)
        for i in range(depth):
            x = TransformerBlock(
                embed_dim,
                num_heads,
                mlp_dim,
                dropout,
                drop_path,
                name=f"encoder_layer_{i}",
                dtype=policy,
            )(x)
            if i == 0:
                x = GlobalToken(embed_dim, name="global_token")(x)
        super().__init__(inputs=eeg, outputs=x, name=name, **kwargs)
        self.config = config
        self.depth = depth
        self.embed_dim = embed_dim
        self.partial_patch = partial_patch
        self.check_finite = check_finite
        self.precision = precision
        self.dropout = float(dropout)
        self.drop_path = float(drop_path)

    def get_config(self) -> dict[str, Any]:
        return {
            **self.config.to_dict(),
            "partial_patch": self.partial_patch,
            "check_finite": self.check_finite,
            "precision": self.precision,
            "dropout": self.dropout,
            "drop_path": self.drop_path,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EEGDinoEncoder:
        """The encoder of a ``get_config`` dict (a ``.keras`` file's): its shape is checked
        (:class:`EEGDinoConfig`'s limits, and in a ``.keras`` load the file's limits,
        :func:`eegdino_tf.keras_file.check_loading`) before anything is built."""
        fields = EEGDinoConfig.__dataclass_fields__
        shape = EEGDinoConfig.from_dict({k: v for k, v in config.items() if k in fields})
        keras_file.check_loading(shape)
        return cls(**config)


@_SERIALIZABLE
class EEGDinoClassifier(EEGModel):
    """Encoder + finetuning head: raw microvolts ``[B, C, T]`` -> logits ``[B, num_classes]``.

    The encoder is the nested model ``classifier.encoder`` (freeze it with
    ``classifier.encoder.trainable = False`` for linear probing).
    """

    serving_output = "logits"

    def __init__(
        self,
        encoder: EEGDinoEncoder,
        num_classes: int,
        head_dropout: tuple[float, float] = (0.5, 0.3),
        name: str = "eegdino_classifier",
        **kwargs,
    ):
        eeg = keras.Input(shape=(None, None), name="eeg")
        head = ClassificationHead(
            encoder.embed_dim,
            num_classes,
            head_dropout,
            name="head",
            dtype=keras.DTypePolicy(encoder.precision),
        )
        logits = head(encoder(eeg), eeg)
        super().__init__(inputs=eeg, outputs=logits, name=name, **kwargs)
        self.encoder = encoder
        self.head = head
        self.partial_patch = encoder.partial_patch
        self.precision = encoder.precision
        self.check_finite = encoder.check_finite
        self.num_classes = num_classes
        self.head_dropout = head.dropout

    def get_config(self) -> dict[str, Any]:
        return {
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "num_classes": self.num_classes,
            "head_dropout": list(self.head_dropout),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EEGDinoClassifier:
        """The classifier of a ``get_config`` dict: ``num_classes`` (within ``MAX_CLASSES``)
        and the encoder's class are checked before anything is built."""
        config = dict(config)
        config["num_classes"] = class_count(config.get("num_classes"))
        encoder, ours = config.get("encoder"), keras.saving.get_registered_name(EEGDinoEncoder)
        if not isinstance(encoder, dict) or encoder.get("registered_name") != ours:
            found = encoder
            if isinstance(encoder, dict):
                found = encoder.get("registered_name") or encoder.get("class_name")
            raise ConfigError(
                f"a classifier's config holds an 'encoder' of class {ours!r}; found "
                f"{str(found)[:100]!r}"
            )
        config["encoder"] = keras.saving.deserialize_keras_object(encoder)
        return cls(**config)


def build_encoder(config: EEGDinoConfig | str = "small", **options: Any) -> EEGDinoEncoder:
    """An encoder with freshly initialised (not pretrained) weights.

    ``config`` is a preset name (``"small"``, ``"medium"``, ``"large"``) or an
    :class:`EEGDinoConfig`. ``options`` are :class:`~eegdino_tf.config.ModelOptions` fields
    (``precision``, ``partial_patch``, ``check_finite``, ``dropout``, ``drop_path``;
    ``check_weights`` is accepted and only acts when loading) and config-field overrides
    (``norm_groups=4``, ``num_heads=16``, ...).
    """
    run, overrides = ModelOptions.split(options)
    return EEGDinoEncoder(**get_config(config, **overrides).to_dict(), **run.encoder_kwargs())


def build_classifier(
    config: EEGDinoConfig | str = "small", num_classes: int = 2, **options: Any
) -> EEGDinoClassifier:
    """A classifier (encoder + head) with freshly initialised weights; see
    :func:`build_encoder` (``head_dropout`` is an option here too)."""
    run, overrides = ModelOptions.split(options)
    classes = class_count(num_classes)
    encoder = build_encoder(config, **run.encoder_kwargs(), **overrides)
    return EEGDinoClassifier(encoder, classes, head_dropout=run.head_dropout)


def _read(path: str | os.PathLike, config: EEGDinoConfig | str | None, options: dict):
    """The normalized tensors, the config (read off them unless given) and the run options."""
    run, overrides = ModelOptions.split(options)
    normalized = W.read_weights(path)
    if config is None:
        cfg = W.infer_config(normalized.tensors, **(normalized.saved | overrides))
    else:
        cfg = get_config(config, **overrides)
    return normalized, cfg, run


def load_encoder(
    path: str | os.PathLike, *, config: EEGDinoConfig | str | None = None, **options: Any
) -> EEGDinoEncoder:
    """Load an encoder from a ``.safetensors`` (any supported layout) or ``.pt`` file.

    The shape is read off the tensors unless ``config`` is given; ``options`` as in
    :func:`build_encoder` (overrides win over what the tensors say). A classifier file loads
    its encoder and ignores the head. Loading is strict, and the file is checked before
    anything is built (:func:`eegdino_tf.weights.validate_weights`: keys, shapes, floating
    dtypes and, unless ``check_weights=False``, finite values).
    """
    normalized, cfg, run = _read(path, config, options)
    W.validate_weights(normalized, cfg, check_finite=run.check_weights)
    encoder = build_encoder(cfg, **run.encoder_kwargs())
    W.assign_weights(W.encoder_weight_map(encoder), normalized, ignore_head=True)
    return encoder


def load_classifier(
    path: str | os.PathLike, *, config: EEGDinoConfig | str | None = None, **options: Any
) -> EEGDinoClassifier:
    """Load a finetuned classifier (encoder + head) from a weight file; see :func:`load_encoder`.

    The number of classes is read from the last head layer.
    """
    normalized, cfg, run = _read(path, config, options)
    if not normalized.has_head:
        raise MissingHeadError(
            f"{path} holds an encoder without a classification head (no 'full_linear', "
            "'classifier.*' or 'final_layer.*' keys); load it with load_encoder, or build a "
            "classifier with build_classifier and train the head"
        )
    num_classes = W.num_classes(normalized)
    W.validate_weights(normalized, cfg, num_classes=num_classes, check_finite=run.check_weights)
    model = build_classifier(cfg, num_classes=num_classes, **run.as_kwargs())

    def weight_map():
        yield from W.encoder_weight_map(model.encoder)
        yield from W.head_weight_map(model.head)

    W.assign_weights(weight_map(), normalized)
    return model


def load_keras(path: str | os.PathLike, **kwargs: Any) -> keras.Model:
    """``keras.saving.load_model(path, **kwargs)`` for a ``.keras`` file, after checking it
    within the limits that guard ``.pt`` files (:func:`eegdino_tf.keras_file.check_file`:
    the zip's directory, members and inflated size) before Keras opens it. Our classes are
    registered (importing this module did it), so the file needs no ``custom_objects``."""
    keras_file.check_file(path)
    return keras.saving.load_model(path, **kwargs)
