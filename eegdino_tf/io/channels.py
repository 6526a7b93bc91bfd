"""Channel labels and units: matching keys, EEG/non-EEG labels, picking, microvolt scales."""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence

from eegdino_tf.config import MAX_CHANNELS
from eegdino_tf.errors import RecordingError

#: The 19 standard 10-20 channels in TUH order: the default channel list.
STANDARD_CHANNELS = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T3", "C3", "Cz",
    "C4", "T4", "T5", "P3", "Pz", "P4", "T6", "O1", "O2",
)  # fmt: skip

# New 10-20 names -> old ones (the canonical form used for matching).
_ALIASES = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}
# Reference suffixes stripped from monopolar labels ("FP1-REF", "FP1-LE", "FP1-A1").
_REFERENCE = re.compile(r"[\s_]*-[\s_]*(REF|LE|RE|AR|AVG|AV|CAR|LINKED|A1A2|A12|A1|A2|M1|M2)$")
# Labels that are never EEG (matched at the start of a word, anywhere in the label).
_NON_EEG = re.compile(
    r"(?<![A-Z])(ECG|EKG|EOG|EMG|RESP|PHOTIC|SPO2|SAO2|PULSE|PLETH|TRIG|STATUS|STI|STIM|EVENT"
    r"|ANNOTATION|MARKER|IBI|BURSTS|SUPPR|LOC|ROC)"
)
# Physical units -> factor to microvolts.
_UNIT_TO_UV = {"v": 1e6, "mv": 1e3, "uv": 1.0, "nv": 1e-3}
_UNIT_WORDS = {"volt": "v", "millivolt": "mv", "microvolt": "uv", "nanovolt": "nv"}


def canonical_channel_name(label: str) -> str:
    """The matching key of a channel label: ``"EEG FP1-REF"``, ``"Fp1"``, ``"fp1-le"`` -> ``"FP1"``.

    Upper-cases, drops an ``EEG`` prefix, a monopolar reference suffix (``-REF``, ``-LE``,
    ``-A1``, ...) and trailing dots, and maps new 10-20 names to old ones (``T7`` -> ``T3``).
    Bipolar labels such as ``"FP1-F7"`` keep their second electrode.
    """
    key = label.strip().upper().rstrip(".")
    key = re.sub(r"^EEG[\s_:-]*", "", key)
    key = re.sub(r"\s+", "", _REFERENCE.sub("", key))
    return _ALIASES.get(key, key)


def is_eeg_label(label: str) -> bool:
    """False for labels that name a non-EEG signal (ECG, EOG, EMG, annotations, ...)."""
    return not _NON_EEG.search(label.upper())


def _unit_key(unit: str) -> str | None:
    """``"µV"``, ``"uv"``, ``"microvolts"`` -> ``"uv"``; None for a unit that is not a voltage."""
    key = unit.strip().replace("µ", "u").replace("μ", "u").lower()
    key = _UNIT_WORDS.get(key.rstrip("s"), key)
    return key if key in _UNIT_TO_UV else None


def check_unit(unit: str | None) -> None:
    """An error unless ``unit`` (the ``unit=`` argument) is None or a voltage unit we know."""
    if unit is not None and (not isinstance(unit, str) or _unit_key(unit) is None):
        raise RecordingError(
            f"unit={unit!r} is not a unit we know; use one of uV, mV, V (or nV; µV and the words "
            "microvolt, millivolt, volt, nanovolt work too)"
        )


def unit_to_uv(unit: str, channel: str) -> float:
    """The factor from ``unit`` (a channel's physical unit) to microvolts: ``"mV"`` -> 1000."""
    key = _unit_key(unit)
    if key is None:
        raise RecordingError(
            f"channel {channel!r} has physical unit {unit!r}, which is not a voltage this reader "
            f"knows (V, mV, uV/µV, nV); if the values are EEG in a known unit, name it with "
            f"unit='uV' (or 'mV', 'V', 'nV')"
        )
    return _UNIT_TO_UV[key]


def _format_names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names) if names else "(none)"


def pick(
    labels: Sequence[str], eeg: Sequence[bool], channels: Sequence[str] | str | None, where: str
) -> tuple[list[int], tuple[str, ...]]:
    """Indices into ``labels`` of the requested channels, and the names to report them by.

    ``channels`` is a list, one comma-separated string, or None for
    :data:`STANDARD_CHANNELS`. A requested name matches a label exactly (case-insensitive,
    any signal), or else by :func:`canonical_channel_name` among the EEG signals (``eeg[i]``
    true). ``where`` names the source in error messages.
    """
    eeg_labels = [label for label, ok in zip(labels, eeg, strict=True) if ok]
    other = [label for label, ok in zip(labels, eeg, strict=True) if not ok]
    has = f"{where} has EEG channels [{_format_names(eeg_labels)}]"
    if other:
        has += f" and non-EEG signals [{_format_names(other)}] (skipped)"
    if channels is None:
        wanted: tuple[str, ...] = STANDARD_CHANNELS
    elif isinstance(channels, str):
        wanted = tuple(name.strip() for name in channels.split(",") if name.strip())
    else:
        wanted = tuple(str(name) for name in channels)
    if not wanted:
        raise RecordingError(f"no channels requested; {has}")
    if len(wanted) > MAX_CHANNELS:
        raise RecordingError(
            f"{len(wanted)} channels requested; the model takes at most {MAX_CHANNELS} "
            f"(one channel-embedding slot each); {has}"
        )
    keys = [canonical_channel_name(label) for label in labels]
    picked, missing = [], []
    for name in wanted:
        exact = [i for i, label in enumerate(labels) if label.strip().lower() == name.lower()]
        hits = exact or [
            i for i, key in enumerate(keys) if eeg[i] and key == canonical_channel_name(name)
        ]
        if not hits:
            missing.append(name)
        elif len(hits) > 1:
            raise RecordingError(
                f"channel {name!r} is ambiguous in {where}: it matches "
                f"[{_format_names([labels[i] for i in hits])}]; pass the exact label"
            )
        else:
            picked.append(hits[0])
    if missing and channels is None:
        raise RecordingError(
            f"{where} lacks standard 10-20 channel(s) [{_format_names(missing)}], so the default "
            f"19-channel list cannot be used; pass channels=[...] naming the channels to "
            f"encode, in the order the model's weights expect; {has}"
        )
    if missing:
        raise RecordingError(f"channel(s) [{_format_names(missing)}] not found; {has}")
    if len(set(picked)) < len(picked):
        doubled = sorted({labels[i] for i in picked if picked.count(i) > 1})
        raise RecordingError(f"channel(s) [{_format_names(doubled)}] requested more than once")
    return picked, wanted


def describe_pick(
    labels: Sequence[str], picked: Sequence[int], names: Sequence[str], eeg: Sequence[bool]
) -> list[str]:
    """The steps lines of a :func:`pick`: what was picked in which order, what was skipped."""
    pairs = ", ".join(
        name if name == labels[i] else f"{name}={labels[i]}"
        for name, i in zip(names, picked, strict=True)
    )
    lines = [f"picked {len(picked)} channel(s) in model order: {pairs}"]
    skipped = [label for label, ok in zip(labels, eeg, strict=True) if not ok]
    if skipped:
        lines.append(f"skipped non-EEG signal(s): {', '.join(skipped)}")
    return lines


def describe_units(units: Sequence[str], scales: Sequence[float]) -> list[str]:
    """The steps lines of the conversion of channels in ``units`` (by ``scales``) to µV."""
    lines = []
    counts = collections.Counter(zip(units, scales, strict=True))
    for (unit, scale), count in sorted(counts.items(), key=lambda item: item[0][1]):
        if scale == 1.0:
            lines.append(f"{count} channel(s) already in microvolts ({unit!r})")
        else:
            lines.append(f"converted {count} channel(s) from {unit!r} to uV (x{scale:g})")
    return lines
