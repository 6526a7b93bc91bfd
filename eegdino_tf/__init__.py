"""EEG-DINO, the EEG foundation model, in TensorFlow / Keras 3.

Quick use::

    import eegdino_tf
    encoder = eegdino_tf.load_encoder("eeg_dino_small.safetensors")
    tokens = encoder.predict(eeg_microvolts)  # [B, C, T] -> [B, 1 + C*T/200, D]

TensorFlow is imported on first use of a model name, so ``eegdino_tf.errors`` and the CLI's
``--help`` stay fast; the Keras classes register when Keras is imported (see
:mod:`eegdino_tf.registration`), so ``keras.models.load_model`` reads our ``.keras`` files.
"""

import importlib
import os

from eegdino_tf.registration import register_on_keras_import

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
register_on_keras_import()  # so keras.models.load_model finds our classes

__version__ = "0.1.0"

_EXPORTS = {
    "eegdino_tf.config": ("PRESETS", "EEGDinoConfig", "ModelOptions", "get_config"),
    "eegdino_tf.errors": (
        "CheckpointError",
        "ConfigError",
        "EEGDinoError",
        "ExportError",
        "InputError",
        "MissingExtraError",
        "MissingHeadError",
        "OutputError",
        "OutputExistsError",
        "RecordingError",
        "WeightsError",
    ),
    "eegdino_tf.models": (
        "EEGDinoClassifier",
        "EEGDinoEncoder",
        "build_classifier",
        "build_encoder",
        "load_classifier",
        "load_encoder",
        "load_keras",
    ),
    "eegdino_tf.weights": ("save_weights",),
}
#: Submodules reachable as attributes (``eegdino_tf.runtime``) without importing them first.
_MODULES = (
    *("config", "layers", "models", "weights", "checkpoint", "io"),
    *("runtime", "litert", "tracing", "export", "keras_file"),
)
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["__version__", *_WHERE]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"eegdino_tf.{name}")
    raise AttributeError(f"module 'eegdino_tf' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
