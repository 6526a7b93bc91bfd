"""Encode a live BrainFlow stream hop by hop with StreamEncoder, printing each hop's latency.

By default it streams BrainFlow's synthetic board (16 EEG channels at 250 Hz, no hardware)
for a few seconds through the tiny test encoder (random weights: the tokens mean nothing, the
timing and the shapes are real). BrainFlow gives microvolts, what the model takes.

    python examples/stream_brainflow.py                          # synthetic board, tiny encoder
    python examples/stream_brainflow.py --weights eeg_dino_small.safetensors --window 4
    python examples/stream_brainflow.py --tflite small_16x800.tflite     # an exported file
    python examples/stream_brainflow.py --board-id 0 --serial-port /dev/ttyUSB0  # OpenBCI Cyton

The board's EEG rows go to the model in BrainFlow's channel order (``get_eeg_names``): with
real weights, make that the order the weights expect. Needs ``pip install brainflow``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams

import eegdino_tf
from eegdino_tf.stream import StreamEncoder

TINY = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tiny_encoder.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="encoder weights (default: the tiny test encoder)")
    parser.add_argument("--tflite", help="an exported encoder .tflite file instead of weights")
    parser.add_argument("--seconds", type=float, default=6.0, help="how long to stream")
    parser.add_argument("--window", type=float, help="window in whole seconds (default 2)")
    parser.add_argument("--hop", type=float, default=0.5, help="seconds between windows")
    parser.add_argument("--board-id", type=int, default=BoardIds.SYNTHETIC_BOARD.value)
    parser.add_argument("--serial-port", default="", help="the board's port, if it has one")
    args = parser.parse_args()

    board = args.board_id
    names = BoardShim.get_eeg_names(board)
    rows = BoardShim.get_eeg_channels(board)
    sfreq = BoardShim.get_sampling_rate(board)
    if args.tflite:
        encoder = StreamEncoder(
            args.tflite, sfreq=sfreq, window=args.window, hop=args.hop, channels=names
        )
    else:
        if args.weights:
            model = eegdino_tf.load_encoder(args.weights)
        else:
            print("no --weights: the tiny test encoder (random weights; the tokens mean nothing)")
            model = eegdino_tf.load_encoder(TINY, norm_groups=4)
        encoder = StreamEncoder(
            model, sfreq=sfreq, window=args.window or 2, hop=args.hop, channels=names
        )
    shape = (1, len(encoder.channels), round(encoder.window_s * 200))
    encoder.model.predict(np.zeros(shape, np.float32), verbose=0)  # compile before streaming
    print(
        f"{BoardShim.get_board_descr(board)['name']}: {len(rows)} EEG channels at {sfreq} Hz "
        f"({', '.join(names)}); window {encoder.window_s:g} s every {encoder.hop_s:g} s, "
        f"look-ahead {encoder.lookahead_s * 1e3:.0f} ms"
    )

    BoardShim.disable_board_logger()
    params = BrainFlowInputParams()
    params.serial_port = args.serial_port
    session = BoardShim(board, params)
    session.prepare_session()
    latencies = []
    try:
        session.start_stream()
        began = time.monotonic()
        while time.monotonic() - began < args.seconds:
            time.sleep(0.02)
            for item in encoder.push(session.get_board_data()[rows]):
                latencies.append(item.latency_s * 1e3)
                print(
                    f"window at {item.start_s:5.2f} s: latency {latencies[-1]:6.1f} ms, "
                    f"global_token [{item.global_token.size}] norm "
                    f"{np.linalg.norm(item.global_token):.3f}, mean_token norm "
                    f"{np.linalg.norm(item.mean_token):.3f}"
                )
        session.stop_stream()
    finally:
        session.release_session()
    tail = encoder.flush()
    if latencies:
        print(
            f"{len(latencies)} hops: latency median {statistics.median(latencies):.1f} ms, "
            f"max {max(latencies):.1f} ms (push start to tokens)"
            + (f"; flush() gave {len(tail)} more window(s)" if tail else "")
        )


if __name__ == "__main__":
    main()
