"""The benchmark harness (correctness only, never timing) and mixed-precision accuracy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO

from eegdino_tf import bench, hardware
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
    assert settings.memory_runtimes == () and not settings.isolated
    assert set(settings.runtimes).isdisjoint(bench.EXPORTED)
    isolated = bench.settings_from_args(parser.parse_args(["--quick", "--isolated"]))
    assert isolated.isolated and isolated.runs == bench.QUICK["runs"]
    full = bench.settings_from_args(parser.parse_args([]))
    assert full.isolated and full.memory_runtimes == bench.Settings().memory_runtimes
    assert not bench.settings_from_args(parser.parse_args(["--no-isolated"])).isolated
    none = bench.settings_from_args(parser.parse_args(["--memory-runtimes", "none"]))
    assert none.memory_runtimes == ()
    with pytest.raises(SystemExit):
        parser.parse_args(["--runtimes", "eager,jax"])


def row(runtime, precision, ms, mode=bench.ROUND_ROBIN, batch=8):
    """A result row as :func:`bench.run_benchmark` makes them (the fields the tests read)."""
    return {"size": "small", "batch": batch, "runtime": runtime, "precision": precision,
            "mode": mode, "median_ms": ms, "min_ms": ms / 2, "gflop_per_s": 1e3 / ms}  # fmt: skip


def test_ratios_compare_same_precision_with_pytorch_within_each_mode():
    rows = [
        row("xla", "float32", 10.0),
        row("xla", "mixed_bfloat16", 5.0),
        row("xla", "mixed_float16", 8.0),
        row("torch", "float32", 20.0),
        row("torch-bf16", "mixed_bfloat16", 15.0),
        row("xla", "float32", 12.0, bench.ISOLATED),
        row("torch", "float32", 6.0, bench.ISOLATED),
        row("xla", "mixed_bfloat16", 6.0, bench.ISOLATED),
    ]
    bench.add_ratios(rows)
    names = ("vs_torch", "vs_torch_min", "vs_float32")
    ratios = {(r["mode"], r["runtime"], r["precision"]): tuple(r[n] for n in names) for r in rows}
    rr, alone = bench.ROUND_ROBIN, bench.ISOLATED
    assert ratios[(rr, "xla", "float32")] == (2.0, 2.0, 1.0)
    assert ratios[(rr, "xla", "mixed_bfloat16")] == (3.0, 3.0, 2.0)
    assert ratios[(rr, "xla", "mixed_float16")] == (None, None, 1.25)
    assert ratios[(rr, "torch", "float32")] == (None, None, None)
    assert ratios[(alone, "xla", "float32")] == (0.5, 0.5, 1.0)
    assert ratios[(alone, "xla", "mixed_bfloat16")] == (None, None, 2.0)  # no isolated torch-bf16


def test_peak_fractions_match_precision_and_predict_overhead_is_a_difference():
    rows = [
        row("predict", "float32", 12.0),
        row("xla", "float32", 10.0),
        row("predict", "mixed_bfloat16", 9.0),
        row("graph", "mixed_bfloat16", 8.0),
        row("predict", "mixed_float16", 20.0),
        row("torch-bf16", "mixed_bfloat16", 4.0),
        row("predict", "float32", 11.0, bench.ISOLATED),
        row("xla", "float32", 10.5, bench.ISOLATED),
        row("predict", "float32", 30.0, batch=32),  # no bare call at batch 32
    ]
    peaks = {name: None for name in bench.PEAKS}
    peaks.update(tf_float32=200.0, tf_xla_float32=250.0, tf_bfloat16=100.0, torch_bfloat16=500.0)
    assert bench.best_peaks(peaks) == {"float32": 250.0, "bfloat16": 500.0}
    bench.add_peak_fractions(rows, peaks)
    fractions = [r["fraction_of_peak"] for r in rows]
    expected = [1e3 / ms / peak for ms, peak in [(12, 250), (10, 250), (9, 500), (8, 500),
                (20, 250), (4, 500), (11, 250), (10.5, 250), (30, 250)]]  # fmt: skip
    assert fractions == pytest.approx(expected)
    bench.add_peak_fractions(rows, dict.fromkeys(bench.PEAKS))
    assert all(r["fraction_of_peak"] is None for r in rows)

    bare = {"float32": "xla", "mixed_bfloat16": "graph", "mixed_float16": "xla"}
    overheads = bench.predict_overheads(rows, bare)
    found = {(o["mode"], o["precision"]): o for o in overheads}
    rr, alone = bench.ROUND_ROBIN, bench.ISOLATED
    assert set(found) == {(rr, "float32"), (rr, "mixed_bfloat16"), (alone, "float32")}
    assert all(o["batch"] == 8 for o in overheads)
    assert found[(rr, "float32")]["overhead_ms"] == pytest.approx(2.0)
    assert found[(rr, "mixed_bfloat16")]["bare_runtime"] == "graph"
    assert found[(alone, "float32")]["overhead_ms"] == pytest.approx(0.5)


def test_table_puts_each_isolated_row_after_its_round_robin_row():
    alone = bench.ISOLATED
    rows = [row("xla", "float32", 1.0), row("torch", "float32", 2.0),
            row("torch", "float32", 3.0, alone), row("xla", "float32", 4.0, alone)]  # fmt: skip
    assert [r["median_ms"] for r in bench.table_order(rows)] == [1.0, 4.0, 2.0, 3.0]


def test_matmul_peak_measures_every_library_here_or_notes_why_not():
    notes = []
    peaks = bench.matmul_peak(64, 2, notes, log=lambda _: None)
    assert list(peaks) == list(bench.PEAKS)
    assert peaks["tf_float32"] > 0 and peaks["tf_xla_float32"] > 0
    for name, value in peaks.items():
        assert (value is not None and value > 0) or any(n.startswith(f"matmul peak {name}:")
                                                        for n in notes)  # fmt: skip


def test_reference_model_unavailable_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "braindecode.models", None)  # makes the import fail
    with pytest.raises(bench.Unavailable, match="PyTorch is not installed|torchaudio==2.9.1"):
        bench.reference_model(PRESETS["small"], 19, 2000)
    assert not hasattr(bench, "_stub_torchaudio")


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


def test_an_export_already_made_in_the_run_is_reused(tmp_path):
    """What lets an isolated child time an export without exporting (it cannot: a child
    process may not start another)."""
    models = bench.SizeModels(bench.Settings(depth=1), "small", tmp_path)
    made = {fmt: tmp_path / name for fmt, name in (("onnx", "small.onnx"),
                                                    ("tflite", "small_b8.tflite"))}  # fmt: skip
    for path in made.values():
        path.write_bytes(b"")
    assert models.exported("onnx", 8) == made["onnx"]
    assert models.exported("tflite", 8) == made["tflite"]
    assert not models._cache, "nothing was built or exported"


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
         "--gemm", "128", "--output-dir", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vs torch" in result.stdout

    report = json.loads((out / bench.JSON_NAME).read_text())
    assert (out / bench.CHART_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*")), "temporary files left behind"
    assert report["settings"]["sizes"] == ["small"] and not report["settings"]["isolated"]
    machine = report["machine"]
    assert machine["cpu"] and machine["threads"] == 2
    assert set(machine["cpu_flags"]) == set(hardware.REPORTED_FLAGS)
    assert machine["hardware"].startswith(f"CPU {machine['cpu']} ")
    assert machine["cpu"] in result.stdout.splitlines()[0]
    assert report["gflop_per_example"]["small"] > 0
    peaks = report["matmul_peak_gflop_per_s"]
    assert list(peaks) == list(bench.PEAKS)
    assert peaks["tf_float32"] > 0 and peaks["tf_bfloat16"] > 0
    assert "matmul peak (128x128x128" in result.stdout

    rows = report["results"]
    measured = {(r["runtime"], r["precision"], r["batch"]) for r in rows}
    for precision in ("float32", "mixed_bfloat16"):
        for runtime in ("eager", "predict", "graph", "xla"):
            assert {(runtime, precision, 1), (runtime, precision, 2)} <= measured
    for r in rows:
        assert r["mode"] == bench.ROUND_ROBIN
        assert len(r["times_ms"]) == 2
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["samples_per_s"] > 0 and r["gflop_per_s"] > 0 and r["fraction_of_peak"] > 0
    overheads = report["predict_overhead_ms"]
    assert {(o["precision"], o["batch"]) for o in overheads} == {
        (p, b) for p in ("float32", "mixed_bfloat16") for b in (1, 2)
    }
    assert all(o["overhead_ms"] == o["predict_ms"] - o["bare_ms"] for o in overheads)
    assert "predict's overhead" in result.stdout
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


def test_isolated_run_times_each_contender_in_a_process_of_its_own(tmp_path):
    """--isolated: every round-robin row gets an isolated twin, with ratios of its own mode."""
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "eegdino_tf", "bench", "--quick", "--depth", "1", "--batches", "1",
         "--runs", "2", "--runtimes", "xla,torch", "--isolated", "--leak-calls", "0",
         "--gemm", "64", "--output-dir", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / bench.JSON_NAME).read_text())
    rows = {(r["mode"], r["runtime"]): r for r in report["results"]}
    contenders = {runtime for _, runtime in rows}
    assert "xla" in contenders
    for runtime in contenders:
        alone = rows[(bench.ISOLATED, runtime)]
        assert len(alone["times_ms"]) == 2 and alone["median_ms"] > 0
        assert rows[(bench.ROUND_ROBIN, runtime)]["first_call_ms"] > 0
    if "torch" in contenders:
        ours = rows[(bench.ISOLATED, "xla")]
        assert ours["vs_torch"] == rows[(bench.ISOLATED, "torch")]["median_ms"] / ours["median_ms"]
    assert "isolated" in result.stdout and "round-robin" in result.stdout


def test_example_script_shows_help():
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "bench.py"), "--help"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--runtimes" in result.stdout
    assert "tensorflow" not in result.stderr.lower()
