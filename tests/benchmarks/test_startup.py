"""``python -m benchmarks.startup``: each first call runs in a fresh process, and the default
runtime there runs what the LiteRT cache holds."""

from __future__ import annotations

import eegdino_tf
from benchmarks import startup
from benchmarks.machine import run_in_child
from eegdino_tf.weights import save_weights
from tests.helpers import OVERRIDES, fixture_path


def test_first_calls_run_keras_on_a_cold_cache_and_litert_once_it_is_warm(tmp_path):
    model = eegdino_tf.load_encoder(fixture_path("tiny_encoder.safetensors"), **OVERRIDES["tiny"])
    weights = tmp_path / "tiny.safetensors"
    save_weights(model, weights, layout="released")  # reloads without overrides
    cold, warm = str(tmp_path / "cold"), str(tmp_path / "warm")
    found = {
        name: run_in_child(startup.first_call, str(weights), runtime, cache, 1, 2)
        for name, runtime, cache in (
            ("auto, cold cache", "auto", cold),
            ("litert, cold cache", "litert", warm),
            ("auto, warm cache", "auto", warm),
        )
    }
    assert {name: got["ran"] for name, got in found.items()} == {
        "auto, cold cache": "keras",
        "litert, cold cache": "litert",
        "auto, warm cache": "litert",
    }
    assert all(got["first_call_s"] > 0 and got["load_s"] > 0 for got in found.values())


def test_table_gives_each_kind_its_median_and_the_cold_ratio():
    medians = {"keras": 4.0, "auto, cold cache": 4.2, "litert, cold cache": 9.0,
               "auto, warm cache": 1.0}  # fmt: skip
    ran = {"keras": "keras", "auto, cold cache": "keras", "litert, cold cache": "litert",
           "auto, warm cache": "litert"}  # fmt: skip
    row = {"size": "small", "batch": 1, "median_s": medians, "ran": ran,
           "auto_cold_over_keras": 4.2 / 4.0}  # fmt: skip
    lines = startup.table({"rows": [row]}).splitlines()
    assert lines[0].count("|") == len(startup.KINDS) + 4
    assert lines[2] == (
        "| small | 1 | 4.00 s (keras) | 4.20 s (keras) | 9.00 s (litert) | 1.00 s (litert) "
        "| 1.05x |"
    )
