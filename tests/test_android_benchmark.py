"""export/android/benchmark.py, the script behind the Android guide's latency table, runs in a
quick mode on the tiny encoder and prints a table that matches the files it wrote."""

from __future__ import annotations

import re
import subprocess
import sys

from eegdino_tf import artifact
from eegdino_tf.export import MIN_INT8_COSINE
from tests.helpers import REPO, TINY

LATENCY = re.compile(r"^(\d+\.\d\d) \((\d+\.\d\d)-(\d+\.\d\d)\)$")


def test_the_android_benchmark_prints_one_row_per_file_with_its_size_error_and_latencies(
    tmp_path,
):
    command = [
        sys.executable,
        str(REPO / "export" / "android" / "benchmark.py"),
        str(TINY / "tiny_encoder.safetensors"),
        "--norm-groups=4",
        "--shape=muse",
        "--variant=dynamic-int8",
        "--threads=1,2",
        "--num-runs=2",
        "--warmup-runs=1",
        f"--out={tmp_path}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]

    lines = result.stdout.strip().splitlines()
    assert "2 runs after 1 warm-up runs" in lines[0], lines[0]
    assert "fully accelerated: True" in lines[0], lines[0]
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header[-2:] == ["1 thread, ms", "2 threads, ms"], header
    rows = [line for line in lines[4:] if line.startswith("| ")]
    assert len(rows) == 1, result.stdout
    shape, variant, size, error, cosine, *latencies = (
        c.strip() for c in rows[0].strip("|").split("|")
    )
    assert (shape, variant) == ("muse [1, 4, 1024]", "dynamic-int8")

    path = tmp_path / "muse_dynamic-int8.tflite"
    assert size == f"{path.stat().st_size / 1e6:.2f} MB"
    record = artifact.read_record(path)
    assert record["channels"] == ["TP9", "AF7", "AF8", "TP10"]
    assert record["quantization"]["mode"] == "dynamic-int8"
    check = record["quantization"]["self_check"]
    assert error == f"{check['nrmse']:.1e}" and 0 < check["nrmse"] < 0.1
    assert cosine == f"{check['cosine']:.5f}" and check["cosine"] >= MIN_INT8_COSINE

    assert len(latencies) == 2
    for text in latencies:
        median, p5, p95 = (float(v) for v in LATENCY.match(text).groups())
        assert 0 < p5 <= median <= p95, text
