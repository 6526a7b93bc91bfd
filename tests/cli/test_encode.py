"""``eegdino-tf encode``: LiteRT as its runtime, and errors in the command's own words."""

from __future__ import annotations

import re
from pathlib import Path

import mne
import numpy as np
import pytest

import eegdino_tf
from eegdino_tf import cli
from eegdino_tf.errors import RecordingError
from eegdino_tf.io import (
    STANDARD_CHANNELS,
    encode_recording,
    open_recording,
)
from tests.helpers import TINY, nrmse
from tests.helpers.recordings import (
    NEW_NAMES,
    RNG,
    TUH_LABELS,
    eeg_like,
    write_edf,
)


def test_cli_encode_through_litert_matches_keras(tmp_path, encoder):
    path = tmp_path / "rec.edf"
    write_edf(path, eeg_like(19, 200 * 20, 200.0), TUH_LABELS, 200.0, unit="uV")
    weights = str(TINY / "tiny_encoder.safetensors")
    outputs = {}
    for runtime in ("keras", "litert"):
        out = tmp_path / f"{runtime}.npz"
        argv = ["encode", str(path), "--weights", weights, "--output", str(out)]
        assert cli.main([*argv, "--norm-groups", "4", "--runtime", runtime]) == 0
        outputs[runtime] = np.load(out)
    for key in ("global_token", "mean_token"):
        assert outputs["litert"][key].shape == (2, 64)
        assert nrmse(outputs["litert"][key], outputs["keras"][key]) <= 2e-6


def test_unknown_unit_argument_names_the_keyword(tmp_path, encoder, capsys):
    """A bad ``unit`` blames the argument (in Python words; the CLI's in flags), not the file."""
    path = tmp_path / "u.edf"
    write_edf(path, eeg_like(19, 2000, 200.0), TUH_LABELS, 200.0)
    expected = r"^unit='furlong' is not a unit we know; use one of uV, mV, V"
    for source in (path, tmp_path / "missing.edf", np.zeros((1, 400))):
        with pytest.raises(RecordingError, match=expected):
            open_recording(source, unit="furlong")
    with pytest.raises(RecordingError, match=expected) as err:
        encode_recording(encoder, path, unit="furlong", progress=False)
    assert "EEG FP1-REF" not in str(err.value) and "--" not in str(err.value)
    assert open_recording(path, unit="microvolts").source_channels == tuple(TUH_LABELS)

    out = tmp_path / "o.npz"
    weights = str(TINY / "tiny_encoder.safetensors")
    argv = ["encode", str(path), "--weights", weights, "-o", str(out), "--norm-groups", "4"]
    assert cli.main([*argv, "--unit", "furlong"]) == 2
    stderr = capsys.readouterr().err
    assert "error: --unit furlong is not a unit we know" in stderr, stderr
    assert "unit=" not in stderr and not out.exists()


def test_library_messages_speak_python_not_flags():
    """Messages name keywords (``pad_tail=True``); only the CLI turns them into ``--flags``."""
    folder = Path(eegdino_tf.__file__).parent / "io"
    for module in sorted(folder.glob("*.py")):
        flags = re.findall(r"--[a-z][a-z-]*", module.read_text(encoding="utf-8"))
        assert not flags, f"{module.name} mentions command-line flags {flags}"


def test_mne_raw_array_types_and_fif_via_cli(tmp_path, encoder, capsys):
    names = [NEW_NAMES.get(name, name) for name in STANDARD_CHANNELS]
    data_uv = eeg_like(19, 500 * 21, 500.0)
    info = mne.create_info([*names, "ECG", "HEOG"], 500.0, ["eeg"] * 19 + ["ecg", "eog"])
    extra = RNG.standard_normal((2, data_uv.shape[1])) * 1e-4
    raw = mne.io.RawArray(np.concatenate([data_uv * 1e-6, extra]), info, verbose="error")
    from_raw = encode_recording(encoder, raw, progress=False)
    array = open_recording(data_uv, sfreq=500.0, ch_names=names)
    from_array = encode_recording(encoder, array, progress=False)
    assert nrmse(from_raw["global_token"], from_array["global_token"]) <= 2e-6
    with pytest.raises(RecordingError, match="unit does not apply to an MNE Raw"):
        open_recording(raw, unit="uV")
    with pytest.raises(RecordingError, match="not found"):
        open_recording(raw, channels=["HEOG2"])

    fif = tmp_path / "rec_raw.fif"
    raw.save(fif, verbose="error")
    out = tmp_path / "fif.npz"
    weights = str(TINY / "tiny_encoder.safetensors")
    argv = ["encode", str(fif), "--weights", weights, "-o", str(out), "--norm-groups", "4"]
    assert cli.main(argv) == 0
    assert "read MNE Raw rec_raw.fif" in capsys.readouterr().out
    assert nrmse(np.load(out)["global_token"], from_array["global_token"]) <= 2e-6
