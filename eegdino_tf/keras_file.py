"""Our models' ``.keras`` files, checked within the limits that guard ``.pt`` files before Keras
inflates or builds anything in them.

A ``.keras`` file is a zip (``config.json``, ``metadata.json``, ``model.weights.h5``; Keras
stores its members uncompressed). Keras 3 itself refuses only a member that inflates past
4 GiB, so a 2 MB file whose weights inflate to 2 GiB would be read whole. Here, as for a
checkpoint (:mod:`eegdino_tf.checkpoint`): the zip's central directory may hold at most
``MAX_ZIP_DIRECTORY_BYTES``, only stored and deflated members are read, the members may not
occupy more bytes than the file has, nor inflate to more than ``MAX_INFLATE_RATIO`` times its
size; and the architecture in ``config.json`` may not need more weights than
``model.weights.h5`` holds.

:func:`eegdino_tf.load_keras` checks the file by its path, then loads it with Keras. A plain
``keras.models.load_model`` is covered too: Keras gives our classes' ``from_config`` the
config only, so :func:`check_loading` finds the archive Keras is reading (Keras 3's
``saving_lib`` has no hook for this) on the call stack, before the weights are read.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path
from typing import IO, Any

from eegdino_tf.checkpoint import MAX_INFLATE_RATIO, MAX_ZIP_DIRECTORY_BYTES
from eegdino_tf.config import EEGDinoConfig
from eegdino_tf.errors import WeightsError

#: The member of a ``.keras`` zip that holds the weights.
WEIGHTS_MEMBER = "model.weights.h5"
_READ_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
#: Where Keras 3 reads a ``.keras`` zip: the function, its module, its archive and file.
_KERAS_READER = ("_load_model_from_fileobj", "keras.src.saving.saving_lib", "zf", "fileobj")


def check_file(path: str | os.PathLike) -> None:
    """Raise :class:`WeightsError` unless ``path`` is a ``.keras`` zip within the limits (its
    central directory is measured before :mod:`zipfile` parses it)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            end = zipfile._EndRecData(handle)  # the end record ZipFile reads (stdlib helper)
    except OSError as err:
        raise WeightsError(f"cannot read {path}: {err.strerror or err}") from None
    if not end:
        raise WeightsError(f"{path} is not a .keras file (not a zip archive)")
    if end[zipfile._ECD_SIZE] > MAX_ZIP_DIRECTORY_BYTES:
        raise WeightsError(
            f"{path}: its zip central directory declares {end[zipfile._ECD_SIZE]} bytes, more "
            f"than MAX_ZIP_DIRECTORY_BYTES={MAX_ZIP_DIRECTORY_BYTES}; refused before reading it"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            check_archive(archive, size, str(path))
    except zipfile.BadZipFile as err:
        raise WeightsError(f"{path} is a truncated or corrupt .keras file ({err})") from None


def check_archive(archive: zipfile.ZipFile, size: int, name: str) -> None:
    """Raise :class:`WeightsError` if the members of ``archive`` (a file of ``size`` bytes,
    called ``name`` in the message) use another compression than stored or deflated, occupy
    more than the file, or inflate to more than ``MAX_INFLATE_RATIO`` times its size."""
    taken = inflated = 0
    for info in archive.infolist():
        if info.compress_type not in _READ_METHODS:
            raise WeightsError(
                f"{name}: zip member {info.filename!r} uses compression method "
                f"{info.compress_type}; a .keras file's members are stored or deflated"
            )
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise WeightsError(
                f"{name}: stored zip member {info.filename!r} declares {info.file_size} bytes "
                f"but occupies {info.compress_size}"
            )
        taken += info.compress_size
        inflated += info.file_size
    if taken > size:
        raise WeightsError(
            f"{name}: its zip members declare {taken} bytes, more than the file's {size} "
            "(overlapping or forged entries)"
        )
    if inflated > MAX_INFLATE_RATIO * size:
        raise WeightsError(
            f"{name}: its zip members inflate to {inflated} bytes, more than "
            f"MAX_INFLATE_RATIO={MAX_INFLATE_RATIO} times the file's {size} bytes; refused "
            "before inflating them"
        )


def check_loading(config: EEGDinoConfig) -> None:
    """When Keras is loading a ``.keras`` zip (``keras.models.load_model``), check the archive
    (:func:`check_archive`) and that its weights member holds at least the float32 weights of
    the transformer blocks ``config`` builds; outside such a load, do nothing."""
    found = _archive_being_loaded()
    if found is None:
        return
    archive, size = found
    name = getattr(archive, "filename", None) or "the .keras file"
    check_archive(archive, size, name)
    try:
        held = archive.getinfo(WEIGHTS_MEMBER).file_size
    except KeyError:
        return  # Keras' own error names the missing member
    dim, hidden = config.embed_dim, config.mlp_dim
    need = 4 * config.depth * (4 * dim * dim + 2 * dim * hidden)  # qkv, proj, fc1, fc2
    if need > held:
        raise WeightsError(
            f"{name}: its config describes a model of depth {config.depth}, width {dim} and "
            f"MLP width {hidden}, whose blocks alone take {need} bytes of weights; its "
            f"{WEIGHTS_MEMBER} holds {held}: refused before building it"
        )


def _archive_being_loaded() -> tuple[zipfile.ZipFile, int] | None:
    """The zip Keras 3's ``saving_lib`` is reading, and its file's size, from the call stack;
    None outside a ``.keras`` load (or with a Keras that reads it elsewhere)."""
    function, module, archive_name, file_name = _KERAS_READER
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == function and frame.f_globals.get("__name__") == module:
            archive = frame.f_locals.get(archive_name)
            size = _file_size(frame.f_locals.get(file_name))
            if isinstance(archive, zipfile.ZipFile) and size is not None:
                return archive, size
            return None
        frame = frame.f_back
    return None


def _file_size(handle: IO[bytes] | Any) -> int | None:
    """The size of an open file (without moving its position), or None."""
    try:
        return os.fstat(handle.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        pass
    try:
        here = handle.tell()
        end = handle.seek(0, os.SEEK_END)
        handle.seek(here)
        return int(end)
    except (AttributeError, OSError, ValueError):
        return None
