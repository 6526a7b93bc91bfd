"""``eegdino-tf info WEIGHTS``: what a weight file holds, and the machine it would run on."""

from __future__ import annotations

import argparse

from eegdino_tf.cli.options import add_model_options, model_options, translate


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("info", help="describe a weight file (layout, size, head)")
    parser.add_argument("weights", help=".safetensors or .pt file")
    add_model_options(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from eegdino_tf import hardware
    from eegdino_tf.weights import describe_weights

    info = describe_weights(args.weights, **model_options(args))
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
