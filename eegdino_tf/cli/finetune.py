"""``eegdino-tf finetune MANIFEST.csv --weights W --output DIR``: labelled recordings in, a
fine-tuned classifier out; the logic is :func:`eegdino_tf.finetune.finetune_recordings`."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from eegdino_tf.cli.options import (
    add_force,
    add_model_options,
    add_window_options,
    model_options,
)
from eegdino_tf.finetune.settings import (
    WARMUP_EPOCHS,
    WARMUP_SHARE,
    FinetuneRecipe,
    FinetuneSettings,
)

DEFAULT = FinetuneRecipe()
#: Classes named on the "classes:" line (all are in metrics.json).
SHOWN_CLASSES = 10


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a classifier on labelled recordings listed in a manifest CSV",
        description=(
            "Fine-tune an EEG-DINO classifier on the recordings a manifest CSV lists "
            "(header path,label or path,start_s,end_s,label, optional subject; paths relative "
            "to the manifest). Holds out files or subjects, scores them after each epoch "
            "(balanced accuracy, Cohen's kappa, weighted F1, AUROC and AUC-PR for 2 classes), "
            "keeps the best epoch and stops early. Writes classifier.safetensors, metrics.json "
            "and curves.png (with matplotlib) into the output folder."
        ),
    )
    parser.add_argument(
        "manifest", metavar="MANIFEST", help="CSV: path,label or path,start_s,end_s,label"
    )
    parser.add_argument("--weights", required=True, help="pretrained weights (.safetensors, .pt)")
    parser.add_argument(
        "--output", "-o", dest="output_dir", metavar="DIR", required=True, help="folder to write"
    )
    parser.add_argument("--epochs", type=int, default=30, help="at most this many (default 30)")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per batch (16)")
    parser.add_argument(
        "--split-by",
        choices=("file", "subject"),
        default="file",
        help="hold out whole files (default) or whole subjects (needs a subject column)",
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.2, help="share held out (default 0.2)"
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=5,
        help="stop after this many epochs without a better held-out balanced accuracy (default 5)",
    )
    parser.add_argument("--seed", type=int, default=0, help="split and training seed (0)")
    recipe = parser.add_argument_group("recipe (defaults: LaBraM's fine-tuning recipe)")
    recipe.add_argument(
        "--learning-rate",
        type=float,
        help=f"peak learning rate, of the head ({DEFAULT.learning_rate:g})",
    )
    recipe.add_argument(
        "--warmup-epochs",
        type=float,
        help=f"linear warm-up before the cosine decay (default {WARMUP_EPOCHS:g}, but at most "
        f"{WARMUP_SHARE * 100:g}%% of the steps)",
    )
    recipe.add_argument(
        "--layer-decay",
        type=float,
        help="learning-rate factor per block down the encoder "
        f"({DEFAULT.layer_decay:g}; 1: the same everywhere)",
    )
    recipe.add_argument(
        "--weight-decay", type=float, help=f"AdamW's weight decay ({DEFAULT.weight_decay:g})"
    )
    recipe.add_argument(
        "--label-smoothing", type=float, help=f"(default {DEFAULT.label_smoothing:g})"
    )
    freezing = recipe.add_mutually_exclusive_group()
    freezing.add_argument(
        "--freeze-encoder-epochs",
        type=int,
        help="train only the head for this many epochs first "
        f"(default {DEFAULT.freeze_encoder_epochs})",
    )
    freezing.add_argument(
        "--linear-probe",
        dest="freeze_encoder_epochs",
        action="store_const",
        const=None,
        help="never train the encoder, only the head",
    )
    for action in recipe._group_actions:
        action.default = argparse.SUPPRESS  # unset: the recipe's default
    add_window_options(parser)
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in DIR from its last finished epoch"
    )
    add_force(parser, "DIR")
    add_model_options(parser, precision="float32")
    parser.set_defaults(func=run)
    return parser


def settings_from(args: argparse.Namespace) -> FinetuneSettings:
    """The run's settings from the command line (the recipe's defaults where a flag is unset)."""
    fields = [field.name for field in dataclasses.fields(FinetuneRecipe)]
    recipe = FinetuneRecipe(**{name: getattr(args, name) for name in fields if name in args})
    return FinetuneSettings.of(
        recipe=recipe,
        epochs=args.epochs,
        batch_size=args.batch_size,
        split_by=args.split_by,
        val_fraction=args.val_fraction,
        patience=args.patience,
        seed=args.seed,
        channels=args.channels,
        window=args.window,
        stride=args.stride,
        verbose=1 if sys.stdout.isatty() else 2,
        **model_options(args),
    )


def classes_line(labels: dict[str, int]) -> str:
    """``classes: 0=a, 1=b, ...``: the first :data:`SHOWN_CLASSES`, then how many in all."""
    shown = ", ".join(f"{index}={name}" for name, index in list(labels.items())[:SHOWN_CLASSES])
    more = len(labels) - SHOWN_CLASSES
    return f"classes: {shown}" + (
        f", ... ({len(labels)} in all: see metrics.json)" if more > 0 else ""
    )


def run(args: argparse.Namespace) -> int:
    from eegdino_tf.finetune import METRICS, finetune_recordings

    result = finetune_recordings(
        args.manifest,
        args.weights,
        args.output_dir,
        settings_from(args),
        resume=args.resume,
        force=args.force,
    )
    metrics = result["metrics"]
    best = metrics["best"]
    scores = ", ".join(f"{name} {best[name]:.3f}" for name in METRICS if best[name] is not None)
    ran = len(metrics["epochs"])
    stopped = " (stopped early)" if metrics["stopped_early"] else ""
    print(f"best epoch {metrics['best_epoch']} of {ran}{stopped}: {scores}")
    print(classes_line(metrics["labels"]))
    for path in result["files"]:
        print(f"wrote {path}")
    return 0
