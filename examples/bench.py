"""Benchmark the Keras encoder against the PyTorch reference, ONNX Runtime and TFLite.

    python examples/bench.py --quick                       # a short smoke run
    python examples/bench.py --sizes small,large --precisions float32,mixed_bfloat16

The same as ``eegdino-tf bench`` (see ``eegdino_tf/bench.py`` for what it measures); writes
``bench_results/bench.json`` and ``bench_results/bench.png``. PyTorch rows need the ``bench``
extra: ``pip install "eegdino-tf[bench]"``.
"""

import sys

from eegdino_tf.bench import main

if __name__ == "__main__":
    sys.exit(main())
