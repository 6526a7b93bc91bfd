#!/usr/bin/env python3
"""Convert EEG-DINO ``.pt`` checkpoints to safetensors without PyTorch.

A thin wrapper around ``eegdino-tf convert`` (:mod:`eegdino_tf.convert`), same arguments::

    python converters/convert_checkpoint.py model_EEG_DINO_S.pt eeg_dino_small.safetensors
    python converters/convert_checkpoint.py --all --input-dir checkpoints --output-dir weights
"""

import sys

from eegdino_tf.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
