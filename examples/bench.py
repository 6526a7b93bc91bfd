"""Benchmark the Keras encoder against the PyTorch reference, ONNX Runtime and TFLite.

    python examples/bench.py --quick                       # a short smoke run (~25 s)
    python examples/bench.py --sizes small,large --precisions float32,mixed_bfloat16

The same as ``eegdino-tf bench`` (see ``eegdino_tf/bench.py`` for what it measures); writes
``bench_results/bench.json`` and ``bench_results/bench.png``. PyTorch rows need the ``bench``
extra: ``pip install "eegdino-tf[bench]"`` (it pins torch 2.9.1, torchaudio 2.9.1 and
braindecode 1.8.1, which import together on a CPU-only machine).
"""

import sys

from eegdino_tf.bench import main

if __name__ == "__main__":
    sys.exit(main())
