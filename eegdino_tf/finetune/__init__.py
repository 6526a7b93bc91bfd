"""Fine-tuning EEG-DINO classifiers.

- :mod:`~eegdino_tf.finetune.settings`: :class:`FinetuneRecipe` and :class:`FinetuneSettings`
  (plain data, no Keras);
- :mod:`~eegdino_tf.finetune.recipe`: the recipe for plain ``model.fit`` (layer-wise AdamW,
  warm-up then cosine, label smoothing, freezing, class weights);
- :mod:`~eegdino_tf.finetune.manifest`: manifests of labelled recordings, their split and
  windows;
- :mod:`~eegdino_tf.finetune.run`: :func:`finetune_recordings`, a whole run from a manifest
  (``eegdino-tf finetune``): held-out metrics, checkpoints, resume, curves.

The names below are imported from their module on first use, so ``import eegdino_tf.finetune``
(and the command line's parser) does not import Keras.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "settings": ("FinetuneRecipe", "FinetuneSettings"),
    "recipe": (
        "LayerwiseAdamW",
        "SparseCrossentropyWithSmoothing",
        "UnfreezeEncoder",
        "class_weights",
        "compile_for_finetuning",
        "finetune_optimizer",
        "finetune_schedule",
        "layer_levels",
    ),
    "manifest": (
        "ManifestRow",
        "label_mapping",
        "plan_windows",
        "read_manifest",
        "rows_from_python",
        "split_rows",
    ),
    "run": ("METRICS", "finetune_recordings", "heldout_metrics", "predictions"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return __all__
