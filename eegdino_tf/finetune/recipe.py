"""A fine-tuning recipe for EEG-DINO classifiers that works with plain ``model.fit``.

    recipe = FinetuneRecipe(learning_rate=5e-4)            # every field overridable
    callbacks = compile_for_finetuning(classifier, recipe, steps_per_epoch=len(train), epochs=30)
    classifier.fit(train, validation_data=val, epochs=30, callbacks=callbacks,
                   class_weight=class_weights(labels))

The defaults are the BEiT-style fine-tuning setup published for LaBraM (Jiang et al., ICLR
2024, its TUAB and TUEV runs), the best-documented recipe for a ViT-style EEG foundation
model: AdamW (betas 0.9 / 0.999, weight decay 0.05, not on norms, biases or the
global token), base learning rate 5e-4 with layer-wise decay 0.65 (the head at the base rate,
each block below it 0.65x the one above, the patch embedding lowest), a linear warm-up of 5
epochs (but at most a tenth of the run, so a short run still trains at its peak rate) then
cosine decay to 1e-6, and label smoothing 0.1. Dropout and drop-path are model
options (``load_classifier(..., dropout=0.1, drop_path=0.1)``, the reference's defaults).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from eegdino_tf.errors import ConfigError
from eegdino_tf.finetune.settings import WARMUP_EPOCHS, WARMUP_SHARE, FinetuneRecipe

_SERIALIZABLE = keras.saving.register_keras_serializable(package="eegdino_tf")

#: Variables without weight decay: norm scales and shifts, biases, the global token.
NO_DECAY = re.compile(r"/(gamma|beta|bias|q_bias|v_bias|token)$")


def layer_levels(model: Any) -> dict[str, int]:
    """Variable path -> depth level: 0 the patch embedding and the global token, ``i + 1``
    block ``i``, ``depth + 1`` the head."""
    encoder = model.encoder
    levels = {}
    for variable in model.weights:
        path = variable.path
        block = re.search(r"encoder_layer_(\d+)/", path)
        if block:
            levels[path] = int(block.group(1)) + 1
        elif path.startswith("head/"):
            levels[path] = encoder.depth + 1
        else:
            levels[path] = 0
    return levels


@_SERIALIZABLE
class LayerwiseAdamW(keras.optimizers.Adam):
    """AdamW whose learning rate (and with it the decoupled weight decay) is scaled per
    variable: ``lr_scales[variable.path]`` (default 1); no weight decay for the paths in
    ``no_decay``.

    The step is ``torch.optim.AdamW``'s (epsilon added to the bias-corrected ``sqrt(v)``;
    Keras' Adam adds it before the correction), so with the same hyper-parameters a step
    equals PyTorch's. Momenta and velocities are Keras Adam's (``amsgrad`` is not supported).
    """

    def __init__(
        self,
        learning_rate: Any = 1e-3,
        weight_decay_rate: float = 0.05,
        lr_scales: dict[str, float] | None = None,
        no_decay: Sequence[str] = (),
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        name: str = "layerwise_adamw",
        **kwargs: Any,
    ):
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            name=name,
            **kwargs,
        )
        self.weight_decay_rate = float(weight_decay_rate)
        self.lr_scales = dict(lr_scales or {})
        self.no_decay = tuple(no_decay)

    def build(self, variables):
        super().build(variables)
        no_decay = set(self.no_decay)
        self._scales = [self.lr_scales.get(v.path, 1.0) for v in variables]
        self._decayed = [v.path not in no_decay for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        """``torch.optim.AdamW``'s step, at this variable's share of the learning rate."""
        index = self._get_variable_index(variable)
        lr = ops.cast(learning_rate, variable.dtype) * self._scales[index]
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        if self.weight_decay_rate and self._decayed[index]:
            self.assign(variable, variable * (1 - lr * self.weight_decay_rate))
        m = self._momentums[index]
        v = self._velocities[index]
        self.assign_add(m, (gradient - m) * (1 - self.beta_1))
        self.assign_add(v, (ops.square(gradient) - v) * (1 - self.beta_2))
        m_hat = m / (1 - ops.power(ops.cast(self.beta_1, variable.dtype), step))
        v_hat = v / (1 - ops.power(ops.cast(self.beta_2, variable.dtype), step))
        self.assign_sub(variable, lr * m_hat / (ops.sqrt(v_hat) + self.epsilon))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            weight_decay_rate=self.weight_decay_rate,
            lr_scales=self.lr_scales,
            no_decay=list(self.no_decay),
        )
        return config


@_SERIALIZABLE
class SparseCrossentropyWithSmoothing(keras.losses.Loss):
    """Mean cross-entropy of integer labels against logits, with label smoothing."""

    def __init__(self, label_smoothing: float = 0.0, name: str = "crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        labels = ops.one_hot(ops.cast(ops.reshape(y_true, [-1]), "int32"), ops.shape(y_pred)[-1])
        return keras.losses.categorical_crossentropy(
            labels, y_pred, from_logits=True, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def finetune_schedule(
    recipe: FinetuneRecipe, *, steps_per_epoch: int, epochs: int
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up over ``recipe.warmup_epochs`` (by default :data:`WARMUP_EPOCHS`, at most
    :data:`WARMUP_SHARE` of the steps), then cosine decay to the floor."""
    if steps_per_epoch < 1 or epochs < 1:
        raise ConfigError(f"steps_per_epoch={steps_per_epoch} and epochs={epochs} must be >= 1")
    total = steps_per_epoch * epochs
    if recipe.warmup_epochs is None:
        warmup = min(round(WARMUP_EPOCHS * steps_per_epoch), int(WARMUP_SHARE * total))
    else:
        warmup = min(round(recipe.warmup_epochs * steps_per_epoch), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else recipe.learning_rate,
        decay_steps=max(total - warmup, 1),
        alpha=recipe.min_learning_rate / recipe.learning_rate,
        warmup_target=recipe.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def finetune_optimizer(
    model: Any, recipe: FinetuneRecipe, *, steps_per_epoch: int, epochs: int
) -> LayerwiseAdamW:
    """The recipe's optimizer and schedule for a classifier, built for all its weights."""
    schedule = finetune_schedule(recipe, steps_per_epoch=steps_per_epoch, epochs=epochs)
    levels = layer_levels(model)
    top = max(levels.values())
    scales = {path: recipe.layer_decay ** (top - level) for path, level in levels.items()}
    optimizer = LayerwiseAdamW(
        learning_rate=schedule,
        weight_decay_rate=recipe.weight_decay,
        lr_scales=scales,
        no_decay=[v.path for v in model.weights if NO_DECAY.search(v.path)],
        beta_1=recipe.beta_1,
        beta_2=recipe.beta_2,
        epsilon=recipe.epsilon,
    )
    # Built for every weight, so unfreezing the encoder later needs no new optimizer.
    optimizer.build([v for v in model.weights if v.dtype == "float32"])
    return optimizer


class UnfreezeEncoder(keras.callbacks.Callback):
    """Freeze ``model.encoder`` for the first ``epochs`` epochs, then train it too."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = int(epochs)

    def on_train_begin(self, logs=None):
        self._set(self.epochs > 0)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epochs:
            self._set(False)

    def _set(self, frozen: bool) -> None:
        if self.model.encoder.trainable == (not frozen):
            return
        self.model.encoder.trainable = not frozen
        self.model.make_train_function(force=True)


def compile_for_finetuning(
    model: Any,
    recipe: FinetuneRecipe | None = None,
    *,
    steps_per_epoch: int,
    epochs: int,
    metrics: Sequence[Any] = ("accuracy",),
    **compile_kwargs: Any,
) -> list[keras.callbacks.Callback]:
    """Compile a classifier with the recipe; returns the callbacks to pass to ``fit`` (the
    frozen-then-unfrozen schedule, if the recipe has one)."""
    recipe = recipe or FinetuneRecipe()
    optimizer = finetune_optimizer(model, recipe, steps_per_epoch=steps_per_epoch, epochs=epochs)
    if recipe.freeze_encoder_epochs is None:
        model.encoder.trainable = False
    model.compile(
        optimizer=optimizer,
        loss=SparseCrossentropyWithSmoothing(recipe.label_smoothing),
        metrics=list(metrics),
        **compile_kwargs,
    )
    if recipe.freeze_encoder_epochs:
        return [UnfreezeEncoder(recipe.freeze_encoder_epochs)]
    return []


def class_weights(labels: Sequence[int] | np.ndarray) -> dict[int, float]:
    """Balanced class weights for ``fit(class_weight=...)``: ``n / (k * count(class))``."""
    labels = np.asarray(labels).astype(int).ravel()
    classes, counts = np.unique(labels, return_counts=True)
    return {
        int(c): float(len(labels) / (len(classes) * n))
        for c, n in zip(classes, counts, strict=True)
    }
