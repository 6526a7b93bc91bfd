"""Fine-tune a classifier on labelled recordings listed in a manifest CSV.

    result = finetune_recordings("manifest.csv", "eeg_dino_small.safetensors", "run1")
    result = finetune_recordings(rows, weights, "run2", FinetuneSettings(epochs=10))

The manifest, its windows and the split are :mod:`eegdino_tf.finetune.manifest`'s. Training
uses the recipe of :mod:`eegdino_tf.finetune.recipe`; after each epoch the held-out windows are
scored (balanced accuracy, Cohen's kappa, weighted F1, and for two classes AUROC and AUC-PR),
the best epoch by balanced accuracy is kept and restored, and training stops after ``patience``
epochs without improvement. Everything is checked before training starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from eegdino_tf.errors import (
    ConfigError,
    EEGDinoError,
    OutputExistsError,
    RecordingError,
    require,
)
from eegdino_tf.files import atomic_output
from eegdino_tf.finetune.manifest import (
    ManifestRow,
    WindowPlan,
    label_mapping,
    opened,
    plan_windows,
    read_manifest,
    rows_from_python,
    split_rows,
)
from eegdino_tf.finetune.recipe import (
    FinetuneRecipe,
    UnfreezeEncoder,
    class_weights,
    compile_for_finetuning,
)

#: Held-out metrics written per epoch (AUROC and AUC-PR for two classes only).
METRICS = ("balanced_accuracy", "cohen_kappa", "f1_weighted", "auroc", "auc_pr")
#: Folder inside the output holding what ``resume=True`` needs.
CHECKPOINT_DIR = "checkpoint"


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


@dataclasses.dataclass
class _Data:
    """The manifest's windows, split and labelled: what a run trains and scores on."""

    train: WindowPlan
    held_out: WindowPlan
    classes: dict[str, int]
    split: dict[str, Any]


def _prepare(manifest: Any, settings: FinetuneSettings) -> _Data:
    """Read, split and plan the manifest's windows (headers only): every error now."""
    from_file = isinstance(manifest, (str, os.PathLike))
    rows = read_manifest(manifest) if from_file else rows_from_python(manifest)
    folder = Path(manifest).parent if from_file else Path.cwd()
    classes = label_mapping(rows)
    train_rows, val_rows = split_rows(
        rows, split_by=settings.split_by, val_fraction=settings.val_fraction, seed=settings.seed
    )
    windows = dict(channels=settings.channels, window=settings.window, stride=settings.stride)
    train = plan_windows(train_rows, classes, **windows)
    held_out = plan_windows(val_rows, classes, **windows)
    if train.n_channels != held_out.n_channels:
        raise RecordingError("the training and held-out recordings have different channel counts")
    split = {
        "split_by": settings.split_by,
        "val_fraction": settings.val_fraction,
        "seed": settings.seed,
        "train": _relative(train_rows, folder),
        "held_out": _relative(val_rows, folder),
        "windows": {"train": train.count, "held_out": held_out.count},
    }
    return _Data(train, held_out, classes, split)


def _dataset(plan: WindowPlan, settings: FinetuneSettings) -> Any:
    """A ``tf.data`` dataset of ``(x, class)`` in plan order, streamed from the files."""
    import tensorflow as tf

    from eegdino_tf.data import planned_dataset

    return planned_dataset(
        [
            (lambda source=source: opened(source, settings.channels), wanted)
            for source, wanted in plan.windows.items()
        ],
        n_channels=plan.n_channels,
        window=settings.window,
        stride=settings.stride,
        label_spec=tf.TensorSpec([], tf.int32),
    )


def heldout_metrics(y: np.ndarray, logits: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Balanced accuracy, Cohen's kappa, weighted F1 (and for 2 classes AUROC, AUC-PR)."""
    metrics = require("sklearn.metrics", "finetune")
    predicted = logits.argmax(axis=1)
    result: dict[str, Any] = {
        "balanced_accuracy": float(metrics.balanced_accuracy_score(y, predicted)),
        "cohen_kappa": float(metrics.cohen_kappa_score(y, predicted, labels=range(num_classes))),
        "f1_weighted": float(metrics.f1_score(y, predicted, average="weighted", zero_division=0)),
        "auroc": None,
        "auc_pr": None,
    }
    if num_classes == 2 and len(np.unique(y)) == 2:
        z = logits.astype(np.float64)
        score = z[:, 1] - z[:, 0]  # the log-odds of class 1
        result["auroc"] = float(metrics.roc_auc_score(y, score))
        result["auc_pr"] = float(metrics.average_precision_score(y, score))
    for key, value in result.items():
        if value is not None and not math.isfinite(value):
            result[key] = None
    return result


class _Resumable(UnfreezeEncoder):
    """:class:`UnfreezeEncoder` that also starts right when training resumes mid-way."""

    def __init__(self, epochs: int, initial_epoch: int):
        super().__init__(epochs)
        self.initial_epoch = initial_epoch

    def on_train_begin(self, logs=None):
        self._set(self.initial_epoch < self.epochs)


class _Evaluate(keras.callbacks.Callback):
    """Score the held-out split after each epoch; keep the best weights; stop early;
    checkpoint everything ``resume`` needs."""

    def __init__(self, run: _Run):
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        run = self.run
        logits = self.model.predict(run.val_data, verbose=0)
        scores = heldout_metrics(run.val_labels, logits, run.num_classes)
        entry = {"epoch": epoch + 1, "loss": float((logs or {}).get("loss", float("nan")))}
        entry.update(scores)
        run.state["history"].append(entry)
        best = run.state["best_epoch"]
        best_score = run.state["history"][best - 1]["balanced_accuracy"] if best else None
        if best is None or scores["balanced_accuracy"] > best_score:
            run.state["best_epoch"] = epoch + 1
            run.state["wait"] = 0
            _save_arrays(run.checkpoint / "best.npz", self.model.weights)
        else:
            run.state["wait"] += 1
        shown = ", ".join(f"{k} {entry[k]:.4f}" for k in ("loss", *METRICS) if entry[k] is not None)
        if run.verbose:
            print(f"epoch {epoch + 1}: {shown}", flush=True)
        if run.state["wait"] >= run.patience:
            run.state["stopped_early"] = True
            self.model.stop_training = True
        run.save_checkpoint(self.model)


@dataclasses.dataclass
class _Run:
    checkpoint: Path
    val_data: Any
    val_labels: np.ndarray
    num_classes: int
    patience: int
    verbose: Any
    state: dict[str, Any]

    def save_checkpoint(self, model: Any) -> None:
        """The last epoch's weights, optimizer variables and progress."""
        _save_arrays(self.checkpoint / "last.npz", model.weights)
        _save_arrays(self.checkpoint / "optimizer.npz", model.optimizer.variables)
        self.state["epochs_done"] = len(self.state["history"])
        with atomic_output(self.checkpoint / "state.json", force=True) as tmp:
            tmp.write_text(json.dumps(self.state, indent=1))

    def load_checkpoint(self, model: Any) -> None:
        """Restore what :meth:`save_checkpoint` saved."""
        _load_arrays(self.checkpoint / "last.npz", model.weights)
        _load_arrays(self.checkpoint / "optimizer.npz", model.optimizer.variables)


def _save_arrays(path: Path, variables: Sequence[Any]) -> None:
    """The variables' values, in order, as an ``.npz`` (written whole, then renamed)."""
    with atomic_output(path, force=True) as tmp, tmp.open("wb") as file:
        np.savez(file, **{f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)})


def _load_arrays(path: Path, variables: Sequence[Any]) -> None:
    """Assign what :func:`_save_arrays` wrote back to the same variables."""
    with np.load(path) as saved:
        values = [saved[f"v{i}"] for i in range(len(saved.files))]
    if len(values) != len(variables) or any(
        tuple(v.shape) != a.shape for v, a in zip(variables, values, strict=False)
    ):
        raise EEGDinoError(f"{path}: the checkpoint does not match the model")
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def finetune_recordings(
    manifest: str | os.PathLike | Sequence[dict[str, Any]],
    weights: str | os.PathLike,
    output_dir: str | os.PathLike,
    settings: FinetuneSettings | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Fine-tune a classifier from ``weights`` (any layout, ``.pt`` too) on the manifest's
    recordings (a CSV path, or rows from Python: see
    :func:`~eegdino_tf.finetune.manifest.rows_from_python`, which also take ``mne.io.Raw``
    sources); write ``classifier.safetensors``, ``metrics.json`` and ``curves.png`` (if
    matplotlib is installed) into ``output_dir``, each written whole then renamed.

    ``settings`` (:class:`FinetuneSettings`) says how; ``options`` override its fields by name
    (``epochs=10``), and any other name is a model option (``norm_groups=4``).
    ``output_dir/checkpoint/`` (last and best weights, optimizer, state) is written after
    every epoch and survives an interruption, so ``resume=True`` continues from the last
    finished epoch, up to ``epochs``; a run that fails before its first epoch ends leaves
    nothing. Returns ``{"model", "metrics", "output_dir", "files"}``; the model has the best
    epoch's weights.
    """
    settings = FinetuneSettings.of(settings, **options)
    settings.check()
    require("sklearn.metrics", "finetune")  # before anything is trained
    final = Path(output_dir)
    resuming = bool(resume) and final.exists()
    if resuming and not (final / CHECKPOINT_DIR / "state.json").is_file():
        raise RecordingError(f"{final} holds no checkpoint to resume from (resume=True)")
    if final.exists() and not (force or resuming):
        raise OutputExistsError(
            f"{final} already exists; pass force=True to overwrite it or resume=True to continue"
        )
    data = _prepare(manifest, settings)
    previous = None
    if resuming:
        previous = json.loads((final / CHECKPOINT_DIR / "state.json").read_text())
        if previous["labels"] != data.classes or previous["split"] != data.split:
            raise RecordingError(
                f"{final} was trained on another manifest, split or window setting; resume "
                "needs the same ones"
            )
        if previous["epochs_done"] >= settings.epochs:
            raise ConfigError(
                f"{final} has already run {previous['epochs_done']} epoch(s); pass a larger "
                f"epochs= than epochs={settings.epochs} to continue"
            )

    # Trained in place: ``checkpoint/`` survives an interruption (so ``resume=True`` continues
    # it); the artifacts are each written whole, then renamed, at the end.
    if final.exists() and not resuming:
        shutil.rmtree(final)  # force=True
    (final / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    try:
        result = _train(final, weights, data, previous, settings)
    except BaseException:
        if not (final / CHECKPOINT_DIR / "state.json").is_file():  # no epoch finished
            shutil.rmtree(final, ignore_errors=True)
        raise
    result["output_dir"] = final
    result["files"] = [final / name for name in result["files"]]
    return result


def _relative(rows: Sequence[ManifestRow], folder: Path) -> list[str]:
    """The rows' files, relative to the manifest's folder where they are inside it."""
    names = set()
    for row in rows:
        if not isinstance(row.path, Path):
            names.add(row.name)
            continue
        try:
            names.add(row.path.resolve().relative_to(folder.resolve()).as_posix())
        except ValueError:
            names.add(str(row.path))
    return sorted(names)


def _train(
    out: Path,
    weights: Any,
    data: _Data,
    previous: dict[str, Any] | None,
    settings: FinetuneSettings,
) -> dict[str, Any]:
    import eegdino_tf
    from eegdino_tf.weights import save_weights

    keras.utils.set_random_seed(settings.seed)
    options = dict(settings.model_options)
    head_dropout = options.pop("head_dropout", (0.5, 0.3))
    encoder = eegdino_tf.load_encoder(weights, precision=settings.precision, **options)
    model = eegdino_tf.EEGDinoClassifier(encoder, len(data.classes), head_dropout=head_dropout)

    train = (
        _dataset(data.train, settings)
        .shuffle(min(data.train.count, 1024), seed=settings.seed, reshuffle_each_iteration=True)
        .batch(settings.batch_size)
        .prefetch(2)
    )
    val = _dataset(data.held_out, settings).batch(settings.batch_size).prefetch(2)
    callbacks = compile_for_finetuning(
        model, settings.recipe, steps_per_epoch=len(train), epochs=settings.epochs
    )
    checkpoint = out / CHECKPOINT_DIR
    state = previous or {
        "labels": data.classes,
        "split": data.split,
        "history": [],
        "best_epoch": None,
        "wait": 0,
        "stopped_early": False,
        "epochs_done": 0,
    }
    state["stopped_early"] = False
    run = _Run(
        checkpoint,
        val,
        data.held_out.labels(),
        len(data.classes),
        settings.patience,
        settings.verbose,
        state,
    )
    initial_epoch = state["epochs_done"]
    callbacks = [
        _Resumable(c.epochs, initial_epoch) if isinstance(c, UnfreezeEncoder) else c
        for c in callbacks
    ]
    if previous is not None:
        model.optimizer.build([v for v in model.weights if v.dtype == "float32"])
        run.load_checkpoint(model)
    model.fit(
        train,
        epochs=settings.epochs,
        initial_epoch=initial_epoch,
        callbacks=[*callbacks, _Evaluate(run)],
        class_weight=class_weights(data.train.labels()),
        shuffle=False,  # the dataset shuffles itself
        verbose=settings.verbose,
    )
    best_epoch = state["best_epoch"]
    _load_arrays(checkpoint / "best.npz", model.weights)  # the best epoch's weights
    history = state["history"]
    save_weights(model, out / "classifier.safetensors", layout="finetuning", force=True)
    files = ["classifier.safetensors", "metrics.json"]
    metrics: dict[str, Any] = {
        "epochs": history,
        "best_epoch": best_epoch,
        "best": history[best_epoch - 1],
        "stopped_early": state["stopped_early"],
        "labels": data.classes,
        "split": data.split,
        "weights": str(weights),
        "window_s": settings.window,
        "stride_s": settings.stride,
        "precision": encoder.precision,
    }
    note = _plot_curves(history, best_epoch, out / "curves.png")
    if note:
        metrics["curves"] = note
    else:
        metrics["curves"] = "curves.png"
        files.append("curves.png")
    with atomic_output(out / "metrics.json", force=True) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    return {"model": model, "metrics": metrics, "files": files}


def _plot_curves(history: list[dict[str, Any]], best_epoch: int, path: Path) -> str | None:
    """Draw loss and held-out metrics per epoch; a note instead if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "not drawn: matplotlib is not installed (pip install matplotlib)"
    epochs = [h["epoch"] for h in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["loss"] for h in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss")
    for name in METRICS:
        values = [h[name] for h in history]
        if all(v is not None for v in values):
            right.plot(epochs, values, marker="o", label=name)
    right.axvline(best_epoch, color="grey", linestyle="--", label=f"best (epoch {best_epoch})")
    right.set(xlabel="epoch", ylabel="held-out")
    right.legend(fontsize="small")
    figure.tight_layout()
    with atomic_output(path, force=True) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)
    return None
