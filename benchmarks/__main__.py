"""``python -m benchmarks`` (from the repository root): the same as ``eegdino-tf bench``."""

import sys

from benchmarks.cli import main

sys.exit(main())
