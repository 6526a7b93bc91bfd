"""``eegdino-tf encode RECORDING --weights W --output emb.npz``: a recording in, per-window
embeddings (or a classifier's logits) out; the logic is
:func:`eegdino_tf.io.encode_recording`."""

from __future__ import annotations

import argparse
import sys

from eegdino_tf.cli.options import (
    add_encode_options,
    add_force,
    add_model_options,
    add_quantize,
    add_runtime,
    load_model,
    stderr_set_aside,
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "encode",
        help="encode an EEG recording (EDF/BDF, or any file MNE reads) into embeddings (.npz)",
        description=(
            "Pick channels, convert to microvolts, resample to 200 Hz, cut windows and encode "
            "them; write the per-window embeddings (or a classifier's logits) to an .npz file."
        ),
    )
    parser.add_argument("input", help="EDF/BDF file, or any recording mne.io.read_raw reads")
    parser.add_argument("--weights", required=True, help="weight file (.safetensors or .pt)")
    parser.add_argument("--output", "-o", required=True, help="the .npz file to write")
    add_encode_options(parser)
    add_force(parser)
    add_model_options(parser, precision="float32")
    add_runtime(parser)
    add_quantize(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from eegdino_tf.files import atomic_output
    from eegdino_tf.io import encode_recording, open_recording
    from eegdino_tf.io.windows import window_samples

    # The recording is opened and its windows checked before the model loads (seconds).
    recording = open_recording(args.input, channels=args.channels, unit=args.unit)
    starts = recording.window_starts(args.window, args.stride, args.pad_tail)
    shape = (len(recording.channels), window_samples(args.window))
    with atomic_output(args.output, force=args.force) as tmp:
        model = load_model(args)
        runtime = args.runtime
        with stderr_set_aside():  # convert first, the converter's C++ log lines set aside
            if runtime == "auto":  # converts (or loads) now when it picks LiteRT
                runtime = model.choose_runtime(*shape, len(starts), args.quantize)
            elif runtime == "litert":
                model.litert_function(*shape, args.quantize)
        result = encode_recording(
            model,
            recording,
            window=args.window,
            stride=args.stride,
            batch_size=args.batch_size,
            tokens=args.tokens,
            pad_tail=args.pad_tail,
            progress=sys.stderr.isatty(),
            runtime=runtime,
            quantize=args.quantize,
        )
        with open(tmp, "wb") as file:
            np.savez(file, **result)
    for line in result["steps"]:
        print(f"- {line}")
    arrays = ", ".join(
        f"{key} {list(value.shape)}"
        for key, value in result.items()
        if key not in ("channels", "source_channels", "steps", "sfreq")
    )
    print(f"wrote {args.output}: {arrays}")
    return 0
