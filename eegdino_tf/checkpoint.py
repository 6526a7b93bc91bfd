"""Read ``torch.save`` checkpoints without PyTorch and without running their pickles.

A ``torch.save`` file (PyTorch >= 1.6) is a zip archive: ``<archive>/data.pkl`` pickles the
saved object, and each tensor's bytes sit in a record ``<archive>/data/<key>``. Unpickling an
untrusted pickle can run arbitrary code, so ``data.pkl`` is not given to :mod:`pickle`: a small
restricted pickle machine (:class:`_Unpickler`) walks its opcodes one by one
(:func:`pickletools.genops`, iteratively, never recursively) and builds only plain values,
containers, ``OrderedDict``, ``argparse.Namespace`` (as ``types.SimpleNamespace``) and
tensors. The few globals a checkpoint of tensors needs resolve to inert local stand-ins; any
other global is refused before it is imported, and nothing in the file is ever executed.
Tensors come back as NumPy arrays.

What a file may make us allocate is bounded by what it holds:

- the zip's central directory (one entry per record, all parsed when the zip is opened) may
  hold at most ``MAX_ZIP_DIRECTORY_BYTES``;
- a zip record is read only if its declared size fits the file: the records read together
  may not take more bytes than the file has, nor inflate to more than
  ``MAX_INFLATE_RATIO`` times its size (``torch.save`` stores records uncompressed; only
  stored and deflated records are read), and a storage is read only if its record declares
  enough bytes for the elements the pickle claims;
- a tensor is a view of its storage, shared by every reference, unless it is not C-contiguous
  there; such tensors are copied out, and all copies together may hold at most
  ``MAX_COPY_RATIO`` times the bytes of the storages read;
- the pickle machine refuses a ``data.pkl`` over ``MAX_PICKLE_BYTES``, over
  ``MAX_PICKLE_OPS`` opcodes (which bounds the objects it builds), containers nested deeper
  than ``MAX_PICKLE_DEPTH``, ints wider than ``MAX_INT_BITS``, dict keys and set elements
  other than str/bytes/int/float/bool/None (whose hashes are flat and cannot be made to
  collide in bulk), and any change to a container after it was placed inside another (so no
  cycles, and every recorded depth stays exact).

Every refusal, and every other way a file can be damaged, is one
:class:`~eegdino_tf.errors.CheckpointError` line.
"""

from __future__ import annotations

import collections
import math
import os
import pickletools
import reprlib
import types
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from itertools import islice
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

#: Largest ``data.pkl`` read, in bytes (the tiny pretraining fixture's: 12 KB for 96 tensors).
MAX_PICKLE_BYTES = 32 * 2**20
#: Most opcodes a ``data.pkl`` may hold (the tiny pretraining fixture's: 3,065 for 96 tensors);
#: each builds at most one object, so this bounds them, and the time the pickle takes.
MAX_PICKLE_OPS = 2**19
#: Deepest nesting of containers in a ``data.pkl`` (the fixtures': 5, with the tensors' args).
MAX_PICKLE_DEPTH = 100
#: Widest int a ``data.pkl`` may hold, in bits (int64 and uint64 fit).
MAX_INT_BITS = 64
#: Largest zip central directory read, in bytes (the tiny pretraining fixture's: 8 KB for 102
#: records); each record costs zipfile an object of some 500 bytes, built when it opens the file.
MAX_ZIP_DIRECTORY_BYTES = 4 * 2**20
#: How many times the file's size the zip records read may inflate to, all together.
MAX_INFLATE_RATIO = 4
#: How many times the bytes of the storages read all non-contiguous tensor copies may hold.
MAX_COPY_RATIO = 2

#: Dict keys and set elements read: their hashes are flat and cannot be made to collide in bulk.
_KEY_TYPES = frozenset({str, bytes, int, float, bool, type(None)})
#: Containers the pickle machine builds, with a recorded nesting depth.
_CONTAINER_TYPES = frozenset(
    {tuple, list, dict, set, frozenset, collections.OrderedDict, types.SimpleNamespace}
)
#: What a record of the zip may be compressed with (zipfile inflates these within bounds).
_READ_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_READ_CHUNK = 2**20
_MAX_NDIM = 64  # NumPy's


class _BriefRepr(reprlib.Repr):
    """Reprs cut short (3 levels, 60 characters a string); an array by its dtype and shape."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother = 3, 60, 60

    def repr_ndarray(self, array: np.ndarray, level: int) -> str:
        return f"<{array.dtype} array of shape {list(array.shape)}>"


_BRIEF = _BriefRepr()


def _brief(value: Any) -> str:
    """A short one-line repr of an untrusted value, for an error message (bounded work)."""
    return " ".join(_BRIEF.repr(value).split())


class _StorageType(NamedTuple):
    """What ``torch.<Name>Storage`` unpickles to: just the element dtype (immutable)."""

    name: str
    dtype: np.dtype


class _Storage(NamedTuple):
    """One ``data/<key>`` record, decoded to a flat array (immutable)."""

    key: str
    data: np.ndarray


class _Global(NamedTuple):
    """An allowed global: an inert name the pickle machine dispatches on (immutable)."""

    module: str
    name: str


class _Archive:
    """A checkpoint's zip, read record by record within what the file holds."""

    def __init__(self, archive: zipfile.ZipFile, path: Path, size: int) -> None:
        self.zip, self.path, self.size = archive, path, size
        self.taken = 0  # bytes of the file the records read so far occupy
        self.inflated = 0  # bytes they decompress to

    def declared_size(self, name: str) -> int | None:
        """The uncompressed size the zip declares for record ``name``; None if it is absent."""
        try:
            return self.zip.getinfo(name).file_size
        except KeyError:
            return None

    def read(self, name: str) -> bytearray:
        """Record ``name``, after checking its declared sizes against the file."""
        info = self.zip.getinfo(name)
        if info.compress_type not in _READ_METHODS:
            raise CheckpointError(
                f"{self.path}: zip record {_brief(name)} uses compression method "
                f"{info.compress_type}; only {' and '.join(_READ_METHODS.values())} records are "
                "read (torch.save stores them uncompressed)"
            )
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise CheckpointError(
                f"{self.path}: stored zip record {_brief(name)} declares {info.file_size} "
                f"bytes but occupies {info.compress_size}"
            )
        self.taken += info.compress_size
        self.inflated += info.file_size
        if self.taken > self.size:
            raise CheckpointError(
                f"{self.path}: its zip records declare {self.taken} bytes, more than the "
                f"file's {self.size} (overlapping or forged entries, at {_brief(name)})"
            )
        if self.inflated > MAX_INFLATE_RATIO * self.size:
            raise CheckpointError(
                f"{self.path}: zip record {_brief(name)} inflates to {info.file_size} bytes; the "
                f"records read would hold more than MAX_INFLATE_RATIO={MAX_INFLATE_RATIO} "
                f"times the file's {self.size} bytes"
            )
        buffer = bytearray(info.file_size)
        done = 0
        try:
            with self.zip.open(info) as handle:
                while done < len(buffer):
                    chunk = handle.read(min(_READ_CHUNK, len(buffer) - done))
                    if not chunk:
                        break
                    buffer[done : done + len(chunk)] = chunk
                    done += len(chunk)
                handle.read(1)  # reach the end of the record, where its CRC is checked
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(
                f"{self.path}: zip record {_brief(name)} is corrupt ({type(err).__name__}: "
                f"{_one_line(err)})"
            ) from None
        if done < len(buffer):
            raise CheckpointError(
                f"{self.path}: zip record {_brief(name)} is truncated: {done} of its "
                f"{len(buffer)} bytes"
            )
        return buffer


class _Unpickler:
    """A restricted pickle machine for ``data.pkl``: plain values, containers and tensors.

    It keeps the state of :class:`pickle.Unpickler` (a stack, the marks, the memo) but runs
    only the opcodes a checkpoint needs, checks every limit as each opcode arrives, and
    records each container's nesting depth (``_depth``, by id; containers placed inside
    another are ``_sealed`` and may not change afterwards, so the depths stay exact).
    """

    def __init__(self, archive: _Archive, prefix: str, byteorder: str) -> None:
        self.archive, self.prefix, self.byteorder = archive, prefix, byteorder
        self.path = archive.path
        self.stack: list[Any] = []
        self.marks: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.storages: dict[str, _Storage] = {}
        self.storage_bytes = 0
        self.copied_bytes = 0
        self._depth: dict[int, int] = {}
        self._sealed: set[int] = set()
        self._calls: dict[_Global, Callable[..., Any]] = {
            _Global("collections", "OrderedDict"): self._ordered_dict,
            _Global("torch._utils", "_rebuild_tensor_v2"): self.rebuild_tensor,
            _Global("torch._utils", "_rebuild_parameter"): self.rebuild_parameter,
            _Global("torch._utils", "_rebuild_parameter_with_state"): self.rebuild_parameter,
            # Training scripts often save their argparse arguments; keep them as plain data.
            _Global("argparse", "Namespace"): self._namespace,
        }
        value_ops = (
            "INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT STRING BINSTRING "
            "SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8 UNICODE SHORT_BINUNICODE "
            "BINUNICODE BINUNICODE8"
        )
        self.ops: dict[str, Callable[[Any], None]] = dict.fromkeys(value_ops.split(), self._value)
        self.ops.update(
            NONE=lambda _: self._push(None),
            NEWTRUE=lambda _: self._push(True),
            NEWFALSE=lambda _: self._push(False),
            EMPTY_TUPLE=lambda _: self._push(self._tuple(())),
            EMPTY_LIST=lambda _: self._push(self._new([])),
            EMPTY_DICT=lambda _: self._push(self._new({})),
            EMPTY_SET=lambda _: self._push(self._new(set())),
            TUPLE=lambda _: self._push(self._tuple(self._pop_mark())),
            TUPLE1=lambda _: self._push(self._tuple(self._pop(1))),
            TUPLE2=lambda _: self._push(self._tuple(self._pop(2))),
            TUPLE3=lambda _: self._push(self._tuple(self._pop(3))),
            LIST=lambda _: self._push(self._extend(self._new([]), self._pop_mark())),
            DICT=lambda _: self._push(self._set_items(self._new({}), self._pop_mark())),
            FROZENSET=lambda _: self._push(self._frozenset(self._pop_mark())),
            APPEND=lambda _: self._into_top(self._extend, self._pop(1)),
            APPENDS=lambda _: self._into_top(self._extend, self._pop_mark()),
            SETITEM=lambda _: self._into_top(self._set_items, self._pop(2)),
            SETITEMS=lambda _: self._into_top(self._set_items, self._pop_mark()),
            ADDITEMS=lambda _: self._into_top(self._add_items, self._pop_mark()),
            MARK=lambda _: self._mark(),
            POP=lambda _: self.stack.pop() if self.stack else self._pop_mark(),
            POP_MARK=lambda _: self._pop_mark(),
            DUP=lambda _: self._push(self.stack[-1]),
            PUT=self._put,
            BINPUT=self._put,
            LONG_BINPUT=self._put,
            MEMOIZE=lambda _: self._put(len(self.memo)),
            GET=self._get,
            BINGET=self._get,
            LONG_BINGET=self._get,
            GLOBAL=lambda arg: self._push(self.find_class(*arg.split(" ", 1))),
            STACK_GLOBAL=lambda _: self._push(self._stack_global(*self._pop(2))),
            REDUCE=lambda _: self._push(self._call(*self._pop(2))),
            NEWOBJ=lambda _: self._push(self._call(*self._pop(2))),
            NEWOBJ_EX=lambda _: self._push(self._new_object_ex(*self._pop(3))),
            BUILD=lambda _: self._into_top(self._build, self.stack.pop()),
            BINPERSID=lambda _: self._push(self.persistent_load(self.stack.pop())),
            PERSID=lambda arg: self._push(self.persistent_load(arg)),
            PROTO=self._proto,
            FRAME=lambda _: None,
        )

    def load(self, data: bytes) -> Any:
        """Run ``data`` (a whole ``data.pkl``) and return the object it pickles."""
        for count, (opcode, arg, position) in enumerate(pickletools.genops(data), 1):
            if count > MAX_PICKLE_OPS:
                raise CheckpointError(
                    f"{self.path}: data.pkl holds more than MAX_PICKLE_OPS={MAX_PICKLE_OPS} opcodes"
                )
            if opcode.name == "STOP":
                break
            run = self.ops.get(opcode.name)
            if run is None:
                raise CheckpointError(
                    f"{self.path}: data.pkl uses the pickle opcode {opcode.name} (at byte "
                    f"{position}), which a checkpoint of tensors does not need; not read"
                )
            try:
                run(arg)
            except CheckpointError:
                raise
            except (LookupError, TypeError, AttributeError, ValueError, ArithmeticError) as err:
                raise CheckpointError(
                    f"{self.path}: malformed checkpoint ({type(err).__name__}: "
                    f"{_one_line(err)}) at data.pkl opcode {opcode.name}, byte {position}"
                ) from None
        return self.stack.pop()  # genops raises ValueError for a pickle without a STOP

    # -- values, marks and the memo -----------------------------------------------------------

    def _value(self, value: Any) -> None:
        if type(value) is int and value.bit_length() > MAX_INT_BITS:
            raise CheckpointError(
                f"{self.path}: data.pkl holds an int of {value.bit_length()} bits, wider than "
                f"MAX_INT_BITS={MAX_INT_BITS}"
            )
        self._push(value)

    def _proto(self, version: int) -> None:
        if not 0 <= version <= 5:
            raise CheckpointError(f"{self.path}: data.pkl has unknown pickle protocol {version}")

    def _push(self, value: Any) -> None:
        self.stack.append(value)

    def _mark(self) -> None:
        self.marks.append(self.stack)
        self.stack = []

    def _pop_mark(self) -> list[Any]:
        items, self.stack = self.stack, self.marks.pop()
        return items

    def _into_top(self, add: Callable[[Any, Any], Any], what: Any) -> None:
        """``add(top, what)``, where ``top`` is what the stack holds once ``what`` is off it."""
        add(self.stack[-1], what)

    def _pop(self, n: int) -> list[Any]:
        if len(self.stack) < n:
            raise IndexError(f"{n} values needed, {len(self.stack)} on the stack")
        items = self.stack[-n:]
        del self.stack[-n:]
        return items

    def _put(self, index: int) -> None:
        if type(index) is not int or not 0 <= index < 2**32:  # LONG_BINPUT's range
            raise CheckpointError(f"{self.path}: data.pkl stores memo entry {_brief(index)}")
        self.memo[index] = self.stack[-1]

    def _get(self, index: int) -> None:
        if type(index) is not int or index not in self.memo:
            raise CheckpointError(
                f"{self.path}: data.pkl reads memo entry {_brief(index)}, never stored"
            )
        self.stack.append(self.memo[index])

    # -- containers: depth, sealing and keys --------------------------------------------------

    def _new(self, container: Any) -> Any:
        """Record a container just built, empty or from items not yet counted."""
        self._depth[id(container)] = 1
        self._sealed.discard(id(container))
        return container

    def _nest(self, parent: Any, children: Iterable[Any]) -> None:
        """Record that ``children`` now sit inside ``parent`` (an unsealed container)."""
        key, depths = id(parent), self._depth
        if key in self._sealed:
            raise CheckpointError(
                f"{self.path}: data.pkl changes a {type(parent).__name__} after placing it "
                "inside another object (a cycle, or a shared object modified later); not read"
            )
        depth = depths[key]
        for child in children:
            if type(child) in _CONTAINER_TYPES:
                child_key = id(child)
                if child_key == key:
                    raise CheckpointError(
                        f"{self.path}: data.pkl puts a {type(child).__name__} inside itself"
                    )
                self._sealed.add(child_key)
                depth = max(depth, depths[child_key] + 1)
        if depth > MAX_PICKLE_DEPTH:
            raise CheckpointError(
                f"{self.path}: data.pkl nests containers deeper than "
                f"MAX_PICKLE_DEPTH={MAX_PICKLE_DEPTH}"
            )
        depths[key] = depth

    def _keys(self, keys: Iterable[Any]) -> None:
        for key in keys:
            if type(key) not in _KEY_TYPES:
                raise CheckpointError(
                    f"{self.path}: data.pkl has a dict key or set element of type "
                    f"{type(key).__name__}; only str, bytes, int, float, bool and None are read"
                )

    def _tuple(self, items: list[Any]) -> tuple:
        result = self._new(tuple(items))
        self._nest(result, items)
        return result

    def _frozenset(self, items: list[Any]) -> frozenset:
        self._keys(items)
        return self._new(frozenset(items))

    def _extend(self, target: Any, items: list[Any]) -> list:
        if type(target) is not list:
            raise CheckpointError(f"{self.path}: data.pkl appends to a {type(target).__name__}")
        self._nest(target, items)
        target.extend(items)
        return target

    def _set_items(self, target: Any, items: list[Any]) -> dict:
        if not isinstance(target, dict) or len(items) % 2:
            raise CheckpointError(
                f"{self.path}: data.pkl sets {len(items)} items on a {type(target).__name__}; "
                "expected key, value pairs on a dict"
            )
        keys, values = items[::2], items[1::2]
        self._keys(keys)
        self._nest(target, values)
        target.update(zip(keys, values, strict=True))
        return target

    def _add_items(self, target: Any, items: list[Any]) -> None:
        if type(target) is not set:
            raise CheckpointError(
                f"{self.path}: data.pkl adds set items to a {type(target).__name__}"
            )
        self._keys(items)
        self._nest(target, items)
        target.update(items)

    def _build(self, target: Any, state: Any) -> None:
        """BUILD: set attributes (only a namespace or an ``OrderedDict`` has any to set)."""
        if type(state) is not dict or not all(type(k) is str for k in state):
            raise CheckpointError(
                f"{self.path}: data.pkl sets the state of a {type(target).__name__} from a "
                f"{type(state).__name__}; only a dict of attribute names is read"
            )
        attributes = target.__dict__
        self._nest(target, state.values())
        attributes.update(state)

    # -- globals and calls --------------------------------------------------------------------

    def find_class(self, module: str, name: str) -> _Global | _StorageType:
        """The inert stand-in for an allowed global; anything else is refused, unimported."""
        if _Global(module, name) in self._calls:
            return _Global(module, name)
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        if module == "torch" and name.endswith("Storage"):
            raise CheckpointError(
                f"{self.path} has a tensor of unsupported storage type torch.{_clip(name)}; "
                f"supported: {', '.join(STORAGE_DTYPES)}"
            )
        raise CheckpointError(
            f"refusing to load {self.path}: the pickle asks for {_clip(f'{module}.{name}')}, "
            "which is not a tensor or a plain container (a checkpoint holding code or whole "
            "pickled models is not loaded; re-save only its state_dict)"
        )

    def _stack_global(self, module: Any, name: Any) -> _Global | _StorageType:
        if type(module) is not str or type(name) is not str:
            raise CheckpointError(f"{self.path}: data.pkl names a global by non-strings")
        return self.find_class(module, name)

    def _call(self, func: Any, args: Any) -> Any:
        if type(func) is not _Global:
            raise CheckpointError(
                f"{self.path}: data.pkl calls a {type(func).__name__}, which is not callable"
            )
        if type(args) is not tuple:
            raise CheckpointError(
                f"{self.path}: data.pkl calls {func.module}.{func.name} with a "
                f"{type(args).__name__} of arguments"
            )
        return self._calls[func](*args)

    def _new_object_ex(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if type(kwargs) is not dict or kwargs:
            raise CheckpointError(f"{self.path}: data.pkl builds an object with keywords")
        return self._call(cls, args)

    def _ordered_dict(self) -> collections.OrderedDict:
        return self._new(collections.OrderedDict())

    def _namespace(self) -> types.SimpleNamespace:
        return self._new(types.SimpleNamespace())

    # -- storages and tensors -----------------------------------------------------------------

    def persistent_load(self, pid: Any) -> _Storage:
        """A ``('storage', type, key, location, numel)`` id: the storage, read once per key."""
        if not (
            type(pid) is tuple and len(pid) == 5 and type(pid[0]) is str and pid[0] == "storage"
        ):
            raise CheckpointError(
                f"{self.path}: unsupported persistent id {_brief(pid)}; only tensor "
                "storages are supported"
            )
        _, storage_type, key, _location, numel = pid
        if type(key) not in (str, int):
            raise CheckpointError(f"{self.path}: storage key {_brief(key)} is not a name")
        if type(storage_type) is not _StorageType:
            raise CheckpointError(f"{self.path}: storage {_brief(key)} has no storage type")
        key, dtype = str(key), storage_type.dtype
        if type(numel) is not int or numel < 0:
            raise CheckpointError(
                f"{self.path}: storage {_brief(key)} declares {_brief(numel)} elements; expected a "
                "count >= 0"
            )
        if key in self.storages:
            known = self.storages[key].data
            if known.dtype != dtype or known.size != numel:
                raise CheckpointError(
                    f"{self.path}: storage {_brief(key)} is declared as {known.size} "
                    f"{known.dtype.name} and as {numel} {dtype.name} elements"
                )
            return self.storages[key]
        self.storages[key] = _Storage(key, self._read_storage(key, dtype, numel))
        return self.storages[key]

    def _read_storage(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        record = f"{self.prefix}data/{key}"
        size = self.archive.declared_size(record)
        if size is None:
            raise CheckpointError(
                f"{self.path} is incomplete: storage record {_brief(record)} is missing"
            )
        if size < numel * dtype.itemsize:
            raise CheckpointError(
                f"{self.path}: storage record {_brief(record)} holds {size} bytes, too few for "
                f"{numel} {dtype.name} elements"
            )
        data = np.frombuffer(self.archive.read(record), dtype=dtype, count=numel)
        if self.byteorder == "big":
            data.byteswap(inplace=True)
        self.storage_bytes += data.nbytes
        return data

    def rebuild_tensor(
        self,
        storage: _Storage,
        storage_offset: int,
        size: tuple[int, ...],
        stride: tuple[int, ...],
        *_ignored: Any,
    ) -> np.ndarray:
        """``torch._utils._rebuild_tensor_v2``: a view of its storage (a copy if strided)."""
        if type(storage) is not _Storage:
            raise CheckpointError(f"{self.path}: a tensor is built from a non-storage object")
        shape, strides, offset = _ints(size), _ints(stride), _ints((storage_offset,))
        if (
            shape is None
            or strides is None
            or offset is None
            or len(shape) != len(strides)
            or len(shape) > _MAX_NDIM
        ):
            raise CheckpointError(
                f"{self.path}: storage {_brief(storage.key)} has a tensor with a malformed shape "
                f"{_brief(size)}, strides {_brief(stride)} or offset {_brief(storage_offset)}"
            )
        data, numel = storage.data, math.prod(shape)
        if numel == 0:
            return np.zeros(shape, dtype=data.dtype)
        extent = offset[0] + sum((n - 1) * s for n, s in zip(shape, strides, strict=True)) + 1
        if extent > data.size or numel > data.size:
            raise CheckpointError(
                f"{self.path}: storage {_brief(storage.key)} holds {data.size} elements, too "
                f"few for a tensor of shape {list(shape)}, strides {list(strides)}, offset "
                f"{offset[0]}"
            )
        if _c_contiguous(shape, strides):
            return data[offset[0] : offset[0] + numel].reshape(shape)
        self.copied_bytes += numel * data.itemsize
        if self.copied_bytes > MAX_COPY_RATIO * self.storage_bytes:
            raise CheckpointError(
                f"{self.path}: its strided tensors (at storage {_brief(storage.key)}) would copy "
                f"{self.copied_bytes} bytes, more than MAX_COPY_RATIO={MAX_COPY_RATIO} times "
                f"the {self.storage_bytes} bytes of its storages"
            )
        view = np.lib.stride_tricks.as_strided(
            data[offset[0] :],
            shape=shape,
            strides=tuple(s * data.itemsize for s in strides),
            writeable=False,
        )
        return np.array(view, order="C")

    def rebuild_parameter(self, data: np.ndarray, *_ignored: Any) -> np.ndarray:
        """``torch._utils._rebuild_parameter[_with_state]``: a parameter is its tensor."""
        if type(data) is not np.ndarray:
            raise CheckpointError(f"{self.path}: a parameter is built from a non-tensor object")
        return data


def _ints(values: Any) -> tuple[int, ...] | None:
    """``values`` as a tuple of non-negative ints, or None if it is not one."""
    if type(values) not in (tuple, list):
        return None
    if not all(type(v) is int and v >= 0 for v in values):
        return None
    return tuple(values)


def _c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """Whether ``strides`` (in elements) lay ``shape`` out in C order, ignoring size-1 axes."""
    expected = 1
    for n, s in zip(reversed(shape), reversed(strides), strict=True):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def _clip(text: str) -> str:
    """``text`` for a message: as it is if short and printable, else a short repr."""
    return text if len(text) <= 100 and text.isprintable() else _brief(text)


def _one_line(err: BaseException) -> str:
    """An exception's message on one short line."""
    text = " ".join(str(err).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _open_archive(path: Path) -> _Archive:
    """Open a checkpoint's zip archive, with a one-line error for every way that fails."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a torch.save checkpoint file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            end = zipfile._EndRecData(handle)  # the end record ZipFile reads (stdlib helper)
        size = path.stat().st_size
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from None
    if end and end[zipfile._ECD_SIZE] > MAX_ZIP_DIRECTORY_BYTES:
        raise CheckpointError(
            f"{path}: its zip central directory declares {end[zipfile._ECD_SIZE]} bytes, more "
            f"than MAX_ZIP_DIRECTORY_BYTES={MAX_ZIP_DIRECTORY_BYTES} (a checkpoint lists one "
            "record per tensor storage: some 100 bytes each); refused before reading it"
        )
    if head.startswith(b"\x80"):
        raise CheckpointError(
            f"{path} is a bare pickle, not a zip archive: the legacy torch.save format "
            f"(PyTorch < 1.6) or a plain pickle, which is not read; {RESAVE_HINT}"
        )
    try:
        return _Archive(zipfile.ZipFile(path), path, size)
    except Exception as err:  # any way zipfile fails on untrusted bytes
        if head.startswith(b"PK"):
            raise CheckpointError(
                f"{path} is a truncated or corrupt zip archive ({_one_line(err)}); download "
                "or save it again"
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
            f"(entries: {_brief(names[:5])})"
        )
    return found[0][: -len("data.pkl")]


def load_torch_checkpoint(path: str | os.PathLike) -> Any:
    """Unpickle a ``torch.save`` zip checkpoint safely; tensors become NumPy arrays.

    Only tensors, ``OrderedDict`` and plain Python values (plus ``argparse.Namespace``, read
    as a ``types.SimpleNamespace``) are accepted; anything else raises
    :class:`~eegdino_tf.errors.CheckpointError` naming the refused global, which is never
    imported. Tensors that are C-contiguous in their storage are views of it, shared as in
    PyTorch. Every other problem (not a zip, truncated, missing record, over a limit in the
    module doc...) is also a one-line ``CheckpointError``.
    """
    path = Path(path)
    archive = _open_archive(path)
    with archive.zip:
        try:
            return _load_archive(archive)
        except CheckpointError:
            raise
        except Exception as err:  # any other decoding failure of untrusted bytes
            raise CheckpointError(
                f"{path}: malformed checkpoint ({type(err).__name__}: {_one_line(err)})"
            ) from None


def _load_archive(archive: _Archive) -> Any:
    prefix = _archive_prefix(archive.zip, archive.path)
    byteorder = "little"  # files from PyTorch < 1.10 have no byteorder record
    size = archive.declared_size(f"{prefix}byteorder")
    if size is not None:
        raw = archive.read(f"{prefix}byteorder") if size <= 16 else b"(%d bytes)" % size
        byteorder = raw.decode(errors="replace").strip()
    if byteorder not in ("little", "big"):
        raise CheckpointError(f"{archive.path}: unknown byteorder record {_brief(byteorder)}")
    pickled = f"{prefix}data.pkl"
    size = archive.zip.getinfo(pickled).file_size
    if size > MAX_PICKLE_BYTES:
        raise CheckpointError(
            f"{archive.path}: {_brief(pickled)} holds {size} bytes, more than "
            f"MAX_PICKLE_BYTES={MAX_PICKLE_BYTES}"
        )
    return _Unpickler(archive, prefix, byteorder).load(bytes(archive.read(pickled)))


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
            return _tensor_dict(obj[key], f"{path} entry {_brief(key)}")
    if obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        return _tensor_dict(obj, str(path))
    raise CheckpointError(
        f"no state dict found in {path}: its top-level keys are {_brief(list(islice(obj, 10)))}"
        f"; expected a {' / '.join(map(repr, STATE_DICT_KEYS))} entry or a flat name -> "
        "tensor dict"
    )


def _tensor_dict(state: Mapping, where: str) -> dict[str, np.ndarray]:
    bad = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, np.ndarray))]
    if bad:
        raise CheckpointError(
            f"{where} is not a state dict: {len(bad)} entries are not name -> tensor "
            f"(e.g. {_brief(bad[:3])})"
        )
    return dict(state)
