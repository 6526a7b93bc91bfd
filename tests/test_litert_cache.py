"""The disk cache of LiteRT conversions: found by a second process without converting, keyed by
the weights' content, shape and quantization, never trusted when it does not match its key,
bounded in size, and safe with processes converting at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import eegdino_tf
from eegdino_tf import litert_cache, tracing
from eegdino_tf.errors import ConfigError
from eegdino_tf.litert import litert_conversion
from tests.helpers import OVERRIDES, REPO, fixture_path, load_io

#: A child process: the tiny encoder through LiteRT at (19, 2000), float32 and int8, its tokens
#: saved to argv[1]; with argv[2] == "no-conversion" the converter fails if called.
CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import eegdino_tf
    from eegdino_tf import tracing
    from tests.helpers import OVERRIDES, fixture_path, load_io

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted although the cache holds this model")

    if sys.argv[2] == "no-conversion":
        tracing.tflite_flatbuffer = no_conversion
    model = eegdino_tf.load_encoder(fixture_path("tiny_encoder.safetensors"), **OVERRIDES["tiny"])
    x = load_io("tiny")["raw_uv"]
    out = {q: model.predict(x, verbose=0, runtime="litert", quantize=q) for q in sys.argv[3:]}
    np.savez(sys.argv[1], **out)
    """
)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """An empty cache folder of this test's own."""
    path = tmp_path / "cache"
    monkeypatch.setenv("EEGDINO_TF_CACHE", str(path))
    return path


@pytest.fixture
def conversions(monkeypatch):
    """The number of TFLite conversions made in this process from now on (``[count]``)."""
    count, convert = [0], tracing.tflite_flatbuffer

    def counted(*args, **kwargs):
        count[0] += 1
        return convert(*args, **kwargs)

    monkeypatch.setattr(tracing, "tflite_flatbuffer", counted)
    return count


def tiny():
    return eegdino_tf.load_encoder(fixture_path("tiny_encoder.safetensors"), **OVERRIDES["tiny"])


def child(folder, output, mode, *quantizations):
    env = {**os.environ, "EEGDINO_TF_CACHE": str(folder), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", CHILD, str(output), mode, *quantizations]
    return subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)


def finished(process) -> None:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]


def entries(folder):
    return sorted(folder.glob("*.litert"))


def test_a_second_process_finds_the_conversions_and_does_not_convert(folder, conversions):
    model, x = tiny(), load_io("tiny")["raw_uv"]
    quantizations = ("none", "dynamic-int8")
    here = {q: model.predict(x, verbose=0, runtime="litert", quantize=q) for q in quantizations}
    assert conversions[0] == 2 and len(entries(folder)) == 2
    finished(child(folder, folder.parent / "child.npz", "no-conversion", *quantizations))
    there = np.load(folder.parent / "child.npz")
    for quantize, tokens in here.items():
        np.testing.assert_array_equal(there[quantize], tokens)


def test_two_processes_converting_at_once_both_succeed_and_leave_one_entry(folder):
    outputs = [folder.parent / f"child{i}.npz" for i in range(2)]
    for process in [child(folder, output, "convert", "none") for output in outputs]:
        finished(process)
    np.testing.assert_array_equal(np.load(outputs[0])["none"], np.load(outputs[1])["none"])
    assert [path.name for path in folder.iterdir()] == [entries(folder)[0].name]  # no temporary


def test_the_key_changes_with_one_weight_value_the_shape_the_quantization_and_versions(
    monkeypatch,
):
    model = tiny()
    key = litert_cache.cache_key(model, 19, 2000, "none")
    assert litert_cache.cache_key(model, 19, 2000, "none") == key
    others = [
        litert_cache.cache_key(model, 16, 2000, "none"),
        litert_cache.cache_key(model, 19, 3000, "none"),
        litert_cache.cache_key(model, 19, 2000, "dynamic-int8"),
    ]
    kernel = model.weights[-1]
    value = kernel.numpy()
    value.flat[7] = np.nextafter(value.flat[7], np.inf)  # one ulp of one weight
    kernel.assign(value)
    others.append(litert_cache.cache_key(model, 19, 2000, "none"))
    assert others[-1]["weights_sha256"] != key["weights_sha256"]
    monkeypatch.setattr(litert_cache.importlib.metadata, "version", lambda name: "0.0")
    value.flat[7] = np.nextafter(value.flat[7], -np.inf)
    kernel.assign(value)
    others.append(litert_cache.cache_key(model, 19, 2000, "none"))
    assert others[-1]["weights_sha256"] == key["weights_sha256"]  # the same weights again
    paths = {litert_cache.entry_path(REPO, k) for k in [key, *others]}
    assert len(paths) == 1 + len(others)


def test_a_model_with_one_weight_changed_converts_and_one_with_weights_seen_before_does_not(
    folder, conversions
):
    model, x = tiny(), load_io("tiny")["raw_uv"]
    first = model.predict(x, verbose=0, runtime="litert")
    kernel = model.weights[-1]
    value = kernel.numpy()
    kernel.assign(value * 0.5)
    changed = model.predict(x, verbose=0, runtime="litert")
    assert conversions[0] == 2 and not model.litert_function(19, 2000).cached
    assert not np.array_equal(changed, first)
    kernel.assign(value)  # back to the first weights: converted before, found on disk
    np.testing.assert_array_equal(model.predict(x, verbose=0, runtime="litert"), first)
    assert conversions[0] == 2 and model.litert_function(19, 2000).cached
    assert len(entries(folder)) == 2


def _truncated(path, other):
    path.write_bytes(path.read_bytes()[:-100])


def _flipped_byte(path, other):
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0x10  # inside the flatbuffer
    path.write_bytes(bytes(data))


def _other_key(path, other):
    shutil.copyfile(other, path)  # a whole entry, of another key


def _not_an_entry(path, other):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncated, _flipped_byte, _other_key, _not_an_entry])
def test_a_damaged_entry_is_ignored(damage, folder, caplog):
    key, other_key = ({"input": [19, n]} for n in (2000, 3000))
    litert_cache.store(folder, key, b"flatbuffer " * 200, {"probe_cosine": 0.9999})
    litert_cache.store(folder, other_key, b"other " * 200, {})
    assert litert_cache.load(folder, key) == (b"flatbuffer " * 200, {"probe_cosine": 0.9999})
    damage(litert_cache.entry_path(folder, key), litert_cache.entry_path(folder, other_key))
    assert litert_cache.load(folder, key) is None
    assert "ignored" in caplog.text


def test_a_damaged_entry_is_never_loaded_and_is_replaced(folder, conversions):
    model, x = tiny(), load_io("tiny")["raw_uv"]
    tokens = model.predict(x, verbose=0, runtime="litert")
    (path,) = entries(folder)
    _flipped_byte(path, None)
    again = litert_conversion(tiny(), 19, 2000)
    assert not again.cached and conversions[0] == 2
    np.testing.assert_array_equal(again(x), tokens)
    assert litert_conversion(tiny(), 19, 2000).cached and conversions[0] == 2  # rewritten whole


def test_the_size_bound_evicts_the_least_recently_used(folder, monkeypatch):
    monkeypatch.setenv("EEGDINO_TF_CACHE_MAX_BYTES", "2500")
    a, b, c = ({"input": [19, n]} for n in (1000, 2000, 3000))
    litert_cache.store(folder, a, bytes(1000), {})
    litert_cache.store(folder, b, bytes(1000), {})
    os.utime(litert_cache.entry_path(folder, a), (1e9, 1e9))  # both long unused ...
    os.utime(litert_cache.entry_path(folder, b), (1.5e9, 1.5e9))  # ... a the longest
    assert litert_cache.load(folder, a) is not None  # used now
    litert_cache.store(folder, c, bytes(1000), {})
    assert entries(folder) == sorted(litert_cache.entry_path(folder, k) for k in (a, c))
    litert_cache.store(folder, b, bytes(3000), {})  # larger than the bound alone: not kept
    assert litert_cache.load(folder, b) is None and len(entries(folder)) == 2


def test_the_folder_and_the_bound_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("EEGDINO_TF_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert litert_cache.cache_folder() == tmp_path / "eegdino-tf" / "litert"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert litert_cache.cache_folder() == tmp_path / "home" / ".cache" / "eegdino-tf" / "litert"
    monkeypatch.setenv("EEGDINO_TF_CACHE", "off")
    assert litert_cache.cache_folder() is None
    assert litert_cache.max_bytes() == litert_cache.DEFAULT_MAX_BYTES == 2 * 2**30
    monkeypatch.setenv("EEGDINO_TF_CACHE_MAX_BYTES", "2GB")
    with pytest.raises(ConfigError, match="EEGDINO_TF_CACHE_MAX_BYTES='2GB': expected a whole"):
        litert_cache.max_bytes()


def test_no_cache_when_turned_off(folder, monkeypatch, conversions):
    model = tiny()
    assert not litert_conversion(model, 19, 2000, cache=False).cached
    monkeypatch.setenv("EEGDINO_TF_CACHE", "off")
    assert not litert_conversion(model, 19, 2000).cached
    assert conversions[0] == 2 and not folder.exists()


def test_an_unwritable_cache_costs_a_log_line_not_the_prediction(tmp_path, monkeypatch, caplog):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("EEGDINO_TF_CACHE", str(tmp_path / "file" / "cache"))
    tokens = tiny().predict(load_io("tiny")["raw_uv"], verbose=0, runtime="litert")
    assert tokens.shape == load_io("tiny")["tokens"].shape
    assert "LiteRT conversion not cached in" in caplog.text
