"""Fine-tune a classifier on labelled recordings listed in a manifest CSV.

    result = finetune_recordings("manifest.csv", "eeg_dino_small.safetensors", "run1")

The manifest has a header ``path,label`` (one label per whole recording) or
``path,start_s,end_s,label`` (labelled events), and optionally a ``subject`` column; paths are
relative to the manifest's folder. Labels are any strings, mapped to class indices in sorted
order. Windows come from the recording pipeline (:func:`eegdino_tf.io.open_recording`: the
same channel matching, units and resampling as ``encode``): every window of a whole recording,
or the windows lying inside an event. Recordings are split into training and held-out sets by
file or by subject, stratified by label, seeded. Training uses the recipe of
:mod:`eegdino_tf.finetune`; after each epoch the held-out windows are scored (balanced
accuracy, Cohen's kappa, weighted F1, and for two classes AUROC and AUC-PR), the best epoch by
balanced accuracy is kept and restored, and training stops after ``patience`` epochs without
improvement. Everything is checked before training starts.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eegdino_tf.config import SAMPLING_RATE
from eegdino_tf.errors import (
    ConfigError,
    EEGDinoError,
    OutputExistsError,
    RecordingError,
    require,
)
from eegdino_tf.files import atomic_output

if TYPE_CHECKING:
    from eegdino_tf.finetune import FinetuneRecipe

#: Held-out metrics written per epoch (AUROC and AUC-PR for two classes only).
METRICS = ("balanced_accuracy", "cohen_kappa", "f1_weighted", "auroc", "auc_pr")
#: Folder inside the output holding what ``resume=True`` needs.
CHECKPOINT_DIR = "checkpoint"


@dataclasses.dataclass(frozen=True)
class ManifestRow:
    """One manifest line: a recording (or an event in it) and its label.

    Attributes:
        row: the line's number in the CSV (the header is line 1), or the item's index + 1
            for rows given from Python.
        path: the recording, resolved against the manifest's folder; from Python also an
            :class:`InMemorySource` holding an ``mne.io.Raw``.
        label: the class name.
        start_s, end_s: the event's span in seconds (``None`` for a whole recording).
        subject: the subject id, if the manifest has a ``subject`` column.
    """

    row: int
    path: Path | InMemorySource
    label: str
    start_s: float | None = None
    end_s: float | None = None
    subject: str | None = None

    def where(self) -> str:
        return f"manifest row {self.row} ({self.name})"

    @property
    def name(self) -> str:
        """The file name, or for an in-memory recording its type and row."""
        if isinstance(self.path, Path):
            return self.path.name
        return f"{type(self.path.raw).__name__} of row {self.row}"


@dataclasses.dataclass(eq=False)
class InMemorySource:
    """An ``mne.io.Raw`` given from Python, hashed by identity (Raw's own hash reads data)."""

    raw: Any


def _opened(source: Path | InMemorySource, channels: Any) -> Any:
    from eegdino_tf.io import open_recording

    return open_recording(getattr(source, "raw", source), channels=channels)


def rows_from_python(items: Sequence[dict[str, Any]]) -> list[ManifestRow]:
    """Manifest rows given in Python: dicts with ``source`` (a path or an ``mne.io.Raw``) and
    ``label``, optionally ``start_s`` / ``end_s`` (an event) and ``subject``; checked like a
    CSV's rows."""
    rows, held = [], {}
    for number, item in enumerate(items, start=1):
        where = f"row {number}"
        unknown = set(item) - {"source", "label", "start_s", "end_s", "subject"}
        if unknown or "source" not in item or not str(item.get("label", "")).strip():
            raise RecordingError(
                f"{where}: needs source= and a non-empty label= (and optionally start_s=, "
                f"end_s=, subject=), got keys {sorted(item)}"
            )
        source = item["source"]
        if isinstance(source, (str, os.PathLike)):
            source = Path(source)
            if not source.is_file():
                raise RecordingError(f"{where}: {source}: no such file")
        elif isinstance(source, np.ndarray):
            raise RecordingError(f"{where}: wrap an array in mne.io.RawArray (with its sfreq)")
        else:
            source = held.setdefault(id(source), InMemorySource(source))
        start, end = item.get("start_s"), item.get("end_s")
        if (start is None) != (end is None):
            raise RecordingError(f"{where}: an event needs both start_s= and end_s=")
        if start is not None and not (0 <= float(start) < float(end)):
            raise RecordingError(f"{where}: needs 0 <= start_s < end_s, got {start} and {end}")
        subject = item.get("subject")
        rows.append(
            ManifestRow(
                number,
                source,
                str(item["label"]).strip(),
                None if start is None else float(start),
                None if end is None else float(end),
                None if subject is None else str(subject),
            )
        )
    if not rows:
        raise RecordingError("no recordings given")
    return rows


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """The rows of a manifest CSV, checked: columns, files, labels, event spans."""
    manifest = Path(path)
    if not manifest.is_file():
        raise RecordingError(f"{manifest}: no such manifest file")
    with manifest.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        columns = [c.strip() for c in reader.fieldnames or []]
        allowed = {"path", "label", "start_s", "end_s", "subject"}
        unknown = [c for c in columns if c not in allowed]
        if unknown:
            raise RecordingError(
                f"{manifest}: unknown column(s) {', '.join(map(repr, unknown))}; the header is "
                "path,label or path,start_s,end_s,label (plus an optional subject)"
            )
        missing = [c for c in ("path", "label") if c not in columns]
        events = "start_s" in columns or "end_s" in columns
        if events:
            missing += [c for c in ("start_s", "end_s") if c not in columns]
        if missing:
            raise RecordingError(
                f"{manifest}: missing column(s) {', '.join(map(repr, missing))}; the header is "
                "path,label or path,start_s,end_s,label (plus an optional subject)"
            )
        rows = []
        for number, raw in enumerate(reader, start=2):
            values = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            if not any(values.values()):
                continue  # a blank line
            rows.append(_parse_row(manifest, number, values, events, "subject" in columns))
    if not rows:
        raise RecordingError(f"{manifest} lists no recordings")
    return rows


def _parse_row(
    manifest: Path, number: int, values: dict[str, str], events: bool, subjects: bool
) -> ManifestRow:
    where = f"{manifest} row {number}"
    if not values.get("path"):
        raise RecordingError(f"{where}: empty path")
    path = Path(values["path"])
    path = path if path.is_absolute() else manifest.parent / path
    if not path.is_file():
        raise RecordingError(f"{where}: {values['path']}: no such file ({path})")
    label = values.get("label", "")
    if not label:
        raise RecordingError(f"{where}: empty label")
    start = end = None
    if events:
        try:
            start, end = float(values["start_s"]), float(values["end_s"])
        except ValueError:
            raise RecordingError(
                f"{where}: start_s and end_s must be numbers of seconds, got "
                f"{values['start_s']!r} and {values['end_s']!r}"
            ) from None
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
            raise RecordingError(f"{where}: needs 0 <= start_s < end_s, got {start:g} and {end:g}")
    subject = values.get("subject") if subjects else None
    if subjects and not subject:
        raise RecordingError(f"{where}: empty subject")
    return ManifestRow(number, path, label, start, end, subject)


def label_mapping(rows: Sequence[ManifestRow]) -> dict[str, int]:
    """Class name -> index, in sorted order; an error for fewer than 2 classes."""
    names = sorted({row.label for row in rows})
    if len(names) < 2:
        raise RecordingError(
            f"the manifest has {len(names)} class(es) ({', '.join(names)}); a classifier needs "
            "at least 2"
        )
    return {name: index for index, name in enumerate(names)}


@dataclasses.dataclass
class _Plan:
    """Where each window comes from: ``windows[path] = [(start sample, class), ...]``."""

    windows: dict[Path, list[tuple[int, int]]]
    n_channels: int

    @property
    def count(self) -> int:
        return sum(len(w) for w in self.windows.values())

    def labels(self) -> np.ndarray:
        return np.array([c for w in self.windows.values() for _, c in w], dtype=np.int32)


def plan_windows(
    rows: Sequence[ManifestRow],
    classes: dict[str, int],
    *,
    channels: Sequence[str] | str | None = None,
    window: float = 10.0,
    stride: float | None = None,
) -> _Plan:
    """Open every recording (headers only) and list its windows; an error for a row that
    gives no whole window."""

    windows: dict[Path, list[tuple[int, int]]] = defaultdict(list)
    n_channels = None
    size = round(float(window) * SAMPLING_RATE)
    starts_of: dict[Path, np.ndarray] = {}
    for row in rows:
        if row.path not in starts_of:
            try:
                recording = _opened(row.path, channels)
                starts_of[row.path] = recording.window_starts(window, stride)
            except RecordingError as err:
                raise RecordingError(f"{row.where()}: {err}") from None
            n_channels = n_channels or len(recording.channels)
            if len(recording.channels) != n_channels:
                raise RecordingError(f"{row.where()}: channel count differs from the others")
        starts = starts_of[row.path]
        if row.start_s is not None:
            first = round(row.start_s * SAMPLING_RATE)
            last = round(row.end_s * SAMPLING_RATE)
            starts = starts[(starts >= first) & (starts + size <= last)]
            if not len(starts):
                raise RecordingError(
                    f"{row.where()}: the event [{row.start_s:g}, {row.end_s:g}] s holds no whole "
                    f"window of window={window:g} s (stride={stride!r}); use a shorter window"
                )
        windows[row.path].extend((int(s), classes[row.label]) for s in starts)
    for path in windows:
        windows[path].sort()
    return _Plan(dict(windows), int(n_channels or 0))


def split_rows(
    rows: Sequence[ManifestRow],
    *,
    split_by: str = "file",
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[list[ManifestRow], list[ManifestRow]]:
    """``(train, held_out)`` rows: whole files (or subjects) go to one side, stratified by each
    group's most common label, so both sides get every class that has groups enough."""
    if split_by not in ("file", "subject"):
        raise ConfigError(f"split_by={split_by!r} must be 'file' or 'subject'")
    if not 0 < float(val_fraction) < 1:
        raise ConfigError(f"val_fraction={val_fraction!r} must be between 0 and 1")
    if split_by == "subject" and any(row.subject is None for row in rows):
        raise RecordingError("split_by='subject' needs a 'subject' column in the manifest")
    groups: dict[str, list[ManifestRow]] = defaultdict(list)
    first_row: dict[int, int] = {}  # an in-memory recording: named by the first row with it
    for row in rows:
        if isinstance(row.path, Path):
            file_key = str(row.path)
        else:
            file_key = f"recording of row {first_row.setdefault(id(row.path), row.row):06d}"
        groups[file_key if split_by == "file" else str(row.subject)].append(row)
    by_label: dict[str, list[str]] = defaultdict(list)
    for key, members in sorted(groups.items()):
        by_label[Counter(r.label for r in members).most_common(1)[0][0]].append(key)
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for label in sorted(by_label):
        keys = list(by_label[label])
        rng.shuffle(keys)
        if len(keys) >= 2:
            held.update(keys[: min(len(keys) - 1, max(1, round(val_fraction * len(keys))))])
    what = "files" if split_by == "file" else "subjects"
    if not held:
        raise RecordingError(
            f"split_by={split_by!r} with val_fraction={val_fraction:g} leaves the held-out split "
            f"empty ({len(groups)} {what}, no class with 2 or more); add recordings"
        )
    train = [r for k, members in groups.items() if k not in held for r in members]
    val = [r for k, members in groups.items() if k in held for r in members]
    if len({r.label for r in train}) < 2:
        raise RecordingError(
            f"split_by={split_by!r} leaves fewer than 2 classes to train on; add {what}"
        )
    return train, val


def _dataset(plan: _Plan, channels: Any, window: float, stride: float | None) -> Any:
    """A ``tf.data`` dataset of ``(x, class)`` in plan order, streamed from the files."""
    import tensorflow as tf

    def generate() -> Iterator[tuple[np.ndarray, np.int32]]:
        for path, wanted in plan.windows.items():
            recording = _opened(path, channels)
            labels: dict[int, list[int]] = defaultdict(list)
            for start, label in wanted:
                labels[start].append(label)
            last = wanted[-1][0]
            for start_s, x in recording.windows(window, stride):
                start = round(start_s * SAMPLING_RATE)
                for label in labels.get(start, ()):
                    yield x, np.int32(label)
                if start >= last:
                    break

    size = round(float(window) * SAMPLING_RATE)
    spec = (
        tf.TensorSpec([plan.n_channels, size], tf.float32),
        tf.TensorSpec([], tf.int32),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=spec)
    return dataset.apply(tf.data.experimental.assert_cardinality(plan.count))


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


def _keras_callbacks():
    """The callbacks' classes, defined once Keras is imported."""
    import keras

    from eegdino_tf.finetune import UnfreezeEncoder

    class Resumable(UnfreezeEncoder):
        """:class:`UnfreezeEncoder` that also starts right when training resumes mid-way."""

        def __init__(self, epochs: int, initial_epoch: int):
            super().__init__(epochs)
            self.initial_epoch = initial_epoch

        def on_train_begin(self, logs=None):
            self._set(self.initial_epoch < self.epochs)

    class Evaluate(keras.callbacks.Callback):
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
            shown = ", ".join(
                f"{k} {entry[k]:.4f}" for k in ("loss", *METRICS) if entry[k] is not None
            )
            if run.verbose:
                print(f"epoch {epoch + 1}: {shown}", flush=True)
            if run.state["wait"] >= run.patience:
                run.state["stopped_early"] = True
                self.model.stop_training = True
            run.save_checkpoint(self.model)

    return Resumable, Evaluate


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
        tmp = self.checkpoint / "state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.checkpoint / "state.json")

    def load_checkpoint(self, model: Any) -> None:
        """Restore what :meth:`save_checkpoint` saved."""
        _load_arrays(self.checkpoint / "last.npz", model.weights)
        _load_arrays(self.checkpoint / "optimizer.npz", model.optimizer.variables)


def _save_arrays(path: Path, variables: Sequence[Any]) -> None:
    """The variables' values, in order, as an ``.npz`` (written whole, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as file:
        np.savez(file, **{f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)})
    os.replace(tmp, path)


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
    *,
    epochs: int = 30,
    batch_size: int = 16,
    precision: str = "float32",
    split_by: str = "file",
    val_fraction: float = 0.2,
    patience: int = 5,
    recipe: FinetuneRecipe | None = None,
    resume: bool = False,
    force: bool = False,
    seed: int = 0,
    channels: Sequence[str] | str | None = None,
    window: float = 10.0,
    stride: float | None = None,
    verbose: Any = 2,
    **model_options: Any,
) -> dict[str, Any]:
    """Fine-tune a classifier from ``weights`` (any layout, ``.pt`` too) on the manifest's
    recordings (a CSV path, or rows from Python: see :func:`rows_from_python`, which also
    take ``mne.io.Raw`` sources); write ``classifier.safetensors``, ``metrics.json`` and
    ``curves.png`` (if matplotlib is installed) into ``output_dir``, each written whole then
    renamed.
    ``output_dir/checkpoint/`` (last and best weights, optimizer, state) is written after
    every epoch and survives an interruption, so ``resume=True`` continues from the last
    finished epoch; a run that fails before its first epoch ends leaves nothing.

    ``model_options`` go to :func:`~eegdino_tf.load_encoder` (``norm_groups``, ``dropout``,
    ``drop_path``, ...; ``head_dropout`` to the head). ``resume=True`` continues an earlier
    run in ``output_dir`` from its last finished epoch, up to ``epochs``. ``verbose`` is
    Keras' (0, 1 or 2). Returns ``{"model", "metrics", "output_dir", "files"}``; the model
    has the best epoch's weights.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r} must be a whole number >= 1")
    require("sklearn.metrics", "finetune")  # before anything is trained
    final = Path(output_dir)
    resuming = bool(resume) and final.exists()
    if resuming and not (final / CHECKPOINT_DIR / "state.json").is_file():
        raise RecordingError(f"{final} holds no checkpoint to resume from (resume=True)")
    if final.exists() and not (force or resuming):
        raise OutputExistsError(
            f"{final} already exists; pass force=True to overwrite it or resume=True to continue"
        )
    from_file = isinstance(manifest, (str, os.PathLike))
    rows = read_manifest(manifest) if from_file else rows_from_python(manifest)
    folder = Path(manifest).parent if from_file else Path.cwd()
    classes = label_mapping(rows)
    train_rows, val_rows = split_rows(rows, split_by=split_by, val_fraction=val_fraction, seed=seed)
    train_plan = plan_windows(train_rows, classes, channels=channels, window=window, stride=stride)
    val_plan = plan_windows(val_rows, classes, channels=channels, window=window, stride=stride)
    if train_plan.n_channels != val_plan.n_channels:
        raise RecordingError("the training and held-out recordings have different channel counts")
    split = {
        "split_by": split_by,
        "val_fraction": val_fraction,
        "seed": seed,
        "train": _relative(train_rows, folder),
        "held_out": _relative(val_rows, folder),
        "windows": {"train": train_plan.count, "held_out": val_plan.count},
    }
    previous = None
    if resuming:
        previous = json.loads((final / CHECKPOINT_DIR / "state.json").read_text())
        if previous["labels"] != classes or previous["split"] != split:
            raise RecordingError(
                f"{final} was trained on another manifest, split or window setting; resume "
                "needs the same ones"
            )
        if previous["epochs_done"] >= epochs:
            raise ConfigError(
                f"{final} has already run {previous['epochs_done']} epoch(s); pass a larger "
                f"epochs= than epochs={epochs} to continue"
            )

    # Trained in place: ``checkpoint/`` survives an interruption (so ``resume=True`` continues
    # it); the artifacts are each written whole, then renamed, at the end.
    if final.exists() and not resuming:
        shutil.rmtree(final)  # force=True
    (final / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    try:
        result = _train(
            final,
            weights,
            train_plan,
            val_plan,
            classes,
            split,
            previous,
            epochs=epochs,
            batch_size=batch_size,
            precision=precision,
            patience=patience,
            recipe=recipe,
            seed=seed,
            channels=channels,
            window=window,
            stride=stride,
            verbose=verbose,
            model_options=model_options,
        )
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
    train_plan: _Plan,
    val_plan: _Plan,
    classes: dict[str, int],
    split: dict[str, Any],
    previous: dict[str, Any] | None,
    *,
    epochs: int,
    batch_size: int,
    precision: str,
    patience: int,
    recipe: Any,
    seed: int,
    channels: Any,
    window: float,
    stride: float | None,
    verbose: Any,
    model_options: dict[str, Any],
) -> dict[str, Any]:
    import keras

    import eegdino_tf
    from eegdino_tf.finetune import (
        FinetuneRecipe,
        UnfreezeEncoder,
        class_weights,
        compile_for_finetuning,
    )
    from eegdino_tf.weights import save_weights

    keras.utils.set_random_seed(seed)
    options = dict(model_options)
    head_dropout = options.pop("head_dropout", (0.5, 0.3))
    encoder = eegdino_tf.load_encoder(weights, precision=precision, **options)
    model = eegdino_tf.EEGDinoClassifier(encoder, len(classes), head_dropout=head_dropout)

    train_labels = train_plan.labels()
    train = (
        _dataset(train_plan, channels, window, stride)
        .shuffle(min(train_plan.count, 1024), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(2)
    )
    val = _dataset(val_plan, channels, window, stride).batch(batch_size).prefetch(2)
    recipe = recipe or FinetuneRecipe()
    callbacks = compile_for_finetuning(model, recipe, steps_per_epoch=len(train), epochs=epochs)
    checkpoint = out / CHECKPOINT_DIR
    state = previous or {
        "labels": classes,
        "split": split,
        "history": [],
        "best_epoch": None,
        "wait": 0,
        "stopped_early": False,
        "epochs_done": 0,
    }
    state["stopped_early"] = False
    run = _Run(checkpoint, val, val_plan.labels(), len(classes), patience, verbose, state)
    initial_epoch = state["epochs_done"]
    Resumable, Evaluate = _keras_callbacks()
    callbacks = [
        Resumable(c.epochs, initial_epoch) if isinstance(c, UnfreezeEncoder) else c
        for c in callbacks
    ]
    if previous is not None:
        model.optimizer.build([v for v in model.weights if v.dtype == "float32"])
        run.load_checkpoint(model)
    model.fit(
        train,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=[*callbacks, Evaluate(run)],
        class_weight=class_weights(train_labels),
        shuffle=False,  # the dataset shuffles itself
        verbose=verbose,
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
        "labels": classes,
        "split": split,
        "weights": str(weights),
        "window_s": window,
        "stride_s": stride,
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
