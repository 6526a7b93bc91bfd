"""One training step of a fixture classifier, as the reference's golden step was taken."""

from __future__ import annotations

import keras
import tensorflow as tf

import eegdino_tf
from eegdino_tf import weights as W
from tests.helpers import OVERRIDES, fixture_path

#: No dropout anywhere: the golden step was taken with the reference's dropout off.
NO_DROPOUT = {"dropout": 0.0, "drop_path": 0.0, "head_dropout": (0.0, 0.0)}
#: The float32 parity bound of every forward path (test_parity.TOLERANCE): how the CPU's
#: kernels round decides where under it a path lands (tiny, eager: 1.1e-6 on an Intel AMX host).
PARITY = 2e-6
#: float32 floor for a gradient through the whole model (measured worst: see the test's output).
GRAD_NRMSE = 1e-5
#: Logits after one AdamW step taken with the reference's gradients (measured 4.8e-6 tiny,
#: 3.2e-6 small). Taken with our own gradients the bound would depend on the CPU: Adam's first
#: step is about lr * sign(grad), so a gradient at the float32 floor near zero whose sign the
#: kernels' rounding flips moves a weight by two full steps (small: 2.0e-5 on AMD hosts, 5.4e-5
#: on an Intel AMX host).
AFTER_STEP_NRMSE = 1e-5


def fixture_classifier(size: str, **options):
    path = fixture_path(f"{size}_classifier.safetensors")
    return eegdino_tf.load_classifier(path, **OVERRIDES[size], **options)


def keyed_variables(model):
    """``(finetuning key, variable, layout hook)`` for every weight of a classifier."""
    for key, variable, permutation in W.encoder_weight_map(model.encoder):
        yield f"encoder.{key}", variable, permutation
    yield from W.head_weight_map(model.head)


def loss_and_gradients(model, golden):
    variables = list(keyed_variables(model))
    with tf.GradientTape() as tape:
        logits = model(golden["raw_uv"], training=True)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            golden["labels"], logits
        )
    grads = tape.gradient(loss, [v for _, v, _ in variables])
    return logits, loss, variables, grads
