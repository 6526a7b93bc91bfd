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
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from eegdino_tf.errors import (
    ConfigError,
    EEGDinoError,
    OutputError,
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
    UnfreezeEncoder,
    class_weights,
    compile_for_finetuning,
)
from eegdino_tf.finetune.settings import FinetuneSettings

#: Held-out metrics written per epoch (AUROC and AUC-PR for two classes only).
METRICS = ("balanced_accuracy", "cohen_kappa", "f1_weighted", "auroc", "auc_pr")
#: Folder inside the output holding what ``resume=True`` needs.
CHECKPOINT_DIR = "checkpoint"
#: What a run writes into its output folder: ``force=True`` replaces these, and only these.
RUN_FILES = ("classifier.safetensors", "metrics.json", "curves.png", CHECKPOINT_DIR)


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


def predictions(model: Any, dataset: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """The predicted class of each window ``[N]``, and for two classes the log-odds of class 1
    ``[N]``; batch by batch, so only one batch of logits is held at a time."""
    predicted, odds = [], []
    for x, _ in dataset:
        logits = np.asarray(model.predict_on_batch(x), dtype=np.float64)
        predicted.append(logits.argmax(axis=1))
        if logits.shape[1] == 2:
            odds.append(logits[:, 1] - logits[:, 0])
    return np.concatenate(predicted), np.concatenate(odds) if odds else None


def heldout_metrics(
    y: np.ndarray, predicted: np.ndarray, num_classes: int, odds: np.ndarray | None = None
) -> dict[str, Any]:
    """Balanced accuracy, Cohen's kappa, weighted F1 of the predicted classes (and for 2
    classes, from the log-odds of class 1, AUROC and AUC-PR); memory grows with the classes
    and windows, never with their product."""
    metrics = require("sklearn.metrics", "finetune")
    y, predicted = np.asarray(y, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    true_counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    predicted_counts = np.bincount(predicted, minlength=num_classes).astype(np.float64)
    correct = np.bincount(y[y == predicted], minlength=num_classes)
    present = true_counts > 0
    agreement = float(np.mean(y == predicted))
    chance = float(true_counts @ predicted_counts) / len(y) ** 2
    result: dict[str, Any] = {
        "balanced_accuracy": float(np.mean(correct[present] / true_counts[present])),
        "cohen_kappa": (agreement - chance) / (1 - chance) if chance < 1 else None,
        "f1_weighted": float(metrics.f1_score(y, predicted, average="weighted", zero_division=0)),
        "auroc": None,
        "auc_pr": None,
    }
    if odds is not None and num_classes == 2 and len(np.unique(y)) == 2:
        result["auroc"] = float(metrics.roc_auc_score(y, odds))
        result["auc_pr"] = float(metrics.average_precision_score(y, odds))
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
        predicted, odds = predictions(self.model, run.val_data)
        scores = heldout_metrics(run.val_labels, predicted, run.num_classes, odds)
        entry = {"epoch": epoch + 1, "loss": float((logs or {}).get("loss", float("nan")))}
        entry.update(scores)
        run.state["history"].append(entry)
        best = run.state["best_epoch"]
        best_score = run.state["history"][best - 1]["balanced_accuracy"] if best else None
        improved = best is None or scores["balanced_accuracy"] > best_score
        if improved:
            run.state["best_epoch"] = epoch + 1
            run.state["wait"] = 0
        else:
            run.state["wait"] += 1
        shown = ", ".join(f"{k} {entry[k]:.4f}" for k in ("loss", *METRICS) if entry[k] is not None)
        if run.verbose:
            print(f"epoch {epoch + 1}: {shown}", flush=True)
        if run.state["wait"] >= run.patience:
            run.state["stopped_early"] = True
            self.model.stop_training = True
        run.save_checkpoint(self.model, improved)


@dataclasses.dataclass
class _Run:
    out: Path
    val_data: Any
    val_labels: np.ndarray
    num_classes: int
    patience: int
    verbose: Any
    state: dict[str, Any]
    replacing: bool  # the output holds an earlier run's files, removed at the first checkpoint

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT_DIR

    def save_checkpoint(self, model: Any, improved: bool) -> None:
        """The last epoch's weights, optimizer variables and progress, and the best epoch's
        weights: the whole folder written, then renamed onto the previous one."""
        self.state["epochs_done"] = len(self.state["history"])
        with atomic_output(self.checkpoint, force=True) as tmp:
            tmp.mkdir()
            _save_arrays(tmp / "last.npz", model.weights)
            _save_arrays(tmp / "optimizer.npz", model.optimizer.variables)
            best = tmp / "last.npz" if improved else self.checkpoint / "best.npz"
            shutil.copyfile(best, tmp / "best.npz")
            (tmp / "state.json").write_text(json.dumps(self.state, indent=1))
        if self.replacing:  # the new run is under way: the earlier one's results go
            for name in RUN_FILES:
                if name != CHECKPOINT_DIR:
                    (self.out / name).unlink(missing_ok=True)
            self.replacing = False

    def load_checkpoint(self, model: Any) -> None:
        """Restore what :meth:`save_checkpoint` saved."""
        _load_arrays(self.checkpoint / "last.npz", model.weights)
        _load_arrays(self.checkpoint / "optimizer.npz", model.optimizer.variables)


def _save_arrays(path: Path, variables: Sequence[Any]) -> None:
    """The variables' values, in order, as an ``.npz``."""
    with path.open("wb") as file:
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
    finished epoch, up to ``epochs``, with the same settings; a run that fails before its
    first epoch ends leaves nothing. ``output_dir`` may be absent or empty; ``force=True``
    replaces an earlier run there (its own files only, never a folder holding anything else),
    once the new run's first epoch has ended. Returns ``{"model", "metrics", "output_dir",
    "files"}``; the model has the best epoch's weights.
    """
    settings = FinetuneSettings.of(settings, **options)
    settings.check()
    require("sklearn.metrics", "finetune")  # before anything is trained
    final = Path(output_dir)
    mode = _claim_output(final, resume=resume, force=force)
    data = _prepare(manifest, settings)
    fingerprint = _fingerprint(weights, settings)
    previous = None
    if mode == "resume":
        previous = _read_state(final / CHECKPOINT_DIR / "state.json")
        if previous["labels"] != data.classes or previous["split"] != data.split:
            raise RecordingError(
                f"{final} was trained on another manifest, split or window setting; resume "
                "needs the same ones"
            )
        _check_same_settings(final, previous.get("settings", {}), fingerprint)
        if previous["epochs_done"] >= settings.epochs:
            raise ConfigError(
                f"{final} has already run {previous['epochs_done']} epoch(s); pass a larger "
                f"epochs= than epochs={settings.epochs} to continue"
            )
    # Trained in place, but nothing is written until the first epoch ends: then the whole
    # checkpoint/ (which resume=True continues) replaces the last, and an earlier run's files
    # go; the artifacts are each written whole, then renamed, at the end.
    result = _train(final, weights, data, previous, settings, fingerprint, mode == "replace")
    result["output_dir"] = final
    result["files"] = [final / name for name in result["files"]]
    return result


def _read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's ``state.json``; a one-line error if it is not one."""
    try:
        state = json.loads(path.read_text())
        if isinstance(state["epochs_done"], int) and isinstance(state["history"], list):
            return state
    except (OSError, ValueError, KeyError, TypeError):
        pass
    raise RecordingError(f"{path} is not a checkpoint's state; pass force=True to start over")


def _claim_output(final: Path, *, resume: bool, force: bool) -> str:
    """How a run may use ``final``: ``"new"`` (absent or empty), ``"resume"`` (a run with a
    finished epoch, ``resume=True``) or ``"replace"`` (a run's own files only,
    ``force=True``); a one-line error otherwise."""
    if (final.exists() or final.is_symlink()) and not final.is_dir():
        raise OutputError(f"cannot write {final}: it is a file, not a folder")
    _check_writable(final)
    entries = sorted(os.listdir(final)) if final.is_dir() else []
    if not entries:
        return "new"
    finished = (final / CHECKPOINT_DIR / "state.json").is_file()
    if resume and finished:
        return "resume"
    foreign = [name for name in entries if not _is_run_file(name)]
    if foreign:
        shown = ", ".join(f"{n}/" if (final / n).is_dir() else n for n in foreign[:5])
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise OutputExistsError(
            f"{final} holds {shown}{more}, which a fine-tuning run does not write; force=True "
            "replaces only an earlier run's own files: give another folder, or move them away"
        )
    if resume:
        raise OutputExistsError(
            f"{final} holds no checkpoint to resume from (its run ended before its first epoch "
            "did); pass force=True to start it over"
        )
    if force:
        return "replace"
    if finished:
        raise OutputExistsError(
            f"{final} already holds a fine-tuning run; pass force=True to replace it or "
            "resume=True to continue it"
        )
    raise OutputExistsError(
        f"{final} holds a run that ended before its first epoch did; pass force=True to start "
        "it over"
    )


def _is_run_file(name: str) -> bool:
    """One of :data:`RUN_FILES`, or a temporary of one (``files.atomic_output``'s)."""
    return name in RUN_FILES or any(
        name.startswith(f".{own}.") and name.endswith(".tmp") for own in RUN_FILES
    )


def _check_writable(final: Path) -> None:
    """A one-line error unless a file can be created in ``final`` (or, if it does not exist
    yet, in its nearest existing parent)."""
    folder = next(p for p in (final, *final.parents) if p.exists())
    if not folder.is_dir():
        raise OutputError(f"cannot write {final}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OutputError(f"cannot write {final}: {folder}: {err.strerror or err}") from None


def _fingerprint(weights: Any, settings: FinetuneSettings) -> dict[str, Any]:
    """What a resumed run must share with the run it continues, by keyword (JSON values)."""
    channels = settings.channels
    values = {
        "weights": str(Path(weights).resolve()),
        "batch_size": settings.batch_size,
        "precision": settings.precision,
        "channels": channels if channels is None or isinstance(channels, str) else list(channels),
        "window": settings.window,
        "stride": settings.stride,
        **dataclasses.asdict(settings.recipe),
        **settings.model_options,
    }
    return json.loads(json.dumps(values))


def _check_same_settings(final: Path, before: dict[str, Any], now: dict[str, Any]) -> None:
    changed = [key for key in sorted({*before, *now}) if before.get(key) != now.get(key)]
    if changed:
        was = ", ".join(f"{key}={before.get(key)!r}" for key in changed)
        given = ", ".join(f"{key}={now.get(key)!r}" for key in changed)
        raise ConfigError(
            f"{final} was trained with {was}, not {given}; resume=True continues a run with "
            "the same settings"
        )


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
    fingerprint: dict[str, Any],
    replacing: bool,
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
    state = previous or {
        "labels": data.classes,
        "split": data.split,
        "settings": fingerprint,
        "history": [],
        "best_epoch": None,
        "wait": 0,
        "stopped_early": False,
        "epochs_done": 0,
    }
    state["stopped_early"] = False
    run = _Run(
        out,
        val,
        data.held_out.labels(),
        len(data.classes),
        settings.patience,
        settings.verbose,
        state,
        replacing,
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
    _load_arrays(run.checkpoint / "best.npz", model.weights)  # the best epoch's weights
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
