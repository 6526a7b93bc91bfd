"""The runnable examples run (they make their own input files)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.parametrize("script", ["encode_edf.py", "mne_pipeline.py", "stream_brainflow.py"])
def test_example_runs(script):
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / script)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "global_token" in result.stdout


def test_finetuning_example_learns_the_rhythms_on_small():
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "finetune_rhythms.py"), "--epochs", "3"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    accuracy = float(result.stdout.strip().rsplit(" ", 1)[-1])
    assert accuracy >= 0.9, result.stdout
