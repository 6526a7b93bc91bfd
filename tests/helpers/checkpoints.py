"""``torch.save`` checkpoints written by hand, without PyTorch: a zip in the ``torch.save``
layout whose ``data.pkl`` is emitted opcode by opcode (:func:`dumps`), naming
``torch._utils._rebuild_tensor_v2`` and the storage types as plain globals."""

from __future__ import annotations

import dataclasses
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

from eegdino_tf.checkpoint import read_state_dict
from eegdino_tf.errors import CheckpointError


@dataclasses.dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclasses.dataclass(frozen=True)
class Call:
    func: Any
    args: tuple


@dataclasses.dataclass(frozen=True)
class PersistentId:
    pid: tuple


@dataclasses.dataclass(frozen=True)
class Build:
    obj: Any
    state: dict


def _emit(obj: Any, out: bytearray) -> None:
    if isinstance(obj, Global):
        out += f"c{obj.module}\n{obj.name}\n".encode()
    elif isinstance(obj, Call):
        _emit(obj.func, out)
        _emit(obj.args, out)
        out += b"R"
    elif isinstance(obj, PersistentId):
        _emit(obj.pid, out)
        out += b"Q"
    elif isinstance(obj, Build):
        _emit(obj.obj, out)
        _emit(obj.state, out)
        out += b"b"
    elif isinstance(obj, bool):
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, int):
        out += b"J" + struct.pack("<i", obj)
    elif isinstance(obj, str):
        data = obj.encode()
        out += b"X" + struct.pack("<I", len(data)) + data
    elif isinstance(obj, tuple):
        out += b"("
        for item in obj:
            _emit(item, out)
        out += b"t"
    elif isinstance(obj, dict):
        out += b"}("
        for key, value in obj.items():
            _emit(key, out)
            _emit(value, out)
        out += b"u"
    else:
        raise TypeError(type(obj))


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` (built from the node types above and plain values), protocol 2."""
    out = bytearray(b"\x80\x02")
    _emit(obj, out)
    return bytes(out + b".")


def tensor(key: str, storage_type: str, numel: int, offset: int, shape, strides) -> Call:
    """What ``torch.save`` pickles for a tensor viewing storage ``key``."""
    storage = PersistentId(("storage", Global("torch", storage_type), key, "cpu", numel))
    hooks = Call(Global("collections", "OrderedDict"), ())
    rebuild = Global("torch._utils", "_rebuild_tensor_v2")
    return Call(rebuild, (storage, offset, tuple(shape), tuple(strides), False, hooks))


def write_checkpoint(
    path: Path, pickled: bytes, storages: dict[str, bytes], byteorder: str = "little"
) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", byteorder)
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
        archive.writestr("archive/version", "3\n")
    return path


def rewrite_zip(source: Path, target: Path, drop: str) -> Path:
    """Copy a zip, leaving out the entry whose name ends with ``drop``."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith(drop):
                dst.writestr(info, src.read(info))
    return target


def error_of(path: Path) -> str:
    """The one-line message ``read_state_dict`` raises for ``path``."""
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert "\n" not in message
    return message
