"""Fine-tuning EEG-DINO classifiers.

- :mod:`~eegdino_tf.finetune.recipe`: the recipe for plain ``model.fit`` (layer-wise AdamW,
  warm-up then cosine, label smoothing, freezing, class weights);
- :mod:`~eegdino_tf.finetune.manifest`: manifests of labelled recordings, their split and
  windows;
- :mod:`~eegdino_tf.finetune.run`: :func:`finetune_recordings`, a whole run from a manifest
  (``eegdino-tf finetune``): held-out metrics, checkpoints, resume, curves.
"""

from eegdino_tf.finetune.manifest import (
    ManifestRow,
    label_mapping,
    plan_windows,
    read_manifest,
    rows_from_python,
    split_rows,
)
from eegdino_tf.finetune.recipe import (
    FinetuneRecipe,
    LayerwiseAdamW,
    SparseCrossentropyWithSmoothing,
    UnfreezeEncoder,
    class_weights,
    compile_for_finetuning,
    finetune_optimizer,
    finetune_schedule,
    layer_levels,
)
from eegdino_tf.finetune.run import METRICS, FinetuneSettings, finetune_recordings, heldout_metrics

__all__ = [
    "METRICS",
    "FinetuneRecipe",
    "FinetuneSettings",
    "LayerwiseAdamW",
    "ManifestRow",
    "SparseCrossentropyWithSmoothing",
    "UnfreezeEncoder",
    "class_weights",
    "compile_for_finetuning",
    "finetune_optimizer",
    "finetune_recordings",
    "finetune_schedule",
    "heldout_metrics",
    "label_mapping",
    "layer_levels",
    "plan_windows",
    "read_manifest",
    "rows_from_python",
    "split_rows",
]
