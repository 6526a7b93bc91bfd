"""``eegdino-tf demo``: the main job on a built-in example (10 s of synthetic 19-channel EEG)."""

from __future__ import annotations

import argparse
import time

from eegdino_tf.cli.options import add_model_options, model_options


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo", help="encode 10 s of synthetic 19-channel EEG (random weights by default)"
    )
    parser.add_argument("--weights", help="real weights (.safetensors or .pt) instead of random")
    parser.add_argument("--channels", type=int, default=19)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    add_model_options(parser, precision="float32")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import keras

    import eegdino_tf
    from eegdino_tf import hardware
    from eegdino_tf.config import PATCH_SIZE, SAMPLING_RATE
    from eegdino_tf.signals import eeg_like_signal

    if args.weights:
        model = eegdino_tf.load_encoder(args.weights, **model_options(args))
        source = f"weights from {args.weights}"
    else:
        keras.utils.set_random_seed(args.seed)
        model = eegdino_tf.build_encoder("small", **model_options(args))
        source = (
            f"the small model with seeded random weights (seed {args.seed}): NOT pretrained, "
            "so the numbers below only show the pipeline works. Pass real weights with "
            "--weights eeg_dino_small.safetensors (see README: Weights)"
        )
    print(f"model:   {source}")
    print(f"machine: {hardware.describe()}")
    print(f"precision: {model.precision}" + (" (auto)" if args.precision == "auto" else ""))
    eeg = eeg_like_signal(args.channels, args.seconds, seed=args.seed)
    print(
        f"input:   {args.channels} channels x {args.seconds} s at {SAMPLING_RATE:g} Hz "
        f"= {eeg.shape} microvolts (synthetic EEG-like signal)"
    )
    start = time.perf_counter()
    tokens = model.predict(eeg, verbose=0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    model.predict(eeg, verbose=0)
    warm = time.perf_counter() - start
    patches = args.channels * (eeg.shape[-1] // PATCH_SIZE)
    print(f"output:  tokens {tokens.shape} = [batch, 1 global + {patches} patch tokens, D]")
    values = ", ".join(f"{v:+.4f}" for v in tokens[0, 0, :6])
    print(f"global token [0, 0, :6]: [{values}, ...]")
    print(f"time:    {first * 1e3:.0f} ms first call (includes tracing), {warm * 1e3:.1f} ms warm")
    return 0
