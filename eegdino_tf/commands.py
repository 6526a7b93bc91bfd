"""``eegdino-tf info`` (what a weight file holds) and ``eegdino-tf demo`` (the main job)."""

from __future__ import annotations

import argparse
import time

import numpy as np

from eegdino_tf import hardware
from eegdino_tf import weights as W
from eegdino_tf.config import PATCH_SIZE, SAMPLING_RATE


def add_config_overrides(parser: argparse.ArgumentParser) -> None:
    """``--norm-groups`` / ``--num-heads``: what the tensors cannot tell."""
    parser.add_argument(
        "--norm-groups", type=int, help="GroupNorm groups (default: the size table's)"
    )
    parser.add_argument("--num-heads", type=int, help="attention heads (default 8)")


def config_overrides(args: argparse.Namespace) -> dict[str, int]:
    """The overrides given on the command line, as ``load_encoder`` keywords."""
    names = ("norm_groups", "num_heads")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def describe_weights(path: str, **overrides: int) -> dict:
    """Layout, size, shape, parameter count and head of a weight file, without building it."""
    normalized = W.normalize_state_dict(W.read_tensors(path))
    config = W.infer_config(normalized.tensors, **overrides)
    head = normalized.has_head
    return {
        "layout": normalized.layout,
        "size": config.name,
        "config": config.to_dict(),
        "encoder_parameters": int(sum(v.size for v in normalized.encoder_tensors().values())),
        "head": head,
        "num_classes": int(normalized.tensors["classifier.6.weight"].shape[0]) if head else None,
        "dropped": normalized.dropped,
    }


def run_info(args: argparse.Namespace) -> int:
    info = describe_weights(args.weights, **config_overrides(args))
    config = info["config"]
    print(f"file:        {args.weights}")
    print(f"layout:      {info['layout']}")
    print(f"size:        {info['size']}")
    print(
        f"shape:       D={config['embed_dim']}, {config['depth']} layers, "
        f"{config['num_heads']} heads, FFN {config['mlp_dim']}, "
        f"conv widths {config['conv_channels']}, GroupNorm groups {config['norm_groups']}"
    )
    print(f"parameters:  {info['encoder_parameters']:,} (encoder)")
    head = f"yes, {info['num_classes']} classes" if info["head"] else "no (encoder only)"
    print(f"head:        {head}")
    if info["dropped"]:
        reasons = sorted(set(info["dropped"].values()))
        print(f"ignored:     {len(info['dropped'])} entries ({'; '.join(reasons)})")
    print(f"machine:     {hardware.describe()}")
    return 0


def eeg_like_signal(
    channels: int = 19, seconds: int = 10, *, seed: int = 0, batch: int = 1
) -> np.ndarray:
    """Seeded EEG-like microvolts ``[batch, channels, seconds * 200]``: alpha and theta
    rhythms, a 1/f-ish background and line noise, tens of microvolts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    shape = (batch, channels, 1)
    alpha = 20 * np.sin(2 * np.pi * rng.uniform(8, 12, shape) * t + rng.uniform(0, 6.3, shape))
    theta = 10 * np.sin(2 * np.pi * rng.uniform(4, 7, shape) * t + rng.uniform(0, 6.3, shape))
    background = np.cumsum(rng.normal(0, 3, (batch, channels, t.size)), axis=-1)
    background -= background.mean(axis=-1, keepdims=True)
    line = 2 * np.sin(2 * np.pi * 50 * t)
    return (alpha + theta + 0.3 * background + line).astype(np.float32)


def run_demo(args: argparse.Namespace) -> int:
    import keras

    import eegdino_tf

    if args.weights:
        model = eegdino_tf.load_encoder(
            args.weights, precision=args.precision, **config_overrides(args)
        )
        source = f"weights from {args.weights}"
    else:
        keras.utils.set_random_seed(args.seed)
        model = eegdino_tf.build_encoder("small", precision=args.precision)
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


def configure_cli(subparsers) -> None:
    info = subparsers.add_parser("info", help="describe a weight file (layout, size, head)")
    info.add_argument("weights", help=".safetensors or .pt file")
    add_config_overrides(info)
    info.set_defaults(func=run_info)

    demo = subparsers.add_parser(
        "demo", help="encode 10 s of synthetic 19-channel EEG (random weights by default)"
    )
    demo.add_argument("--weights", help="real weights (.safetensors or .pt) instead of random")
    demo.add_argument("--channels", type=int, default=19)
    demo.add_argument("--seconds", type=int, default=10)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--precision",
        choices=("auto", *hardware.PRECISIONS),
        default="float32",
        help="compute precision; auto: the fastest that keeps the accuracy bounds here",
    )
    add_config_overrides(demo)
    demo.set_defaults(func=run_demo)
