"""EEG-DINO, the EEG foundation model, in TensorFlow / Keras 3.

Quick use::

    import eegdino_tf
    encoder = eegdino_tf.load_encoder("eeg_dino_small.safetensors")
    tokens = encoder.predict(eeg_microvolts)  # [B, C, T] -> [B, 1 + C*T/200, D]
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from eegdino_tf.config import PRESETS, EEGDinoConfig, get_config  # noqa: E402
from eegdino_tf.errors import (  # noqa: E402
    CheckpointError,
    EEGDinoError,
    InputError,
    RecordingError,
    WeightsError,
)
from eegdino_tf.models import (  # noqa: E402
    EEGDinoClassifier,
    EEGDinoEncoder,
    build_classifier,
    build_encoder,
    load_classifier,
    load_encoder,
)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "CheckpointError",
    "EEGDinoClassifier",
    "EEGDinoConfig",
    "EEGDinoEncoder",
    "EEGDinoError",
    "InputError",
    "RecordingError",
    "WeightsError",
    "__version__",
    "build_classifier",
    "build_encoder",
    "get_config",
    "load_classifier",
    "load_encoder",
]
