"""The benchmark harness (correctness only, never timing) and mixed-precision accuracy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import CASES, REPO, fixture_path, load_io, nrmse

from eegdino_tf import bench
from eegdino_tf.config import PRESETS


def test_flops_match_the_architecture_costs():
    gflop = {size: bench.flops_per_example(PRESETS[size]) / 1e9 for size in PRESETS}
    assert gflop["small"] == pytest.approx(2.06, rel=0.01)
    assert gflop["medium"] == pytest.approx(14.2, rel=0.02)
    assert gflop["large"] == pytest.approx(81, rel=0.02)


def test_quick_options_yield_to_explicit_ones():
    parser = bench.argparse.ArgumentParser()
    bench.add_arguments(parser)
    settings = bench.settings_from_args(parser.parse_args(["--quick", "--runs", "7"]))
    assert settings.runs == 7
    assert settings.sizes == bench.QUICK["sizes"]
    assert settings.memory_runtimes == bench.Settings().memory_runtimes
    none = bench.settings_from_args(parser.parse_args(["--memory-runtimes", "none"]))
    assert none.memory_runtimes == ()
    with pytest.raises(SystemExit):
        parser.parse_args(["--runtimes", "eager,jax"])


def test_ratios_compare_same_precision_with_pytorch():
    def row(runtime, precision, ms):
        return {"size": "small", "batch": 8, "runtime": runtime, "precision": precision,
                "median_ms": ms, "min_ms": ms / 2}  # fmt: skip

    rows = [
        row("xla", "float32", 10.0),
        row("xla", "mixed_bfloat16", 5.0),
        row("xla", "mixed_float16", 8.0),
        row("torch", "float32", 20.0),
        row("torch-bf16", "mixed_bfloat16", 15.0),
    ]
    bench.add_ratios(rows)
    names = ("vs_torch", "vs_torch_min", "vs_float32")
    ratios = {(r["runtime"], r["precision"]): tuple(r[n] for n in names) for r in rows}
    assert ratios[("xla", "float32")] == (2.0, 2.0, 1.0)
    assert ratios[("xla", "mixed_bfloat16")] == (3.0, 3.0, 2.0)
    assert ratios[("xla", "mixed_float16")] == (None, None, 1.25)
    assert ratios[("torch", "float32")] == (None, None, None)


@pytest.mark.parametrize(("lead_in_below_ms", "calls_per_round"), [(1e9, 2), (0.0, 1)])
def test_short_calls_get_an_untimed_lead_in_each_round(monkeypatch, lead_in_below_ms,
                                                       calls_per_round):  # fmt: skip
    monkeypatch.setattr(bench, "LEAD_IN_BELOW_MS", lead_in_below_ms)
    calls = {"a": 0, "b": 0}

    def runner(name):
        def run(x):
            calls[name] += 1

        return run

    contenders = [bench.Contender(n, "float32", runner(n)) for n in calls]
    ready = bench.measure(contenders, x=None, runs=3, warmup=2, notes=[], log=lambda _: None)
    assert [len(c.times_ms) for c in ready] == [3, 3]
    assert calls == {"a": 2 + 3 * calls_per_round, "b": 2 + 3 * calls_per_round}


def hold_memory(megabytes: int, seconds: float) -> int:
    """Keep ``megabytes`` resident for ``seconds`` (run in a child by the test below)."""
    block = b"x" * (megabytes << 20)
    time.sleep(seconds)
    return len(block)


def test_run_in_child_returns_reports_and_caps():
    assert bench.run_in_child(os.getpid) != os.getpid()
    with pytest.raises(bench.Unavailable, match="ValueError"):
        bench.run_in_child(int, "not a number")
    with pytest.raises(bench.Unavailable, match="cap"):
        bench.run_in_child(hold_memory, 400, 20.0, limit_mb=250)


def test_quick_run_writes_report_and_chart(tmp_path):
    """A tiny end-to-end run through the CLI: every requested runtime either has a row with
    positive numbers or a note saying why it was skipped."""
    out = tmp_path / "results"
    runtimes = ["eager", "predict", "graph", "xla", "torch"]
    result = subprocess.run(
        [sys.executable, "-m", "eegdino_tf", "bench", "--quick", "--depth", "1",
         "--batches", "1,2", "--runs", "2", "--precisions", "float32,mixed_bfloat16",
         "--runtimes", ",".join(runtimes), "--leak-calls", "3", "--memory-runtimes", "predict",
         "--output-dir", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vs torch" in result.stdout

    report = json.loads((out / bench.JSON_NAME).read_text())
    assert (out / bench.CHART_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*")), "temporary files left behind"
    assert report["settings"]["sizes"] == ["small"]
    assert report["machine"]["cpu"] and report["machine"]["threads"] == 2
    assert report["gflop_per_example"]["small"] > 0

    rows = report["results"]
    measured = {(r["runtime"], r["precision"], r["batch"]) for r in rows}
    for precision in ("float32", "mixed_bfloat16"):
        for runtime in ("eager", "predict", "graph", "xla"):
            assert {(runtime, precision, 1), (runtime, precision, 2)} <= measured
    for r in rows:
        assert len(r["times_ms"]) == 2
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["samples_per_s"] > 0 and r["gflop_per_s"] > 0
    if any(r["runtime"] == "torch" for r in rows):
        ours = next(r for r in rows if (r["runtime"], r["precision"]) == ("xla", "float32"))
        assert ours["vs_torch"] > 0
    else:
        assert any(n.startswith("torch") for n in report["notes"])

    (probe,) = report["peak_memory"]["runtimes"]
    assert probe["runtime"] == "predict"
    assert 0 < probe["loaded_mb"] <= probe["peak_first_call_mb"]
    leaks = {leak["runtime"]: leak for leak in report["rss_check"]}
    assert set(leaks) == {"predict", "graph", "xla"}
    assert all(leak["calls"] == 3 and leak["rss_after_mb"] > 0 for leak in leaks.values())


def test_example_script_shows_help():
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "bench.py"), "--help"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--runtimes" in result.stdout
    assert "tensorflow" not in result.stderr.lower()


@pytest.mark.parametrize(
    ("precision", "limit"), [("mixed_float16", 5e-3), ("mixed_bfloat16", 2e-2)]
)
def test_mixed_precision_small_encoder_accuracy(precision, limit):
    import eegdino_tf

    io = load_io("small")
    encoder = eegdino_tf.load_encoder(
        fixture_path("small_encoder.safetensors"), precision=precision
    )
    for case in CASES:
        tokens = encoder.predict(io[f"raw_uv{case}"], verbose=0)
        assert tokens.dtype == "float32"
        assert nrmse(tokens, io[f"tokens{case}"]) <= limit
