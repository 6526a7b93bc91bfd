"""Convert released EEG-DINO checkpoints (``.pt``) to float32 safetensors, without PyTorch.

:func:`convert_checkpoint` (``eegdino-tf convert model_EEG_DINO_S.pt
eeg_dino_small.safetensors`` on the command line) reads the checkpoint with
the pickle-free reader in :mod:`eegdino_tf.checkpoint`, keeps the student encoder (and a
finetuned head, if any), drops pretraining-only state, and writes it in any layout of
:data:`eegdino_tf.layouts.LAYOUTS` (the released names by default) through
:func:`eegdino_tf.weights.write_weights`, with its shape and provenance in the metadata.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path

from eegdino_tf import weights as W
from eegdino_tf.config import EEGDinoConfig
from eegdino_tf.errors import WeightsError
from eegdino_tf.layouts import get_layout

#: The released checkpoints and the names ``--all`` gives their conversions.
RELEASED_FILES = {
    "model_EEG_DINO_S.pt": "eeg_dino_small.safetensors",
    "model_EEG_DINO_M.pt": "eeg_dino_medium.safetensors",
    "model_EEG_DINO_L.pt": "eeg_dino_large.safetensors",
}


@dataclasses.dataclass
class ConversionReport:
    """What one conversion read, kept, dropped and wrote.

    Attributes:
        source: the checkpoint read.
        output: the safetensors file written.
        layout: the layout written (a name of :data:`eegdino_tf.layouts.NAMES`).
        source_layout: the layout detected in the checkpoint (e.g. ``"pretraining"``).
        config: the model shape read off the tensors (``config.name`` is the size).
        has_head: whether a finetuned classification head was kept.
        kept: number of tensors written.
        dropped: checkpoint keys left out, each with the reason.
    """

    source: Path
    output: Path
    layout: str
    source_layout: str
    config: EEGDinoConfig
    has_head: bool
    kept: int
    dropped: dict[str, str]

    def summary(self) -> str:
        """A few human-readable lines: detected model, what was kept and dropped, and why."""
        cfg = self.config
        size = "custom-size" if cfg.name == "custom" else cfg.name
        head = "with a classification head" if self.has_head else "no classification head"
        lines = [
            f"{self.source} -> {self.output}",
            f"  detected: {size} encoder (D={cfg.embed_dim}, {cfg.depth} layers, "
            f"FFN {cfg.mlp_dim}, conv {'/'.join(map(str, cfg.conv_channels))}), "
            f"{self.source_layout} layout, {head}",
            f"  kept: {self.kept} tensors, written as float32 in the {self.layout} layout",
            f"  dropped: {len(self.dropped)} tensors",
        ]
        by_reason = collections.defaultdict(list)
        for key, reason in self.dropped.items():
            by_reason[reason].append(key)
        lines += [
            f"    {len(keys)} x {reason}, e.g. {keys[0]}" for reason, keys in by_reason.items()
        ]
        return "\n".join(lines)


def convert_checkpoint(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    layout: str = "released",
    force: bool = False,
) -> ConversionReport:
    """Convert one checkpoint to a float32 safetensors file; see the module doc.

    ``input_path`` is a ``torch.save`` checkpoint (``.pt``/``.pth``) or any weight file
    :func:`eegdino_tf.weights.read_tensors` reads; ``layout`` is any of
    :data:`eegdino_tf.layouts.NAMES` (``"eegdino-rs"`` and ``"pretraining"`` hold an encoder
    alone, ``"finetuning"`` and ``"braindecode"`` need a head). An existing output is an
    error unless ``force`` is true; the output is written atomically.
    """
    layout = get_layout(layout).name
    source, output = Path(input_path), Path(output_path)
    normalized = W.read_weights(source)
    # No group count is needed to convert: one the source's metadata records is kept.
    config, groups = W.infer_shape(normalized.tensors, **normalized.saved)
    written = W.write_weights(
        output,
        normalized.tensors,
        config,
        layout=layout,
        norm_groups_known=groups is not None,
        source=source,
        force=force,
    )
    return ConversionReport(
        source=source,
        output=output,
        layout=layout,
        source_layout=normalized.layout,
        config=config,
        has_head=normalized.has_head,
        kept=len(written),
        dropped=dict(normalized.dropped),
    )


def convert_all(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    layout: str = "released",
    force: bool = False,
) -> list[ConversionReport]:
    """Convert each released checkpoint (``model_EEG_DINO_{S,M,L}.pt``) in ``input_dir``.

    Outputs go to ``output_dir`` as ``eeg_dino_{small,medium,large}.safetensors``. It is an
    error if none of the three is present.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise WeightsError(f"input directory not found: {input_dir}")
    present = [name for name in RELEASED_FILES if (input_dir / name).is_file()]
    if not present:
        held = sorted(p.name for p in input_dir.iterdir())
        raise WeightsError(
            f"none of the released checkpoints {list(RELEASED_FILES)} is in {input_dir} "
            f"(it holds: {', '.join(held[:10]) or 'nothing'}{' ...' if len(held) > 10 else ''})"
        )
    return [
        convert_checkpoint(
            input_dir / name, output_dir / RELEASED_FILES[name], layout=layout, force=force
        )
        for name in present
    ]
