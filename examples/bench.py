"""Benchmark the Keras encoder against the PyTorch reference, ONNX Runtime and TFLite.

    python examples/bench.py --quick                       # a short smoke run (~25 s)
    python examples/bench.py --sizes small,large --precisions float32,mixed_bfloat16

The same as ``eegdino-tf bench`` and ``python -m benchmarks`` run from the repository root
(see ``benchmarks/__init__.py`` for what it measures); writes ``bench_results/bench.json``
and ``bench_results/bench.png``. The benchmark is the repository's ``benchmarks/`` folder,
not part of the installed library, so this script puts the repository on ``sys.path``.
PyTorch rows need the ``bench`` extra: ``pip install ".[bench]"`` from the repository root
(it pins torch 2.9.1, torchaudio 2.9.1 and braindecode 1.8.1, which import together on a
CPU-only machine).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cli import main  # noqa: E402  (after the repository is on sys.path)

if __name__ == "__main__":
    sys.exit(main(prog="examples/bench.py"))
