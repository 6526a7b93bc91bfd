"""The EEG-DINO benchmark: how fast the Keras encoder runs, against the PyTorch reference.

For every size, batch and precision it times the encoder on EEG-like random microvolts
(random weights: speed does not depend on their values) through several runtimes:

- ``eager``: ``model(x)``, op by op;
- ``predict``: ``model.predict(x, batch_size=B)``, what users call (``runtime="auto"``),
  timed on a machine that has converted the model for LiteRT before (the conversion is made
  or loaded untimed first), so LiteRT for float32 and Keras (XLA or not) otherwise;
- ``predict-keras``: ``model.predict(x, batch_size=B, runtime="keras")`` (it picks XLA or not);
- ``predict-litert``: ``model.predict(x, batch_size=B, runtime="litert")`` (float32; converted
  on its first, untimed call);
- ``predict-int8``: the same with ``quantize="dynamic-int8"`` (int8 weights);
- ``graph`` / ``xla``: the compiled call ``predict`` makes (``model.inference_function``:
  ``tf.function`` of the model without / with ``jit_compile=True``), called directly;
- ``tflite`` / ``onnx``: a float32 export made by :mod:`eegdino_tf.export`, run by LiteRT /
  ONNX Runtime (skipped, with a note, when that module or runtime is missing);
- ``torch`` / ``torch-bf16``: braindecode's ``EEGDINO`` (the reference implementation) in
  float32, and under ``torch.autocast("cpu", torch.bfloat16)``.

Every runtime gets the same thread count. After warm-up calls the contenders take turns
(round-robin within each repetition, so drifting machine load hits all of them alike; a short
call's turn starts with an untimed call, so the runtime before it leaves no cold caches
behind) and the median of the timed calls is reported, with samples/s, achieved GFLOP/s, the
share of the machine's matmul peak that is, the speed ratio to PyTorch at the same
precision and to the fastest other runtime, and for round-robin rows the same ratios
paired (the median over rounds of each round's ratio, which the host's drift between rounds
does not move). With ``--isolated`` each contender is then timed again the same way, alone in a
fresh process (rows of mode ``isolated``; the round-robin ones are of mode ``round-robin``;
ratios compare rows of one mode).

The report also holds the machine's matmul peak (one large square matmul in TensorFlow and
PyTorch, float32 and bfloat16 where some row is measured against it, at the same thread
count), the per-call overhead of ``predict`` over the bare compiled call it makes (measured
inside each call, and as the difference of the two rows' medians), the RSS of some runtimes
at the largest size and batch 8, each measured alone in a fresh process (model loaded, peak of
the first call, peak of a later one), an RSS check over many repeated calls (no growth
expected), and what machine it ran on (CPU model and flags). It is printed as a table and
written as JSON and a PNG chart.

Exports run in a child process under a memory cap (they need far more memory than the model:
large's do not fit in 24 GB), and are skipped, with a note, when they would not fit.
TensorFlow and PyTorch are imported only when the benchmark runs, after the thread counts are
set (they cannot change once TensorFlow has started).

How to run it, from the repository root (this folder is not installed with the library)::

    pip install ".[bench]"      # torch, torchaudio, braindecode (the reference), matplotlib
    eegdino-tf bench --quick    # or: python -m benchmarks --quick

``eegdino-tf bench`` imports this package when it is importable, and otherwise looks for a
``benchmarks/`` folder in the current working directory (only there: a console script does
not put the current directory on ``sys.path``). Without the ``bench`` extra the PyTorch rows
and peaks are skipped with a note saying what to install.

Modules: :mod:`~benchmarks.settings` (what to measure), :mod:`~benchmarks.workload` (FLOPs and
input), :mod:`~benchmarks.machine` (``/proc``, threads, child processes),
:mod:`~benchmarks.runners` (the runtimes), :mod:`~benchmarks.peak` (matmul peak),
:mod:`~benchmarks.timing` (warm-up, round-robin, isolated), :mod:`~benchmarks.memory` (RSS),
:mod:`~benchmarks.compare` (ratios, predict's overhead), :mod:`~benchmarks.run` (the whole
run), :mod:`~benchmarks.report` (table, JSON, chart), :mod:`~benchmarks.cli` (options).
"""
