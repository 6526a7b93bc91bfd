"""``eegdino-tf info FILE``: what a weight file holds, or what an exported file expects (its
export record), and the machine it would run on; ``--json`` for programs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from eegdino_tf.cli.options import add_model_options, model_options, translate


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "info", help="describe a weight file or an exported file (what it holds and expects)"
    )
    parser.add_argument(
        "weights",
        metavar="FILE",
        help=".safetensors or .pt weights, or an export: .tflite, .onnx, a SavedModel folder",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (sfreq, window_s, channels, input_shape, units, "
        "quantization, weights_sha256, version, ...)",
    )
    add_model_options(parser)
    parser.set_defaults(func=run)
    return parser


def is_export(path: str) -> bool:
    """Whether ``path`` names an exported file rather than weights."""
    return Path(path).is_dir() or Path(path).suffix in (".tflite", ".onnx")


def run(args: argparse.Namespace) -> int:
    if is_export(args.weights):
        return show_export(args)
    return show_weights(args)


def show_export(args: argparse.Namespace) -> int:
    from eegdino_tf.artifact import read_record

    record = read_record(args.weights)
    if args.json:
        print(json.dumps(record, indent=1, sort_keys=True))
        return 0
    check = ", ".join(f"{k} {v:.2e}" for k, v in record["quantization"]["self_check"].items() if v)
    channels = record["channels"]
    print(f"file:        {args.weights} ({record['format']}, eegdino-tf {record['version']})")
    print(f"model:       {record['model']['class']} ({record['model']['size']})")
    shape = ", ".join(
        str(d) if d is not None else "batch" if i == 0 else "any"
        for i, d in enumerate(record["input_shape"])
    )
    print(f"input:       {record['input_name']} [{shape}] {record['input_dtype']}, raw microvolts")
    window = "any length" if record["window_s"] is None else f"{record['window_s']:g} s windows"
    print(f"rate:        {record['sfreq']:g} Hz, {window}")
    print(f"channels:    {', '.join(channels) if channels else 'not named'}")
    print(f"outputs:     {', '.join(record['outputs'])}")
    for name, outputs in record["signatures"].items():
        print(f"signature:   {name} -> {', '.join(outputs)}")
    print(f"weights:     {record['weights_file']} (SHA-256 {record['weights_sha256']})")
    print(f"quantized:   {record['quantization']['mode']} (self-check: {check})")
    if int8 := record["quantization"].get("int8"):
        low, high = int8["input_range_uv"]
        print(
            f"int8:        {int8['int8_ops']}/{int8['ops']} ops ({int8['int8_share']:.1%}), "
            f"{int8['io']} io, input clips outside [{low:.1f}, {high:.1f}] uV; held-out cosine "
            f"min {int8['cosine_min']:.4f}, with a blink {int8['artifact_cosine_min']:.4f}"
        )
    print(f"NaN input:   {record['nan_policy']}")
    return 0


def show_weights(args: argparse.Namespace) -> int:
    from eegdino_tf import hardware
    from eegdino_tf.weights import describe_weights

    info = describe_weights(args.weights, **model_options(args))
    if args.json:
        print(json.dumps(weights_summary(args.weights, info), indent=1, sort_keys=True))
        return 0
    config = info["config"]
    groups = config["norm_groups"] or "unknown"
    print(f"file:        {args.weights}")
    print(f"layout:      {info['layout']}")
    print(f"size:        {info['size']}")
    print(
        f"shape:       D={config['embed_dim']}, {config['depth']} layers, "
        f"{config['num_heads']} heads, FFN {config['mlp_dim']}, "
        f"conv widths {config['conv_channels']}, GroupNorm groups {groups}"
    )
    if info["norm_groups_unknown"]:
        print(f"note:        {translate(info['norm_groups_unknown'], args.parser)}")
    print(f"parameters:  {info['encoder_parameters']:,} (encoder)")
    head = f"yes, {info['num_classes']} classes" if info["head"] else "no (encoder only)"
    print(f"head:        {head}")
    if info["dropped"]:
        reasons = sorted(set(info["dropped"].values()))
        print(f"ignored:     {len(info['dropped'])} entries ({'; '.join(reasons)})")
    if written := info["metadata"]:
        source = written["source"] and f", from {written['source']} ({written['source_sha256']})"
        print(f"written by:  {written['writer']}{source or ''}")
    print(f"machine:     {hardware.describe()}")
    return 0


def weights_summary(path: str, info: dict[str, Any]) -> dict[str, Any]:
    """``describe_weights``' answer with the keys an export record has (a weight file fixes
    the rate and units, not a window or channels)."""
    from eegdino_tf import __version__
    from eegdino_tf.config import SAMPLING_RATE
    from eegdino_tf.files import sha256_of

    return {
        **{k: v for k, v in info.items() if k != "dropped"},
        "dropped": sorted(info["dropped"]),
        "sfreq": float(SAMPLING_RATE),
        "window_s": None,
        "channels": None,
        "input_shape": None,
        "units": "uV",
        "quantization": {"mode": "none"},
        "weights_sha256": sha256_of(path),
        "version": __version__,
    }
