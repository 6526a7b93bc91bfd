"""``eegdino-tf encode-corpus 'recordings/**/*.edf' --weights W --output DIR``: many recordings
to Parquet embeddings with Apache Beam, on any runner; the logic is :mod:`eegdino_tf.beam`."""

from __future__ import annotations

import argparse
import logging

from eegdino_tf.cli.options import (
    add_encode_options,
    add_model_options,
    add_quantize,
    add_runtime,
    model_options,
    stderr_set_aside,
)

RUNNERS = ("DirectRunner", "PrismRunner", "FlinkRunner", "SparkRunner", "DataflowRunner")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "encode-corpus",
        help="encode a corpus of recordings into Parquet embeddings with Apache Beam",
        description=(
            "Read, window and encode every recording (as `encode` does) in an Apache Beam "
            "pipeline; write one Parquet file per recording under OUTPUT/embeddings, failures "
            "to OUTPUT/errors.jsonl and a per-recording report to OUTPUT/recordings.jsonl. "
            "A rerun skips the recordings already written; progress goes to stderr. Exit 1 if "
            "a recording failed, 2 if the run could not start (no recording matched, a bad "
            "output, manifest or weights), 130 on Ctrl-C. Needs the beam extra."
        ),
    )
    parser.add_argument(
        "patterns", nargs="*", metavar="PATTERN", help="recording globs or paths (quote globs)"
    )
    parser.add_argument("--manifest", help="text file with one recording path per line")
    parser.add_argument(
        "--weights", required=True, help="weight file (.safetensors or .pt; any Beam filesystem)"
    )
    parser.add_argument("--output", "-o", required=True, help="output folder (any Beam filesystem)")
    add_encode_options(parser)
    add_model_options(parser, precision="float32")
    add_runtime(parser)
    add_quantize(parser)
    group = parser.add_argument_group("pipeline")
    group.add_argument("--runner", choices=RUNNERS, default="DirectRunner", help="Beam runner")
    group.add_argument(
        "--model-copies",
        type=int,
        help="models per machine, shared by its worker processes (default: one per process)",
    )
    group.add_argument(
        "--pipeline-options",
        nargs=argparse.REMAINDER,
        default=[],
        metavar="OPTION",
        help="everything after this flag goes to Beam's PipelineOptions "
        "(--direct_num_workers=2 --direct_running_mode=multi_processing, --flink_master=..., "
        "--project=... --region=... --temp_location=gs://...); put it last",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    # Beam logs what the command says in its own words (a failed run's traceback, warnings
    # about Google Cloud clients it lacks, memory it cannot measure): its log is kept quiet.
    logging.disable(logging.ERROR)
    try:
        from eegdino_tf.beam import ERRORS, encode_corpus

        result = encode_corpus(
            args.weights,
            args.output,
            patterns=args.patterns,
            manifest=args.manifest,
            pipeline_options=[f"--runner={args.runner}", *args.pipeline_options],
            progress=True,
            classifier=args.classifier,
            channels=args.channels,
            unit=args.unit,
            window=args.window,
            stride=args.stride,
            pad_tail=args.pad_tail,
            tokens=args.tokens,
            batch_size=args.batch_size,
            model_copies=args.model_copies,
            runtime=args.runtime,
            quantize=args.quantize,
            model_options=model_options(args),
            load_context=stderr_set_aside,  # TensorFlow's and LiteRT's C++ log lines
        )
    finally:
        logging.disable(logging.NOTSET)
    statuses: dict[str, int] = {}
    for line in result["recordings"]:
        status = line["status"]
        statuses[status] = statuses.get(status, 0) + 1
        detail = f"{line['windows']} windows" if status != "failed" else line["error"]
        print(f"- {line['recording']}: {status} ({detail})")
    loads = result["metrics"]["model_loads"]
    if args.model_copies:  # loaded in Beam's model server process, whose counters are lost
        loads = "not counted with --model-copies"
    summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    print(f"{len(result['recordings'])} recordings: {summary or 'none'}; model loads: {loads}")
    if statuses.get("failed"):
        print(f"failures: {args.output}/{ERRORS}")
        return 1
    return 0
