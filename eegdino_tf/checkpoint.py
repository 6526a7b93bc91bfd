"""Read ``torch.save`` checkpoints without PyTorch and without running their pickles.

A ``torch.save`` file (PyTorch >= 1.6) is a zip archive: ``<archive>/data.pkl`` pickles the
saved object, and each tensor's bytes sit in a record ``<archive>/data/<key>``. Unpickling an
untrusted pickle can run arbitrary code, so :class:`_CheckpointUnpickler` resolves only the
few globals that a checkpoint of tensors needs (the tensor rebuild functions, the storage
types, ``OrderedDict``) to local, inert implementations; any other global is refused before
it is imported, and nothing in the file is ever executed. Tensors come back as NumPy arrays.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import types
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np

from eegdino_tf.errors import CheckpointError

#: Element type of each ``torch.<Name>Storage`` a pickle may name.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}

#: Entries of a checkpoint dict that may hold the state dict, in the order they are tried.
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")

RESAVE_HINT = (
    "re-save it with PyTorch >= 1.6: torch.save(torch.load(f, weights_only=True), g) "
    "(the zip format, _use_new_zipfile_serialization=True, is the default there)"
)


class _StorageType(NamedTuple):
    """What ``torch.<Name>Storage`` unpickles to: just the element dtype (immutable)."""

    name: str
    dtype: np.dtype


class _Storage(NamedTuple):
    """One ``data/<key>`` record, decoded to a flat array (immutable)."""

    key: str
    data: np.ndarray


class _CheckpointUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` with an allow-list of globals; storages come from the zip."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, path: Path, byteorder: str):
        super().__init__(io.BytesIO(archive.read(f"{prefix}data.pkl")))
        self.archive, self.prefix, self.path, self.byteorder = archive, prefix, path, byteorder
        self.storages: dict[tuple[str, str], _Storage] = {}
        self.allowed: dict[tuple[str, str], Any] = {
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): self.rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self.rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): self.rebuild_parameter,
            # Training scripts often save their argparse arguments; keep them as plain data.
            ("argparse", "Namespace"): types.SimpleNamespace,
        }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        if module == "torch" and name.endswith("Storage"):
            raise CheckpointError(
                f"{self.path} has a tensor of unsupported storage type torch.{name}; "
                f"supported: {', '.join(STORAGE_DTYPES)}"
            )
        raise CheckpointError(
            f"refusing to load {self.path}: the pickle asks for {module}.{name}, which is not "
            "a tensor or a plain container (a checkpoint holding code or whole pickled models "
            "is not loaded; re-save only its state_dict)"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(
                f"{self.path}: unsupported persistent id {str(pid)[:80]}; only tensor "
                "storages are supported"
            )
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self.path}: storage {key!r} has no storage type")
        cache_key = (str(key), storage_type.name)
        if cache_key not in self.storages:
            self.storages[cache_key] = self._read_storage(str(key), storage_type.dtype, numel)
        return self.storages[cache_key]

    def _read_storage(self, key: str, dtype: np.dtype, numel: Any) -> _Storage:
        record = f"{self.prefix}data/{key}"
        try:
            raw = self.archive.read(record)
        except KeyError:
            raise CheckpointError(
                f"{self.path} is incomplete: storage record {record!r} is missing"
            ) from None
        if not isinstance(numel, int) or numel < 0 or len(raw) < numel * dtype.itemsize:
            raise CheckpointError(
                f"{self.path}: storage record {record!r} holds {len(raw)} bytes, too few for "
                f"{numel} {dtype.name} elements"
            )
        data = np.frombuffer(raw, dtype=dtype, count=numel)
        return _Storage(key, data.byteswap() if self.byteorder == "big" else data)

    def rebuild_tensor(
        self,
        storage: _Storage,
        storage_offset: int,
        size: tuple[int, ...],
        stride: tuple[int, ...],
        *_ignored: Any,
    ) -> np.ndarray:
        """``torch._utils._rebuild_tensor_v2``: a strided view of a storage, copied out."""
        if not isinstance(storage, _Storage):
            raise CheckpointError(f"{self.path}: a tensor is built from a non-storage object")
        shape, strides, offset = _ints(size), _ints(stride), _ints((storage_offset,))
        if shape is None or strides is None or offset is None or len(shape) != len(strides):
            raise CheckpointError(
                f"{self.path}: storage {storage.key!r} has a tensor with a malformed shape "
                f"{size!r}, strides {stride!r} or offset {storage_offset!r}"
            )
        data = storage.data
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype=data.dtype)
        extent = offset[0] + sum((n - 1) * s for n, s in zip(shape, strides, strict=True)) + 1
        if extent > data.size or math.prod(shape) > data.size:
            raise CheckpointError(
                f"{self.path}: storage {storage.key!r} holds {data.size} elements, too few for "
                f"a tensor of shape {list(shape)}, strides {list(strides)}, offset {offset[0]}"
            )
        view = np.lib.stride_tricks.as_strided(
            data[offset[0] :],
            shape=shape,
            strides=tuple(s * data.itemsize for s in strides),
            writeable=False,
        )
        return np.array(view, order="C")

    @staticmethod
    def rebuild_parameter(data: np.ndarray, *_ignored: Any) -> np.ndarray:
        """``torch._utils._rebuild_parameter[_with_state]``: a parameter is its tensor."""
        return data


def _ints(values: Any) -> tuple[int, ...] | None:
    """``values`` as a tuple of non-negative ints, or None if it is not one."""
    if not isinstance(values, tuple | list):
        return None
    if not all(isinstance(v, int) and v >= 0 for v in values):
        return None
    return tuple(values)


def _open_archive(path: Path) -> zipfile.ZipFile:
    """Open a checkpoint's zip archive, with a one-line error for every way that fails."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a torch.save checkpoint file")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(b"\x80"):
        raise CheckpointError(
            f"{path} is a bare pickle, not a zip archive: the legacy torch.save format "
            f"(PyTorch < 1.6) or a plain pickle, which is not read; {RESAVE_HINT}"
        )
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        if head.startswith(b"PK"):
            raise CheckpointError(
                f"{path} is a truncated or corrupt zip archive ({err}); download or save it again"
            ) from None
        raise CheckpointError(
            f"{path} is not a torch.save checkpoint (not a zip archive; it starts with {head!r})"
        ) from None


def _archive_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    """The ``<archive>/`` folder that holds ``data.pkl``."""
    names = archive.namelist()
    found = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise CheckpointError(
            f"{path} is not a torch.save checkpoint: {what} '<archive>/data.pkl' record "
            f"(entries: {names[:5]})"
        )
    return found[0][: -len("data.pkl")]


def load_torch_checkpoint(path: str | os.PathLike) -> Any:
    """Unpickle a ``torch.save`` zip checkpoint safely; tensors become NumPy arrays.

    Only tensors, ``OrderedDict`` and plain Python values (plus ``argparse.Namespace``, read
    as a ``types.SimpleNamespace``) are accepted; anything else raises
    :class:`~eegdino_tf.errors.CheckpointError` naming the refused global, which is never
    imported. Every other problem (not a zip, truncated, missing record...) is also a
    one-line ``CheckpointError``.
    """
    path = Path(path)
    with _open_archive(path) as archive:
        try:
            return _load_archive(archive, path)
        except CheckpointError:
            raise
        except Exception as err:  # any decoding failure of untrusted bytes
            raise CheckpointError(
                f"{path}: malformed checkpoint ({type(err).__name__}: {err})"
            ) from None


def _load_archive(archive: zipfile.ZipFile, path: Path) -> Any:
    prefix = _archive_prefix(archive, path)
    names = set(archive.namelist())
    byteorder = "little"  # files from PyTorch < 1.10 have no byteorder record
    if f"{prefix}byteorder" in names:
        byteorder = archive.read(f"{prefix}byteorder").decode(errors="replace").strip()
    if byteorder not in ("little", "big"):
        raise CheckpointError(f"{path}: unknown byteorder record {byteorder!r}")
    return _CheckpointUnpickler(archive, prefix, path, byteorder).load()


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The state dict of a ``torch.save`` checkpoint, as name -> NumPy array.

    Taken from the checkpoint's ``state_dict``, ``model`` or ``model_state_dict`` entry (the
    first that is a dict), else the checkpoint itself if it is a flat name -> tensor dict.
    Dtypes are kept (``bfloat16`` as ``ml_dtypes.bfloat16``).
    """
    obj = load_torch_checkpoint(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    for key in STATE_DICT_KEYS:
        if isinstance(obj.get(key), Mapping):
            return _tensor_dict(obj[key], f"{path} entry {key!r}")
    if obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        return _tensor_dict(obj, str(path))
    raise CheckpointError(
        f"no state dict found in {path}: its top-level keys are {list(obj)[:10]}; expected a "
        f"{' / '.join(map(repr, STATE_DICT_KEYS))} entry or a flat name -> tensor dict"
    )


def _tensor_dict(state: Mapping, where: str) -> dict[str, np.ndarray]:
    bad = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, np.ndarray))]
    if bad:
        raise CheckpointError(
            f"{where} is not a state dict: {len(bad)} entries are not name -> tensor "
            f"(e.g. {bad[:3]})"
        )
    return dict(state)
