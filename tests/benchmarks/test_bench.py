"""The benchmark harness (correctness only, never timing) and mixed-precision accuracy."""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import cli, compare, machine, peak, runners, timing, workload
from benchmarks.report import table_order
from benchmarks.settings import (
    CHART_NAME,
    EXPORTED,
    ISOLATED,
    JSON_NAME,
    QUICK,
    ROUND_ROBIN,
    Settings,
    Unavailable,
)
from eegdino_tf import hardware
from eegdino_tf.config import PRESETS
from tests.helpers import REPO


def test_flops_match_the_architecture_costs():
    gflop = {size: workload.flops_per_example(PRESETS[size]) / 1e9 for size in PRESETS}
    assert gflop["small"] == pytest.approx(2.06, rel=0.01)
    assert gflop["medium"] == pytest.approx(14.2, rel=0.02)
    assert gflop["large"] == pytest.approx(81, rel=0.02)


def test_quick_options_yield_to_explicit_ones():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    settings = cli.settings_from_args(parser.parse_args(["--quick", "--runs", "7"]))
    assert settings.runs == 7
    assert settings.sizes == QUICK["sizes"]
    assert settings.memory_runtimes == () and not settings.isolated
    assert set(settings.runtimes).isdisjoint(EXPORTED)
    isolated = cli.settings_from_args(parser.parse_args(["--quick", "--isolated"]))
    assert isolated.isolated and isolated.runs == QUICK["runs"]
    full = cli.settings_from_args(parser.parse_args([]))
    assert full.isolated and full.memory_runtimes == Settings().memory_runtimes
    assert not cli.settings_from_args(parser.parse_args(["--no-isolated"])).isolated
    none = cli.settings_from_args(parser.parse_args(["--memory-runtimes", "none"]))
    assert none.memory_runtimes == ()
    with pytest.raises(SystemExit):
        parser.parse_args(["--runtimes", "eager,jax"])


def row(runtime, precision, ms, mode=ROUND_ROBIN, batch=8):
    """A result row as :func:`benchmarks.run.run_benchmark` makes them (the fields the tests
    read)."""
    return {"size": "small", "batch": batch, "runtime": runtime, "precision": precision,
            "mode": mode, "median_ms": ms, "min_ms": ms / 2, "gflop_per_s": 1e3 / ms}  # fmt: skip


def test_ratios_compare_same_precision_with_pytorch_within_each_mode():
    rows = [
        row("xla", "float32", 10.0),
        row("xla", "mixed_bfloat16", 5.0),
        row("xla", "mixed_float16", 8.0),
        row("torch", "float32", 20.0),
        row("torch-bf16", "mixed_bfloat16", 15.0),
        row("xla", "float32", 12.0, ISOLATED),
        row("torch", "float32", 6.0, ISOLATED),
        row("xla", "mixed_bfloat16", 6.0, ISOLATED),
    ]
    compare.add_ratios(rows)
    names = ("vs_torch", "vs_torch_min", "vs_float32")
    ratios = {(r["mode"], r["runtime"], r["precision"]): tuple(r[n] for n in names) for r in rows}
    rr, alone = ROUND_ROBIN, ISOLATED
    assert ratios[(rr, "xla", "float32")] == (2.0, 2.0, 1.0)
    assert ratios[(rr, "xla", "mixed_bfloat16")] == (3.0, 3.0, 2.0)
    assert ratios[(rr, "xla", "mixed_float16")] == (None, None, 1.25)
    assert ratios[(rr, "torch", "float32")] == (None, None, None)
    assert ratios[(alone, "xla", "float32")] == (0.5, 0.5, 1.0)
    assert ratios[(alone, "xla", "mixed_bfloat16")] == (None, None, 2.0)  # no isolated torch-bf16


def test_paired_ratios_take_the_median_of_each_rounds_ratio_and_name_the_fastest_other():
    # The host slows down after round 1: every contender's later calls take 3x longer.
    times = {"predict-litert": [10.0, 33.0, 30.0], "tflite": [9.0, 30.0, 30.0],
             "torch": [20.0, 60.0, 66.0], "onnx": [12.0, 40.0, 36.0]}  # fmt: skip
    rows = []
    for runtime, ms in times.items():
        rows.append({**row(runtime, "float32", sorted(ms)[1]), "times_ms": ms})
    rows.append(row("tflite", "float32", 5.0, ISOLATED))  # another mode: never compared
    rows.append(row("predict-litert", "float32", 6.0, ISOLATED))
    compare.add_ratios(rows)
    found = {(r["mode"], r["runtime"]): r for r in rows}
    litert = found[(ROUND_ROBIN, "predict-litert")]
    assert litert["vs_torch_paired"] == pytest.approx(2.0)  # per round: 2.0, 1.82, 2.2
    assert litert["fastest_other"] == "tflite"
    assert litert["vs_fastest_other"] == pytest.approx(30.0 / 30.0)
    assert litert["vs_fastest_other_paired"] == pytest.approx(30.0 / 33.0)  # 0.9, 0.91, 1.0
    tflite = found[(ROUND_ROBIN, "tflite")]
    assert tflite["fastest_other"] == "predict-litert"
    assert found[(ROUND_ROBIN, "torch")]["vs_torch_paired"] is None
    assert tflite["vs_fastest_other_paired"] == pytest.approx(33.0 / 30.0)
    alone = found[(ISOLATED, "predict-litert")]
    assert alone["fastest_other"] == "tflite"
    assert alone["vs_fastest_other"] == pytest.approx(5.0 / 6.0)
    assert alone["vs_fastest_other_paired"] is None  # no rounds in common


def test_peak_fractions_match_precision_and_predict_overhead_is_a_difference():
    rows = [
        row("predict-keras", "float32", 12.0),
        row("xla", "float32", 10.0),
        row("predict", "mixed_bfloat16", 9.0),
        row("graph", "mixed_bfloat16", 8.0),
        row("predict", "mixed_float16", 20.0),
        row("torch-bf16", "mixed_bfloat16", 4.0),
        row("predict-keras", "float32", 11.0, ISOLATED),
        row("xla", "float32", 10.5, ISOLATED),
        row("predict-keras", "float32", 30.0, batch=32),  # no bare call at batch 32
    ]
    peaks = {name: None for name in peak.PEAKS}
    peaks.update(tf_float32=200.0, tf_xla_float32=250.0, tf_bfloat16=100.0, torch_bfloat16=500.0)
    assert peak.best_peaks(peaks) == {"float32": 250.0, "bfloat16": 500.0}
    peak.add_peak_fractions(rows, peaks)
    fractions = [r["fraction_of_peak"] for r in rows]
    expected = [1e3 / ms / peak for ms, peak in [(12, 250), (10, 250), (9, 500), (8, 500),
                (20, 250), (4, 500), (11, 250), (10.5, 250), (30, 250)]]  # fmt: skip
    assert fractions == pytest.approx(expected)
    peak.add_peak_fractions(rows, dict.fromkeys(peak.PEAKS))
    assert all(r["fraction_of_peak"] is None for r in rows)

    bare = {"float32": "xla", "mixed_bfloat16": "graph", "mixed_float16": "xla"}
    overheads = compare.predict_overheads(rows, bare)
    found = {(o["mode"], o["precision"]): o for o in overheads}
    rr, alone = ROUND_ROBIN, ISOLATED
    assert set(found) == {(rr, "float32"), (rr, "mixed_bfloat16"), (alone, "float32")}
    assert all(o["batch"] == 8 for o in overheads)
    assert found[(rr, "float32")]["overhead_ms"] == pytest.approx(2.0)
    assert found[(rr, "mixed_bfloat16")]["bare_runtime"] == "graph"
    assert found[(alone, "float32")]["overhead_ms"] == pytest.approx(0.5)


def test_litert_predict_overhead_is_against_the_tflite_export():
    rows = [row("predict-litert", "float32", 7.0), row("tflite", "float32", 6.5),
            row("predict", "float32", 7.5), row("predict-keras", "float32", 12.0),
            row("xla", "float32", 10.0), row("predict-int8", "float32", 4.0)]  # fmt: skip
    overheads = compare.predict_overheads(rows, {"float32": "xla"})
    found = {o["runtime"]: o for o in overheads}
    assert found["predict-litert"]["bare_runtime"] == "tflite"
    assert found["predict-litert"]["overhead_ms"] == pytest.approx(0.5)
    # The default predict of a float32 model runs its cached LiteRT conversion.
    assert found["predict"]["bare_runtime"] == "tflite"
    assert found["predict"]["overhead_ms"] == pytest.approx(1.0)
    assert found["predict-keras"]["overhead_ms"] == pytest.approx(2.0)
    assert "predict-int8" not in found  # no bare int8 row, and no own_ms in these rows


def test_table_puts_each_isolated_row_after_its_round_robin_row():
    alone = ISOLATED
    rows = [row("xla", "float32", 1.0), row("torch", "float32", 2.0),
            row("torch", "float32", 3.0, alone), row("xla", "float32", 4.0, alone)]  # fmt: skip
    assert [r["median_ms"] for r in table_order(rows)] == [1.0, 4.0, 2.0, 3.0]


def test_matmul_peak_measures_every_library_here_or_notes_why_not():
    notes = []
    peaks = peak.matmul_peak(64, 2, notes, log=lambda _: None)
    assert list(peaks) == list(peak.PEAKS)
    assert peaks["tf_float32"] > 0 and peaks["tf_xla_float32"] > 0
    for name, value in peaks.items():
        assert (value is not None and value > 0) or any(n.startswith(f"matmul peak {name}:")
                                                        for n in notes)  # fmt: skip


def test_reference_model_unavailable_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "braindecode.models", None)  # makes the import fail
    with pytest.raises(Unavailable, match="PyTorch is not installed|torchaudio==2.9.1") as err:
        runners.reference_model(PRESETS["small"], 19, 2000)
    assert 'pip install ".[bench]"' in str(err.value)
    assert not hasattr(runners, "_stub_torchaudio")


@pytest.mark.parametrize(("lead_in_below_ms", "calls_per_round"), [(1e9, 2), (0.0, 1)])
def test_short_calls_get_an_untimed_lead_in_each_round(monkeypatch, lead_in_below_ms,
                                                       calls_per_round):  # fmt: skip
    monkeypatch.setattr(timing, "LEAD_IN_BELOW_MS", lead_in_below_ms)
    calls = {"a": 0, "b": 0}

    def runner(name):
        def run(x):
            calls[name] += 1

        return run

    contenders = [timing.Contender(n, "float32", runner(n)) for n in calls]
    ready = timing.measure(contenders, x=None, runs=3, warmup=2, notes=[], log=lambda _: None)
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
    models = runners.SizeModels(Settings(depth=1), "small", tmp_path)
    made = {fmt: tmp_path / name for fmt, name in (("onnx", "small.onnx"),
                                                    ("tflite", "small_b8.tflite"))}  # fmt: skip
    for path in made.values():
        path.write_bytes(b"")
    assert models.exported("onnx", 8) == made["onnx"]
    assert models.exported("tflite", 8) == made["tflite"]
    assert not models._cache, "nothing was built or exported"


def test_run_in_child_returns_reports_and_caps():
    assert machine.run_in_child(os.getpid) != os.getpid()
    with pytest.raises(Unavailable, match="ValueError"):
        machine.run_in_child(int, "not a number")
    with pytest.raises(Unavailable, match="cap"):
        machine.run_in_child(hold_memory, 400, 20.0, limit_mb=250)


def test_quick_run_writes_report_and_chart(tmp_path):
    """A tiny end-to-end run through the CLI: every requested runtime either has a row with
    positive numbers or a note saying why it was skipped."""
    out = tmp_path / "results"
    runtimes = ["eager", "predict", "predict-keras", "graph", "xla", "torch"]
    result = subprocess.run(
        [sys.executable, "-m", "eegdino_tf", "bench", "--quick", "--depth", "1",
         "--batches", "1,2", "--runs", "2", "--precisions", "float32,mixed_bfloat16",
         "--runtimes", ",".join(runtimes), "--leak-calls", "3", "--memory-runtimes", "predict",
         "--gemm", "128", "--output-dir", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vs torch" in result.stdout

    report = json.loads((out / JSON_NAME).read_text())
    assert (out / CHART_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*")), "temporary files left behind"
    assert report["settings"]["sizes"] == ["small"] and not report["settings"]["isolated"]
    info = report["machine"]
    assert info["cpu"] and info["threads"] == 2
    assert set(info["cpu_flags"]) == set(hardware.REPORTED_FLAGS)
    assert info["hardware"].startswith(f"CPU {info['cpu']} ")
    assert info["cpu"] in result.stdout.splitlines()[0]
    assert report["gflop_per_example"]["small"] > 0
    peaks = report["matmul_peak_gflop_per_s"]
    assert list(peaks) == list(peak.PEAKS)
    assert peaks["tf_float32"] > 0 and peaks["tf_bfloat16"] > 0
    assert "matmul peak (128x128x128" in result.stdout

    rows = report["results"]
    measured = {(r["runtime"], r["precision"], r["batch"]) for r in rows}
    for precision in ("float32", "mixed_bfloat16"):
        for runtime in ("eager", "predict", "graph", "xla"):
            assert {(runtime, precision, 1), (runtime, precision, 2)} <= measured
    for r in rows:
        assert r["mode"] == ROUND_ROBIN
        assert len(r["times_ms"]) == 2
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["samples_per_s"] > 0 and r["gflop_per_s"] > 0 and r["fraction_of_peak"] > 0
    overheads = {
        (o["runtime"], o["precision"], o["batch"]): o for o in report["predict_overhead_ms"]
    }
    both = {(p, b) for p in ("float32", "mixed_bfloat16") for b in (1, 2)}
    assert {(p, b) for runtime, p, b in overheads if runtime == "predict-keras"} == both
    assert {(p, b) for runtime, p, b in overheads if runtime == "predict"} == both
    for o in overheads.values():
        assert o["bare_ms"] is None or o["overhead_ms"] == o["predict_ms"] - o["bare_ms"]
    # The default predict of the float32 model ran its LiteRT conversion (no tflite row here
    # to subtract: its own time is measured inside each call).
    for batch in (1, 2):
        default = overheads[("predict", "float32", batch)]
        assert default["bare_runtime"] == "tflite" and default["own_ms"] > 0
        assert overheads[("predict", "mixed_bfloat16", batch)]["bare_runtime"] == "graph" or (
            overheads[("predict", "mixed_bfloat16", batch)]["bare_runtime"] == "xla"
        )
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
    assert set(leaks) == {"predict", "predict-keras", "graph", "xla"}
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
    report = json.loads((out / JSON_NAME).read_text())
    rows = {(r["mode"], r["runtime"]): r for r in report["results"]}
    contenders = {runtime for _, runtime in rows}
    assert "xla" in contenders
    for runtime in contenders:
        alone = rows[(ISOLATED, runtime)]
        assert len(alone["times_ms"]) == 2 and alone["median_ms"] > 0
        assert rows[(ROUND_ROBIN, runtime)]["first_call_ms"] > 0
    if "torch" in contenders:
        ours = rows[(ISOLATED, "xla")]
        assert ours["vs_torch"] == rows[(ISOLATED, "torch")]["median_ms"] / ours["median_ms"]
    assert "isolated" in result.stdout and "round-robin" in result.stdout


def _without_pythonpath() -> dict[str, str]:
    """This process's environment, without a PYTHONPATH that could make benchmarks/
    importable from anywhere."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


#: The console script next to this interpreter (absent when the package is not installed).
CONSOLE_SCRIPT = Path(sys.executable).with_name("eegdino-tf")


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, str(REPO / "examples" / "bench.py")],
        [sys.executable, "-m", "benchmarks"],
        [sys.executable, "-m", "eegdino_tf", "bench"],
        pytest.param(
            [str(CONSOLE_SCRIPT), "bench"],  # finds benchmarks/ in the working directory
            marks=pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="no console script"),
        ),
    ],
    ids=["example", "python -m benchmarks", "python -m eegdino_tf", "console script"],
)
def test_every_entry_point_shows_the_full_help(command):
    result = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, cwd=REPO, timeout=60,
        env=_without_pythonpath(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--runtimes" in result.stdout
    assert "the full default run takes" in " ".join(result.stdout.split())
    assert "tensorflow" not in result.stderr.lower()


def test_bench_outside_the_repository_fails_with_one_line(tmp_path):
    """Without benchmarks/ (not importable, not in the working directory) the command still
    exists, and says in one line where to run it."""
    command = [sys.executable, "-m", "eegdino_tf", "bench"]
    result = subprocess.run(
        [*command, "--quick"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env=_without_pythonpath(),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("eegdino-tf bench: error: the benchmark lives in the repository's ")
    assert "benchmarks/ folder" in line and "python -m benchmarks" in line
    assert 'pip install ".[bench]"' in line

    listed = subprocess.run(
        [sys.executable, "-m", "eegdino_tf", "--help"], capture_output=True, text=True,
        cwd=tmp_path, timeout=60, env=_without_pythonpath(),
    )  # fmt: skip
    assert listed.returncode == 0 and "bench" in listed.stdout


def _imported_modules(tree: ast.AST) -> set[str]:
    """Top-level names of the modules a source file imports (statements, and
    ``importlib.import_module`` / ``__import__`` calls with a literal name)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value.split(".")[0])
    return found


def _writes_sys_modules(tree: ast.AST) -> bool:
    """Whether a source file assigns to or deletes from ``sys.modules``, or mutates it."""
    for node in ast.walk(tree):
        target = None
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del)):
            target = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("update", "setdefault", "pop", "popitem", "clear"):
                target = node.func.value
        if target is not None and ast.unparse(target) == "sys.modules":
            return True
    return False


def test_the_library_imports_neither_argparse_nor_the_benchmark():
    """argparse belongs to eegdino_tf/cli/; benchmarks/ is imported (lazily) by the bench
    command only; nothing writes sys.modules."""
    package = REPO / "eegdino_tf"
    offenders = {}
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(), filename=name)
        imported = _imported_modules(tree)
        banned = set() if name == "eegdino_tf/cli/bench.py" else {"benchmarks"}
        if not name.startswith("eegdino_tf/cli/"):
            banned.add("argparse")
        if imported & banned:
            offenders[name] = sorted(imported & banned)
        if _writes_sys_modules(tree):
            offenders[name] = [*offenders.get(name, []), "writes sys.modules"]
    assert not offenders, offenders
    assert not (package / "bench.py").exists(), "the benchmark moved to benchmarks/"
    for path in sorted((REPO / "benchmarks").rglob("*.py")):
        assert not _writes_sys_modules(ast.parse(path.read_text())), path


def test_training_benchmark_times_a_keras_step_and_names_the_missing_reference():
    import importlib.util

    from benchmarks import training

    row = training.time_steps("keras", "small", batch=2, steps=1, warmup=1, threads=2)
    assert row["contender"] == "keras" and row["batch"] == 2
    assert row["samples_per_s"] > 0 and row["median_step_ms"] > 0 and row["peak_rss_mb"] > 0
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(training.Unavailable, match=r'pip install "\.\[bench\]"'):
            training.time_steps("torch", "small", batch=2, steps=1, warmup=1, threads=2)


@pytest.mark.filterwarnings("ignore::eegdino_tf.hardware.PrecisionWarning")
def test_gpu_bench_parity_on_tiny_fixture_is_float32_exact():
    """The GPU run's parity check (here on the CPU): float32 graph and XLA within the fixture
    tolerance, mixed_float16 within its accuracy bound, every case."""
    from benchmarks import gpu

    parity = gpu.fixture_parity(None)
    assert parity["fixture"] == "tiny"
    float32 = [v for k, v in parity.items() if k.startswith("float32_")]
    half = [v for k, v in parity.items() if k.startswith("mixed_float16_")]
    assert len(float32) == 6 and len(half) == 3
    assert max(v["nrmse"] for v in float32) <= 2e-6
    assert 1e-6 < max(v["nrmse"] for v in half) <= 1e-2  # float16 rounding shows, but small


def test_gpu_bench_table_gives_xla_over_torch_per_row():
    from benchmarks import gpu

    rows = [
        {"size": "small", "precision": "float32", "batch": 8, "runtime": r, "median_ms": ms}
        for r, ms in (("predict", 2.5), ("graph", 4.0), ("xla", 2.0), ("torch", 5.0))
    ]
    table = gpu.format_table({"results": rows}).splitlines()
    assert table[2] == "| small | float32 | 8 | 2.50 | 4.00 | 2.00 | 5.00 | 2.50x |"


def test_gpu_bench_refuses_to_run_without_a_gpu(tmp_path):
    from benchmarks import gpu

    if hardware.detect().gpus:
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit, match="sees no GPU"):
        gpu.main(["--output-dir", str(tmp_path)])
    assert not (tmp_path / gpu.JSON_NAME).exists()


@pytest.mark.filterwarnings("ignore::eegdino_tf.hardware.PrecisionWarning")
def test_gpu_bench_runs_end_to_end_on_the_cpu(tmp_path, capsys):
    """The GPU run's whole flow (``--cpu``, one layer): peaks, parity, every runtime and
    precision, the JSON and the table."""
    from benchmarks import gpu

    argv = ["--cpu", "--sizes", "small", "--batches", "1", "--runs", "1", "--warmup", "0",
            "--gemm", "64", "--depth", "1", "--output-dir", str(tmp_path)]  # fmt: skip
    assert gpu.main(argv) == 0
    report = json.loads((tmp_path / gpu.JSON_NAME).read_text())
    assert report["tf32"] is False and report["parity"]["fixture"] == "tiny"
    assert report["matmul_peak_gflop_per_s"]["tf_xla_float32"] > 0
    rows = {(r["precision"], r["runtime"]): r for r in report["results"]}
    runtimes = set(gpu.RUNTIMES) - (set() if "torch" in {r for _, r in rows} else {"torch"})
    assert set(rows) == {(p, r) for p in gpu.PRECISIONS for r in runtimes}
    assert all(r["median_ms"] > 0 and r["samples_per_s"] > 0 for r in rows.values())
    assert "| small | float32 | 1 |" in capsys.readouterr().out
