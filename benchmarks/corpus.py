"""Corpus throughput: windows/s of the Beam pipeline (``eegdino_tf.beam``) on the DirectRunner
in multi-process mode with 1 and 2 workers, against the single-process ``encode`` of the same
files, with the model loads and the peak memory of every worker. Run from the repository
root (``pip install -e ".[beam]"``)::

    python -m benchmarks.corpus                      # small (random weights), 12 files x 60 s
    python -m benchmarks.corpus --files 24 --seconds 120 --json corpus.json

Every contender runs in a fresh process of its own; its time is the whole job (model load,
reading, resampling, encoding, writing; for Beam also starting the workers, each of which
imports TensorFlow). Peak memory is each process's kernel high-water mark (``VmHWM``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import load_average, machine_info, proc_status_mb, run_in_child

#: ``-1-thread``: each worker's TensorFlow gets one thread (the workers inherit the setting).
CONTENDERS = ("encode", "beam-1-worker", "beam-2-workers", "beam-2-workers-1-thread")


def make_corpus(folder: Path, files: int, seconds: int, size: str) -> tuple[str, list[str]]:
    """Seeded 19-channel EDF files at 256 Hz and a weight file of ``size`` (random weights)."""
    import edfio
    import numpy as np
    from scipy.signal import resample_poly

    import eegdino_tf
    from eegdino_tf.io import STANDARD_CHANNELS
    from eegdino_tf.signals import eeg_like_signal

    paths = []
    for i in range(files):
        data = resample_poly(eeg_like_signal(19, seconds, seed=i)[0], 32, 25, axis=-1)
        signals = [
            edfio.EdfSignal(
                row, 256, label=name, physical_dimension="uV", physical_range=(-1000, 1000)
            )  # fmt: skip
            for row, name in zip(np.clip(data, -999, 999), STANDARD_CHANNELS, strict=True)
        ]
        path = folder / f"rec{i:03d}.edf"
        edfio.Edf(signals).write(path)
        paths.append(str(path))
    weights = folder / f"{size}.safetensors"
    eegdino_tf.save_weights(eegdino_tf.build_encoder(size), weights, layout="released")
    return str(weights), paths


def _children_peaks(stop: threading.Event, peaks: dict[int, float]) -> None:
    """Until ``stop``: the peak RSS (MiB) of every Beam SDK worker below this process, by pid."""
    while not stop.wait(0.2):
        pending = [os.getpid()]
        while pending:
            pid = pending.pop()
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as children:
                        pending += [int(child) for child in children.read().split()]
            except OSError:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    args = cmdline.read().split(b"\0")  # the python, not the shell around it
                worker = b"apache_beam.runners.worker.sdk_worker_main" in args
            except OSError:
                continue
            peak = proc_status_mb("VmHWM", pid) if worker else None
            if peak:
                peaks[pid] = max(peaks.get(pid, 0.0), peak)


def run_contender(name: str, weights: str, paths: list[str], batch: int) -> dict[str, Any]:
    """One contender, in this (fresh) process: wall time, windows, loads, peak memory."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    peaks: dict[int, float] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_children_peaks, args=(stop, peaks), daemon=True)
    sampler.start()
    start = time.perf_counter()
    if name == "encode":
        import eegdino_tf
        from eegdino_tf.io import encode_recording

        model = eegdino_tf.load_encoder(weights)
        windows = sum(
            len(encode_recording(model, p, batch_size=batch, progress=False)["global_token"])
            for p in paths
        )
        loads, workers = 1, {}
    else:
        from eegdino_tf.beam import encode_corpus

        count = 1 if name == "beam-1-worker" else 2
        if name.endswith("-1-thread"):
            for variable in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
                os.environ[variable] = "1"
        options = [
            f"--direct_num_workers={count}",
            "--direct_running_mode=multi_processing",
        ]
        with tempfile.TemporaryDirectory() as output:
            result = encode_corpus(
                weights, output, patterns=paths, batch_size=batch, pipeline_options=options
            )
        windows = result["metrics"]["windows_written"]
        loads = result["metrics"].get("model_loads", 0)
        workers = {pid: round(mb) for pid, mb in peaks.items()}
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    return {
        "contender": name,
        "windows": windows,
        "seconds": round(seconds, 2),
        "windows_per_s": round(windows / seconds, 2),
        "model_loads": loads,
        "workers": len(workers) or 1,
        "peak_rss_mib_per_worker": sorted(workers.values()) or None,
        "peak_rss_mib_main": round(proc_status_mb("VmHWM") or 0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--seconds", type=int, default=60, help="length of each file")
    parser.add_argument("--size", default="small", help="model size (random weights)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        weights, paths = run_in_child(
            make_corpus, Path(folder), args.files, args.seconds, args.size
        )
        rows = []
        for name in args.contenders.split(","):
            row = run_in_child(run_contender, name, weights, paths, args.batch)
            rows.append(row)
            print(json.dumps(row))
    baseline = next((r["windows_per_s"] for r in rows if r["contender"] == "encode"), None)
    for row in rows:
        row["vs_encode"] = baseline and round(row["windows_per_s"] / baseline, 2)
    report = {
        "settings": vars(args),
        "machine": run_in_child(machine_info, 0),
        "load_average_after": load_average(),
        "results": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print("| contender | windows | s | windows/s | vs encode | model loads | peak RSS per worker |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        peak = r["peak_rss_mib_per_worker"] or [r["peak_rss_mib_main"]]
        print(
            f"| {r['contender']} | {r['windows']} | {r['seconds']} | {r['windows_per_s']} | "
            f"{r['vs_encode']}x | {r['model_loads']} in {r['workers']} | "
            f"{', '.join(f'{p} MiB' for p in peak)} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
