"""The models :mod:`eegdino_tf.litert` converts, kept on disk: one conversion per machine.

An entry is one file, ``<folder>/<sha256 of its key>.litert``: a header holding its key, the
SHA-256 and length of the flatbuffer and what its conversion measured (the int8 probe's
cosine), then the flatbuffer. The key (:func:`cache_key`) names everything the flatbuffer
depends on: a SHA-256 over every weight's bytes, the model's class and config, the graph form,
the input shape (channels, samples), the quantization and the versions of eegdino-tf,
TensorFlow and ai-edge-litert. An entry is used only when its header holds this key and its
flatbuffer this checksum; anything else (truncated, altered, another key) is ignored, logged
and replaced by the next conversion.

The folder is ``$EEGDINO_TF_CACHE`` if set (``off``: no cache), else
``$XDG_CACHE_HOME/eegdino-tf/litert``, else ``~/.cache/eegdino-tf/litert``. Entries are written
through :func:`eegdino_tf.files.atomic_output` (a reader sees a whole entry or none; two
processes storing one key leave one file) and kept to ``$EEGDINO_TF_CACHE_MAX_BYTES`` (default
:data:`DEFAULT_MAX_BYTES`): after each store the least recently used entries go (a hit marks an
entry used). A cache that cannot be written costs a log line, never a prediction.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import os
from pathlib import Path
from typing import Any

from eegdino_tf import tracing
from eegdino_tf.errors import ConfigError, OutputError
from eegdino_tf.files import atomic_output

_log = logging.getLogger(__name__)

#: The cache's size bound when ``$EEGDINO_TF_CACHE_MAX_BYTES`` is not set (small's float32
#: conversion is 18 MB, medium's 132 MB, large's 1.2 GB).
DEFAULT_MAX_BYTES = 2 * 2**30
#: What every entry file starts with (the format's version in it).
MAGIC = b"eegdino-tf litert cache 1\n"
#: Entries' file name suffix.
SUFFIX = ".litert"
_LENGTH_BYTES = 8


def cache_folder() -> Path | None:
    """Where entries are kept (see the module's documentation); None when
    ``EEGDINO_TF_CACHE=off``."""
    chosen = os.environ.get("EEGDINO_TF_CACHE")
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen).expanduser()
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "eegdino-tf" / "litert"


def max_bytes() -> int:
    """The size bound: ``$EEGDINO_TF_CACHE_MAX_BYTES`` (bytes, an integer >= 0) or
    :data:`DEFAULT_MAX_BYTES`."""
    value = os.environ.get("EEGDINO_TF_CACHE_MAX_BYTES", "")
    if not value:
        return DEFAULT_MAX_BYTES
    if not value.isdigit():
        raise ConfigError(f"EEGDINO_TF_CACHE_MAX_BYTES={value!r}: expected a whole number of bytes")
    return int(value)


def weights_digest(model: Any) -> str:
    """SHA-256 (hex) over every weight of ``model`` in order: its dtype, shape and bytes."""
    digest = hashlib.sha256()
    for variable in model.weights:
        value = variable.numpy()
        digest.update(f"{value.dtype.str}{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


#: The modules whose code decides the converted graph: a change to any of them (an editable
#: install between releases, say) is a new key, never a stale graph.
GRAPH_MODULES = ("config", "layers", "models", "runtime", "tracing", "litert", "resampling")


@functools.cache
def graph_code_digest() -> str:
    """SHA-256 of the source of :data:`GRAPH_MODULES`, read once per process."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for name in GRAPH_MODULES:
        digest.update((package / f"{name}.py").read_bytes())
    return digest.hexdigest()


def cache_key(model: Any, channels: int, samples: int, quantize: str) -> dict[str, Any]:
    """Everything ``model``'s flatbuffer for ``[any, channels, samples]`` depends on (JSON)."""
    import tensorflow as tf

    return {
        "weights_sha256": weights_digest(model),
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": json.loads(json.dumps(model.get_config(), sort_keys=True, default=str)),
        "graph_form": tracing.GRAPH_FORMS["tflite"],
        "input": [int(channels), int(samples)],
        "quantize": quantize,
        "code": graph_code_digest(),
        "versions": {
            "eegdino-tf": importlib.metadata.version("eegdino-tf"),
            "tensorflow": tf.__version__,
            "ai-edge-litert": importlib.metadata.version("ai-edge-litert"),
        },
    }


def entry_path(folder: Path, key: dict[str, Any]) -> Path:
    """The file of ``key``'s entry in ``folder``."""
    return folder / f"{hashlib.sha256(_canonical(key)).hexdigest()}{SUFFIX}"


def load(folder: Path, key: dict[str, Any]) -> tuple[bytes, dict[str, Any]] | None:
    """``(flatbuffer, measured)`` of ``key``'s entry, marked used; None when there is none or
    it does not hold ``key`` and its flatbuffer whole (then logged: it will be replaced)."""
    path = entry_path(folder, key)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        _log.warning("LiteRT cache entry %s unreadable (%s): converting instead", path, err)
        return None
    header, flatbuffer, problem = _parse(data)
    if problem is None and header["key"] != json.loads(_canonical(key)):
        problem = "it holds another key"
    if problem is not None:
        _log.warning("LiteRT cache entry %s ignored: %s; converting again", path, problem)
        return None
    try:
        os.utime(path)  # used now: the last to be evicted
    except OSError:
        pass  # evicted meanwhile, or a read-only cache: the entry is still good
    return flatbuffer, header["measured"]


def store(folder: Path, key: dict[str, Any], flatbuffer: bytes, measured: dict[str, Any]) -> None:
    """Keep ``flatbuffer`` (with ``measured``) as ``key``'s entry, replacing any, then evict
    the least recently used entries past :func:`max_bytes`. Failures are logged, not raised."""
    header = _canonical(
        {
            "key": key,
            "flatbuffer_sha256": hashlib.sha256(flatbuffer).hexdigest(),
            "flatbuffer_bytes": len(flatbuffer),
            "measured": measured,
        }
    )
    data = b"".join([MAGIC, len(header).to_bytes(_LENGTH_BYTES, "little"), header, flatbuffer])
    bound, path = max_bytes(), entry_path(folder, key)
    if len(data) > bound:
        _log.warning(
            "LiteRT conversion (%d bytes) not cached: larger than EEGDINO_TF_CACHE_MAX_BYTES=%d",
            len(data),
            bound,
        )
        return
    try:
        with atomic_output(path, force=True) as tmp:
            tmp.write_bytes(data)
    except (OSError, OutputError) as err:
        _log.warning("LiteRT conversion not cached in %s: %s", folder, err)
        return
    evict(folder, bound, keep=path)


def evict(folder: Path, bound: int, keep: Path | None = None) -> None:
    """Delete the least recently used entries of ``folder`` (``keep`` last of all) until the
    entries take at most ``bound`` bytes."""
    entries = []
    for path in folder.glob(f"*{SUFFIX}"):
        try:
            stat = path.stat()
        except OSError:
            continue  # evicted by another process meanwhile
        entries.append((path == keep, stat.st_mtime_ns, stat.st_size, path))
    total = sum(entry[2] for entry in entries)
    for _, _, size, path in sorted(entries):
        if total <= bound:
            break
        try:
            path.unlink()
        except FileNotFoundError:
            pass  # another process evicted it
        except OSError as err:
            _log.warning("LiteRT cache entry %s not evicted: %s", path, err)
            continue
        total -= size


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _parse(data: bytes) -> tuple[dict[str, Any], bytes, str | None]:
    """``(header, flatbuffer, problem)`` of an entry file's bytes; ``problem`` None when whole."""
    start = len(MAGIC) + _LENGTH_BYTES
    if not data.startswith(MAGIC) or len(data) < start:
        return {}, b"", "not an entry of this format"
    length = int.from_bytes(data[len(MAGIC) : start], "little")
    try:
        header = json.loads(data[start : start + length])
        expected_sha, expected_bytes, _, _ = (
            header[name] for name in ("flatbuffer_sha256", "flatbuffer_bytes", "key", "measured")
        )
    except (ValueError, KeyError, TypeError):
        return {}, b"", "its header is not readable"
    flatbuffer = data[start + length :]
    if len(flatbuffer) != expected_bytes:
        return {}, b"", f"{len(flatbuffer)} flatbuffer bytes, {expected_bytes} expected"
    if hashlib.sha256(flatbuffer).hexdigest() != expected_sha:
        return {}, b"", "its flatbuffer does not match its checksum"
    return header, flatbuffer, None
