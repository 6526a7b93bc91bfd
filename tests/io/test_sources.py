"""Recording sources: MNE Raw and the EDF reader agree; a missing extra is named."""

from __future__ import annotations

import sys

import mne
import numpy as np
import pytest

from eegdino_tf.errors import MissingExtraError
from eegdino_tf.io import (
    open_recording,
)
from tests.helpers.recordings import (
    TUH_LABELS,
    eeg_like,
    write_edf,
)


def test_mne_raw_and_edf_reader_agree(tmp_path):
    path = tmp_path / "m.edf"
    write_edf(path, eeg_like(19, 250 * 30, 250.0), TUH_LABELS, 250.0)  # MNE would upsample EOG
    ours = open_recording(path)
    raw = mne.io.read_raw_edf(path, preload=False, verbose="error")
    theirs = open_recording(raw)
    assert theirs.source_channels == ours.source_channels and theirs.sfreq == 250.0
    assert any("from 'V' (MNE's unit)" in step for step in theirs.steps)
    a = np.stack([x for _, x in ours.windows(10)])
    b = np.stack([x for _, x in theirs.windows(10)])
    assert a.shape == b.shape == (3, 19, 2000)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4)


def test_missing_extra_names_it(tmp_path, monkeypatch):
    path = tmp_path / "x.edf"
    write_edf(path, eeg_like(19, 2000, 200.0), TUH_LABELS, 200.0)
    monkeypatch.setitem(sys.modules, "edfio", None)  # import edfio now fails
    with pytest.raises(MissingExtraError, match=r'pip install "eegdino-tf\[edf\]"'):
        open_recording(path)
