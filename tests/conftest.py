"""pytest's configuration for the suite; the shared helpers are in ``tests/helpers``."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
