"""Hostile ``.pt`` files (issue 15): each ends in a correct result or one CheckpointError line,
within memory and time bounds, and the real checkpoints still load bit-exactly.

The reported cases are rebuilt here: pickles are written opcode by opcode (``dumps`` from
test_checkpoint, or raw bytes), and :func:`raw_zip` writes a zip by hand so its headers can
declare what its records do not hold (zip bombs, forged sizes, overlapping entries).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
import struct
import textwrap
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eegdino_tf
from eegdino_tf import checkpoint as C
from eegdino_tf.checkpoint import load_torch_checkpoint, read_state_dict
from eegdino_tf.cli import main
from eegdino_tf.convert import convert_checkpoint
from eegdino_tf.errors import CheckpointError
from eegdino_tf.weights import read_tensors
from tests.helpers import TINY
from tests.helpers.checkpoints import Call, Global, PersistentId, dumps, tensor, write_checkpoint
from tests.helpers.hostile import outcome, run_isolated

PRETRAIN = TINY / "tiny_pretrain_checkpoint.pt"
FINETUNE = TINY / "tiny_finetune_checkpoint.pt"
MIB = 2**20
#: Bounds for a hostile file that must be refused before it costs anything.
SMALL_BYTES, QUICK_SECONDS = 32 * MIB, 10.0

# ---------------------------------------------------------------------------------------------
# Writing hostile files
# ---------------------------------------------------------------------------------------------


def raw_zip(path: Path, entries: list[tuple[str, bytes, int, int, int]], alias: int = 0) -> Path:
    """Write a zip by hand: ``(name, payload, method, declared size, crc)`` per record.

    The declared (uncompressed) size may be anything (a zip64 extra field carries it past
    4 GiB); ``alias`` more central-directory entries point at the last record's bytes again.
    """
    out, central, count = bytearray(), bytearray(), 0
    for name, payload, method, declared, crc in entries:
        offset, encoded = len(out), name.encode()
        zip64 = declared >= 0xFFFFFFFF
        extra = struct.pack("<HHQ", 1, 8, declared) if zip64 else b""
        size = 0xFFFFFFFF if zip64 else declared
        version = 45 if zip64 else 20
        out += struct.pack(
            "<4s2B4HL2L2H", b"PK\x03\x04", version, 0, 0, method, 0, 0, crc, len(payload),
            size, len(encoded), len(extra),
        )  # fmt: skip
        out += encoded + extra + payload
        for copy in range(alias + 1 if name == entries[-1][0] else 1):
            alias_name = encoded if copy == 0 else encoded + b".%d" % copy
            central += struct.pack(
                "<4s4B4HL2L5H2L", b"PK\x01\x02", version, 3, version, 0, 0, method, 0, 0, crc,
                len(payload), size, len(alias_name), len(extra), 0, 0, 0, 0, offset,
            )  # fmt: skip
            central += alias_name + extra
            count += 1
    count = min(count, 0xFFFF)  # zipfile reads every entry the directory holds, whatever this says
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))
    return path


def stored(name: str, payload: bytes) -> tuple[str, bytes, int, int, int]:
    """An honest uncompressed record, as torch.save writes them."""
    return name, payload, zipfile.ZIP_STORED, len(payload), zlib.crc32(payload)


def zeros_bomb() -> tuple[bytes, int, int]:
    """A raw deflate stream (1 MB) that really inflates to 1 GiB of zeros; its size and CRC."""
    block, size, crc = 16 * MIB, 2**30, 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    for _ in range(size // block):
        crc = zlib.crc32(bytes(block), crc)
    return piece * (size // block) + compressor.flush(), size, crc


def tensor_pickle(numel: int, refs: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> bytes:
    """A state dict of tensors ``w0, w1...`` (shape, strides) all viewing float storage "0"."""
    state = {f"w{i}": tensor("0", "FloatStorage", numel, 0, s, t) for i, (s, t) in enumerate(refs)}
    return dumps({"state_dict": state})


def expect_error(fn: Any, *needles: str, **bounds: Any) -> str:
    """Run ``fn`` within bounds (small by default); it must raise a one-line CheckpointError
    whose message holds every needle. Returns the message."""
    bounds = {"max_bytes": SMALL_BYTES, "max_seconds": QUICK_SECONDS, **bounds}
    result = outcome(fn, **bounds)
    assert isinstance(result, CheckpointError), f"expected a CheckpointError, got {result!r}"
    message = str(result)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


# The report's case: a pickle whose dict key is a tuple nested 10^6 deep (1 MB; 1.2 KB deflated).
DEEP_KEY = b"\x80\x02}X\x0a\x00\x00\x00state_dict}" + b")" + b"\x85" * 10**6 + b"Nss."


def deep_key_file(tmp_path: Path, depth: int, deflated: bool = False) -> Path:
    """The report's file with its key nested ``depth`` deep; stored, or deflated as reported."""
    path = tmp_path / f"deep{depth}{'z' if deflated else ''}.pt"
    method = zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        archive.writestr("archive/data.pkl", DEEP_KEY.replace(b"\x85" * 10**6, b"\x85" * depth))
        archive.writestr("archive/byteorder", "little")
    return path


# ---------------------------------------------------------------------------------------------
# The real checkpoints: bit-exact as before, tensors sharing their storages
# ---------------------------------------------------------------------------------------------


def _digest(obj: Any, sink: Any) -> None:
    """Feed a canonical form of a loaded checkpoint (types, keys, dtypes, shapes, bytes)."""
    sink.update(type(obj).__name__.encode())
    if isinstance(obj, dict):
        for key, value in obj.items():
            sink.update(repr(key).encode())
            _digest(value, sink)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _digest(value, sink)
    elif isinstance(obj, np.ndarray):
        sink.update(f"{obj.dtype.str}{obj.shape}{obj.flags.c_contiguous}".encode())
        sink.update(obj.tobytes())
    else:
        sink.update(repr(obj).encode())


@pytest.mark.parametrize(
    "path, expected",
    [  # digests taken with the reader before this rewrite (stdlib pickle, every tensor copied)
        (PRETRAIN, "b67e035b5db3c9dc77246bc02b2126dbd2890e70bdcfa016c4a5aa96ab391c2c"),
        (FINETUNE, "3296c6f0a021eb2a0b47ec555736c29a2e40787d5aa10f18f891ea61d39e503a"),
    ],
)
def test_fixture_checkpoints_load_bit_exactly_as_before(path, expected):
    checkpoint = outcome(lambda: load_torch_checkpoint(path), max_bytes=8 * MIB, max_seconds=5)
    sink = hashlib.sha256()
    _digest(checkpoint, sink)
    assert sink.hexdigest() == expected


def test_tensors_are_shared_views_of_their_storage(tmp_path):
    values = np.arange(12, dtype="<f4")
    refs = [((12,), (1,)), ((3, 4), (4, 1)), ((2, 3), (3, 1)), ((4, 3), (1, 4))]
    pickled = tensor_pickle(12, refs)
    state = read_state_dict(write_checkpoint(tmp_path / "v.pt", pickled, {"0": values.tobytes()}))
    assert np.shares_memory(state["w0"], state["w1"]) and np.shares_memory(state["w0"], state["w2"])
    assert not np.shares_memory(state["w0"], state["w3"])  # transposed: copied to C order
    np.testing.assert_array_equal(state["w3"], values.reshape(3, 4).T)
    assert all(a.flags.c_contiguous and a.flags.writeable for a in state.values())


# ---------------------------------------------------------------------------------------------
# The reported failures
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "deflated, needle",
    [(True, f"MAX_INFLATE_RATIO={C.MAX_INFLATE_RATIO}"), (False, "deeper than MAX_PICKLE_DEPTH=")],
)
def test_million_deep_tuple_key_is_refused_not_a_segfault(tmp_path, deflated, needle):
    """As reported (1.2 KB, its data.pkl deflated 1000:1) and stored (so the pickle is run)."""
    path = deep_key_file(tmp_path, 10**6, deflated)
    assert path.stat().st_size < (2048 if deflated else 10**6 + 2048)
    code = textwrap.dedent(
        f"""
        import time
        from eegdino_tf.checkpoint import read_state_dict
        from eegdino_tf.errors import CheckpointError
        start = time.perf_counter()
        try:
            read_state_dict({str(path)!r})
        except CheckpointError as err:
            print("refused:", err)
        print("seconds:", time.perf_counter() - start)
        """
    )
    result = run_isolated(code)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert "refused:" in result.stdout and needle in result.stdout, result.stdout
    assert float(result.stdout.split("seconds:")[1]) < 2.0


@pytest.mark.parametrize(
    "entry",
    [
        load_torch_checkpoint,
        read_state_dict,
        read_tensors,
        eegdino_tf.load_encoder,
        lambda p: convert_checkpoint(p, p.with_suffix(".safetensors")),
    ],
    ids=["load_torch_checkpoint", "read_state_dict", "read_tensors", "load_encoder", "convert"],
)
@pytest.mark.parametrize("depth", [10**5, 10**6])
def test_deep_tuple_key_through_every_entry_point(tmp_path, entry, depth):
    path = deep_key_file(tmp_path, depth)
    expect_error(lambda: entry(path), f"MAX_PICKLE_DEPTH={C.MAX_PICKLE_DEPTH}")
    assert not path.with_suffix(".safetensors").exists()


@pytest.mark.parametrize("command", ["info", "convert"])
def test_cli_exits_2_on_the_deep_key(tmp_path, capsys, command):
    path = deep_key_file(tmp_path, 10**6)
    output = [str(tmp_path / "out.safetensors")] if command == "convert" else []
    assert main([command, str(path), *output]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "MAX_PICKLE_DEPTH=" in error


def _dict_of_int_keys(keys: list[int]) -> bytes:
    """A pickled ``{"state_dict": {k: None for k in keys}}``, written without hashing ``keys``."""
    body = b"".join(b"\x8a" + bytes([len(e)]) + e + b"N" for e in map(pickle.encode_long, keys))
    return b"\x80\x02}X\x0a\x00\x00\x00state_dict}(" + body + b"us."


def test_colliding_int_keys_are_refused_quickly(tmp_path):
    """120,000 keys k * (2**61 - 1): all hash to 0, which made dict building quadratic."""
    keys = [k * (2**61 - 1) for k in range(1, 120_001)]
    path = write_checkpoint(tmp_path / "collide.pt", _dict_of_int_keys(keys), {})
    expect_error(lambda: load_torch_checkpoint(path), f"MAX_INT_BITS={C.MAX_INT_BITS}")


def test_many_int_keys_within_the_limits_load_quickly(tmp_path):
    """Ints of at most 64 bits cannot collide in bulk: 120,000 keys sharing their low 40 bits
    (the worst start for dict probing) load at once."""
    keys = [k << 40 for k in range(120_000)]
    path = write_checkpoint(tmp_path / "many.pt", _dict_of_int_keys(keys), {})
    checkpoint = outcome(lambda: load_torch_checkpoint(path), max_seconds=QUICK_SECONDS)
    assert list(checkpoint["state_dict"]) == keys


@pytest.mark.parametrize("gib", [1, 5])
def test_deflate_bomb_storage_is_refused_before_inflating(tmp_path, gib):
    """A ~1 MB file whose one storage record inflates to 1 GiB (declared honestly), or
    declares 5 GiB (zip64) for the same bytes."""
    payload, size, crc = zeros_bomb()
    pickled = tensor_pickle(gib * 2**28, [((gib * 2**28,), (1,))])
    entries = [
        stored("archive/data.pkl", pickled),
        stored("archive/byteorder", b"little"),
        ("archive/data/0", payload, zipfile.ZIP_DEFLATED, gib * size, crc),
    ]
    path = raw_zip(tmp_path / "bomb.pt", entries)
    assert path.stat().st_size < 2 * MIB
    expect_error(lambda: read_state_dict(path), f"MAX_INFLATE_RATIO={C.MAX_INFLATE_RATIO}")


def test_100mb_storage_referenced_by_20_tensors(tmp_path):
    """The report's 98 KB file: one deflated 100 MB storage, viewed by 20 tensors."""
    numel = 25 * 10**6
    raw = bytes(numel * 4)
    deflated = zlib.compress(raw, 9)[2:-4]
    pickled = tensor_pickle(numel, [((numel,), (1,))] * 20)
    entries = [
        stored("archive/data.pkl", pickled),
        ("archive/data/0", deflated, zipfile.ZIP_DEFLATED, len(raw), zlib.crc32(raw)),
    ]
    del raw
    path = raw_zip(tmp_path / "refs.pt", entries)
    assert path.stat().st_size < 200_000
    expect_error(lambda: read_state_dict(path), "MAX_INFLATE_RATIO=")


@pytest.mark.parametrize("transposed", [False, True])
def test_one_stored_storage_referenced_by_20_tensors(tmp_path, transposed):
    """Stored honestly (8 MiB): 20 views cost nothing more; 20 strided copies are refused."""
    rows = 2**10
    values = np.arange(rows * 2048, dtype="<f4")
    ref = ((2048, rows), (1, 2048)) if transposed else ((rows, 2048), (2048, 1))
    path = write_checkpoint(
        tmp_path / "refs.pt", tensor_pickle(values.size, [ref] * 20), {"0": values.tobytes()}
    )
    del values
    if transposed:  # the storage and MAX_COPY_RATIO copies of it, then the refusal
        needle = f"MAX_COPY_RATIO={C.MAX_COPY_RATIO}"
        expect_error(lambda: read_state_dict(path), needle, max_bytes=40 * MIB)
        return
    state = outcome(lambda: read_state_dict(path), max_bytes=20 * MIB)
    assert len(state) == 20 and all(np.shares_memory(state["w0"], a) for a in state.values())


def test_gib_data_pkl_is_refused_before_reading(tmp_path):
    payload, size, crc = zeros_bomb()
    path = raw_zip(
        tmp_path / "pkl.pt", [("archive/data.pkl", payload, zipfile.ZIP_DEFLATED, size, crc)]
    )
    expect_error(lambda: read_state_dict(path), f"MAX_PICKLE_BYTES={C.MAX_PICKLE_BYTES}")


# ---------------------------------------------------------------------------------------------
# The pickle machine's other limits
# ---------------------------------------------------------------------------------------------


def test_pickle_over_the_opcode_limit_is_refused_quickly(tmp_path):
    pickled = b"\x80\x02](" + b"N" * C.MAX_PICKLE_OPS + b"e."
    path = write_checkpoint(tmp_path / "ops.pt", pickled, {})
    expect_error(lambda: load_torch_checkpoint(path), f"MAX_PICKLE_OPS={C.MAX_PICKLE_OPS}",
                 max_bytes=128 * MIB, max_seconds=30)  # fmt: skip


def test_objects_cost_a_bounded_amount_each(tmp_path):
    """Empty lists (one per two opcodes, the most objects per opcode) cost under 256 bytes
    each, so a pickle at MAX_PICKLE_OPS stays under ~64 MiB."""
    count = 2**14
    path = write_checkpoint(tmp_path / "lists.pt", b"\x80\x02]" + b"]a" * count + b".", {})
    result = outcome(lambda: load_torch_checkpoint(path), max_bytes=256 * count)
    assert len(result) == count


def test_container_nesting_at_the_limit_loads(tmp_path):
    depth = C.MAX_PICKLE_DEPTH
    path = write_checkpoint(tmp_path / "d.pt", b"\x80\x02)" + b"\x85" * (depth - 1) + b".", {})
    value = load_torch_checkpoint(path)
    for _ in range(depth - 1):
        (value,) = value
    assert value == ()
    path = write_checkpoint(tmp_path / "d1.pt", b"\x80\x02)" + b"\x85" * depth + b".", {})
    expect_error(lambda: load_torch_checkpoint(path), "MAX_PICKLE_DEPTH=")


# A list built top-down, each new list appended to the previous one after that one was
# placed inside its parent: the depth would grow unseen, so such a change is refused.
TOP_DOWN = b"\x80\x02]q\x00]q\x01h\x00h\x01a0]q\x02h\x01h\x02a0."


@pytest.mark.parametrize(
    "pickled, needle",
    [
        (b"\x80\x02]q\x00h\x00a.", "inside itself"),  # l.append(l)
        (TOP_DOWN, "after placing it inside another"),
        (b"\x80\x02}(K\x01K\x02\x86Nu.", "dict key or set element of type tuple"),
        (b"\x80\x02\x8f(]\x90.", "dict key or set element of type list"),
        (b"\x80\x02h\x05.", "memo entry 5, never stored"),
        (b"\x80\x02\x82\x01.", "opcode EXT1"),
        (b"\x80\x02cposix\nsystem\n.", "posix.system"),
        (b"\x80\x02ccollections\nOrderedDict\nK\x01\x85R.", "malformed checkpoint (TypeError"),
        (b"\x80\x06N.", "unknown pickle protocol 6"),
        (b"\x80\x02N", "malformed checkpoint (ValueError"),
        (b"\x80\x02(N", "malformed checkpoint (ValueError"),
        (b"\x80\x02NNNs.", "sets 2 items on a NoneType"),
        (b"\x80\x02Pstorage\n.", "unsupported persistent id"),
        (b"\x80\x02\x8a\x09" + bytes(8) + b"\x01.", "MAX_INT_BITS="),  # 2**64
        (b"\x80\x02I" + b"9" * 5000 + b"\n.", "malformed checkpoint (ValueError"),
    ],
)
def test_malformed_and_hostile_pickles(tmp_path, pickled, needle):
    path = write_checkpoint(tmp_path / "p.pt", pickled, {})
    result = outcome(lambda: read_state_dict(path), max_bytes=SMALL_BYTES)
    assert isinstance(result, CheckpointError) and "\n" not in str(result)
    assert needle in str(result), str(result)


def test_namespace_ordered_dict_and_sets_still_read(tmp_path):
    import argparse
    from collections import OrderedDict

    value = {
        "args": argparse.Namespace(lr=0.5, name="x", layers=[1, 2]),
        "order": OrderedDict(b=1, a=2),
        "tags": {"a", "b"},
        "frozen": frozenset({1.5, None}),
        "misc": [b"raw", True, None, -(2**63), 2**64 - 1, 1e300, ("t",)],
    }
    for protocol in (4, 5):  # protocol 2 pickles sets and bytes through refused globals
        path = write_checkpoint(tmp_path / "v.pt", pickle.dumps(value, protocol=protocol), {})
        loaded = load_torch_checkpoint(path)
        assert vars(loaded["args"]) == vars(value["args"])
        assert loaded["order"] == value["order"] and list(loaded["order"]) == ["b", "a"]
        assert {k: loaded[k] for k in ("tags", "frozen", "misc")} == {
            k: value[k] for k in ("tags", "frozen", "misc")
        }


# ---------------------------------------------------------------------------------------------
# Damaged zips and tensors
# ---------------------------------------------------------------------------------------------


def _small_entries(**changes: Any) -> list[tuple[str, bytes, int, int, int]]:
    storage = np.arange(6, dtype="<f4").tobytes()
    entries = {
        "data.pkl": stored("archive/data.pkl", tensor_pickle(6, [((2, 3), (3, 1))])),
        "byteorder": stored("archive/byteorder", b"little"),
        "data/0": stored("archive/data/0", storage),
    }
    entries.update(changes)
    return [e for e in entries.values() if e is not None]


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"data/0": ("archive/data/0", bytes(24), 0, 24, 12345)}, "(BadZipFile: Bad CRC"),
        ({"data/0": ("archive/data/0", bytes(24), 0, 4096, 0)}, "declares 4096 bytes but occupies"),
        ({"data/0": ("archive/data/0", bytes(24), 12, 24, 0)}, "compression method 12"),
        ({"data/0": ("archive/data/0", b"\x00" * 8, 8, 24, 0)}, "is corrupt"),  # bad deflate
        ({"data/0": None}, "storage record 'archive/data/0' is missing"),
        ({"byteorder": stored("archive/byteorder", b"middle")}, "unknown byteorder record"),
        ({"byteorder": stored("archive/byteorder", b"x" * 5000)}, "unknown byteorder record"),
        ({"data.pkl": None}, "no '<archive>/data.pkl' record"),
    ],
)
def test_damaged_zip_records(tmp_path, changes, needle):
    path = raw_zip(tmp_path / "z.pt", _small_entries(**changes))
    expect_error(lambda: read_state_dict(path), needle)


def test_honest_small_file_reads(tmp_path):
    path = raw_zip(tmp_path / "ok.pt", _small_entries())
    np.testing.assert_array_equal(read_state_dict(path)["w0"], np.arange(6).reshape(2, 3))


def test_overlapping_entries_are_refused(tmp_path):
    """Forty central-directory entries reading the same 1 MiB of the file as 40 storages."""
    numel = MIB // 4
    state = {f"w{i}": tensor(f"0.{i}" if i else "0", "FloatStorage", numel, 0, (numel,), (1,))
             for i in range(40)}  # fmt: skip
    pickled = dumps({"state_dict": state})
    entries = [stored("archive/data.pkl", pickled), stored("archive/data/0", bytes(MIB))]
    path = raw_zip(tmp_path / "overlap.pt", entries, alias=39)
    expect_error(lambda: read_state_dict(path), "more than the file's", max_bytes=8 * MIB)


def test_huge_central_directory_is_refused_before_parsing(tmp_path):
    """200,000 directory entries (13 MiB) naming one small record: zipfile would build an
    object for each (some 100 MiB) on opening the file."""
    path = raw_zip(tmp_path / "directory.pt", _small_entries(), alias=200_000)
    assert path.stat().st_size > 3 * C.MAX_ZIP_DIRECTORY_BYTES
    expect_error(lambda: read_state_dict(path), "central directory declares", "refused before")


def test_truncated_zips(tmp_path):
    data = FINETUNE.read_bytes()
    for cut in (4, 100, len(data) // 3, len(data) - 30, len(data) - 1):
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(data[:cut])
        expect_error(lambda p=path: read_state_dict(p), "corrupt")


def _one_tensor(tmp_path: Path, numel: Any, offset: Any, shape: Any, strides: Any, **kw: Any):
    """A checkpoint of one float tensor (as declared) over a 6-element storage "0".

    ``dumps`` writes ints as 32-bit BININT; wider ones go in as placeholders, then as LONG1.
    """
    wide: dict[int, int] = {}

    def narrow(value: int) -> int:
        return value if abs(value) < 2**31 else wide.setdefault(value, 0x7F000000 + len(wide))

    shape, strides = tuple(map(narrow, shape)), tuple(map(narrow, strides))
    weight = tensor(kw.get("key", "0"), "FloatStorage", narrow(numel), offset, shape, strides)
    pickled = dumps({"state_dict": {"w": weight, **kw.get("more", {})}})
    for value, placeholder in wide.items():
        encoded = pickle.encode_long(value)
        long1 = b"\x8a" + bytes([len(encoded)]) + encoded
        pickled = pickled.replace(b"J" + struct.pack("<i", placeholder), long1)
    return write_checkpoint(tmp_path / "t.pt", pickled, {"0": np.zeros(6, "<f4").tobytes()})


@pytest.mark.parametrize(
    "numel, offset, shape, strides, kw, needle",
    [
        (6, 0, (2**40, 2**40), (0, 0), {}, "holds 6 elements, too few"),
        (6, 0, (2**30,), (0,), {}, "holds 6 elements, too few"),
        (6, 0, (1,) * 65, (1,) * 65, {}, "malformed shape"),
        (6, 0, (2, -3), (3, 1), {}, "malformed shape"),
        (6, -1, (2,), (1,), {}, "malformed shape"),
        (6, 0, (2, 3), (-3, 1), {}, "malformed shape"),
        (6, 0, (2, 3), (3,), {}, "malformed shape"),
        (6, 5, (2,), (1,), {}, "too few"),
        (6, 0, (0, 2**62), (1, 1), {}, "malformed checkpoint (ValueError"),
        (-1, 0, (1,), (1,), {}, "declares -1 elements"),
        (2**40, 0, (1,), (1,), {}, "too few for 1099511627776 float32 elements"),
        (6, 0, (6,), (1,), {"key": "99"}, "'archive/data/99' is missing"),
        (6, 0, (6,), (1,), {"key": "../0"}, "'archive/data/../0' is missing"),
        (
            6, 0, (6,), (1,),
            {"more": {"v": tensor("0", "LongStorage", 3, 0, (3,), (1,))}},
            "declared as 6 float32 and as 3 int64 elements",
        ),
        (6, 0, (6,), (1,), {"more": {"v": Call(Global("torch._utils", "_rebuild_tensor_v2"),
                                               (1, 0, (1,), (1,)))}}, "non-storage object"),
        (6, 0, (6,), (1,), {"more": {"v": PersistentId(("storage", 1, "0", "cpu", 6))}},
         "has no storage type"),
        (6, 0, (6,), (1,), {"more": {"v": PersistentId((tensor("0", "FloatStorage", 6, 0, (2, 3),
                                                               (3, 1)),))}},
         "persistent id (<float32 array of shape [2, 3]>,)"),  # found by fuzzing: one line
    ],
)  # fmt: skip
def test_malformed_tensors(tmp_path, numel, offset, shape, strides, kw, needle):
    path = _one_tensor(tmp_path, numel, offset, shape, strides, **kw)
    expect_error(lambda: read_state_dict(path), needle)


@pytest.mark.parametrize(
    "pickled, needle",
    [
        (pickle.dumps([1, 2], protocol=2), "holds a list, not a dict of tensors"),
        (pickle.dumps("x" * 10**6, protocol=2), "holds a str"),
        (pickle.dumps({"x" * 10**6: 1}, protocol=2), "no state dict found"),
        (pickle.dumps({"state_dict": {"k": 1}}, protocol=2), "is not a state dict"),
    ],
)
def test_top_level_is_not_a_state_dict(tmp_path, pickled, needle):
    message = expect_error(
        lambda: read_state_dict(write_checkpoint(tmp_path / "t.pt", pickled, {})), needle
    )
    assert len(message) < 600


# ---------------------------------------------------------------------------------------------
# Fuzzing: mutated zips, truncations and mutated data.pkl opcodes
# ---------------------------------------------------------------------------------------------


def _valid_small_checkpoint() -> bytes:
    """A small checkpoint that exercises most of the reader: dtypes, views, a strided tensor,
    a parameter, a namespace, an OrderedDict, big-endian-free little storages."""
    hooks = Call(Global("collections", "OrderedDict"), ())
    weight = tensor("0", "FloatStorage", 12, 0, (3, 4), (4, 1))
    state = {
        "w": weight,
        "w_t": tensor("0", "FloatStorage", 12, 1, (2, 3), (1, 4)),
        "p": Call(Global("torch._utils", "_rebuild_parameter"), (weight, True, hooks)),
        "i": tensor("1", "LongStorage", 3, 0, (3,), (1,)),
        "h": tensor("2", "HalfStorage", 4, 2, (2,), (1,)),
    }
    pickled = dumps({"state_dict": state, "epoch": 3, "args": {"lr": 1, "tags": ("a", "b")}})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", np.arange(12, dtype="<f4").tobytes())
        archive.writestr("archive/data/1", np.arange(3, dtype="<i8").tobytes())
        archive.writestr("archive/data/2", np.arange(4, dtype="<f2").tobytes())
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


SMALL = _valid_small_checkpoint()
with zipfile.ZipFile(FINETUNE) as _fixture:
    FIXTURE_RECORDS = {info.filename: _fixture.read(info) for info in _fixture.infolist()}
FIXTURE_PICKLE = FIXTURE_RECORDS["tiny_finetune_checkpoint/data.pkl"]

_FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few bytes overwritten, a slice deleted or duplicated, or cut short."""
    data = bytearray(base)
    kind = draw(st.sampled_from(["overwrite", "delete", "duplicate", "truncate"]))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "overwrite":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif kind == "delete":
        del data[at : at + draw(st.integers(1, 64))]
    elif kind == "duplicate":
        data[at:at] = data[at : at + draw(st.integers(1, 64))]
    else:
        del data[at:]
    return bytes(data)


def _opcode_bytes() -> st.SearchStrategy[bytes]:
    """Single pickle opcodes with small arguments, valid or not."""
    codes = [op.code.encode("latin-1") for op in pickletools.opcodes]
    return st.tuples(st.sampled_from(codes), st.binary(max_size=9)).map(lambda t: t[0] + t[1])


@st.composite
def mutated_pickles(draw: st.DrawFn) -> bytes:
    """The real fixture's data.pkl, mutated as bytes or with random opcodes spliced in."""
    if draw(st.booleans()):
        return draw(mutated(FIXTURE_PICKLE))
    data = bytearray(FIXTURE_PICKLE)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(_opcode_bytes())
    return bytes(data)


def _check(path: Path, read: Any) -> None:
    result = outcome(lambda: read(path), max_bytes=SMALL_BYTES, max_seconds=5)
    if isinstance(result, CheckpointError):
        assert "\n" not in str(result) and len(str(result)) < 1000


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@_FUZZ
@given(data=mutated(SMALL))
def test_fuzz_mutated_zip_bytes(fuzz_dir, data):
    path = fuzz_dir / "zip.pt"
    path.write_bytes(data)
    _check(path, read_state_dict)


@_FUZZ
@given(pickled=mutated_pickles())
def test_fuzz_mutated_data_pkl(fuzz_dir, pickled):
    records = {**FIXTURE_RECORDS, "tiny_finetune_checkpoint/data.pkl": pickled}
    path = fuzz_dir / "pkl.pt"
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in records.items():
            archive.writestr(name, raw)
    _check(path, load_torch_checkpoint)
