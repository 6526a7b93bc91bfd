"""Weight layouts: every naming of EEG-DINO's tensors that eegdino-tf reads and writes.

One :class:`Layout` per layout says how to recognise its keys, how to map them to and from
the released names (the keys of ``ARCHITECTURE.md``, in PyTorch layout), and whether it holds
a classification head. :data:`LAYOUTS` is the one registry: detection
(:func:`detect_layout`), loading (:func:`eegdino_tf.weights.normalize_state_dict`),
:func:`eegdino_tf.weights.save_weights`, :func:`eegdino_tf.convert.convert_checkpoint` and the
command line's ``--layout`` all take their layouts and names from it. Adding a layout is one
entry here and its test (``tests/test_layouts.py``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Collection

import numpy as np

from eegdino_tf.errors import ConfigError, WeightsError

#: The released head keys: ``full_linear``, ``channel_linear`` and the head MLP, a torch
#: Sequential whose Linears sit at 0, 3 and 6.
HEAD_KEY = re.compile(r"^(full_linear|channel_linear|classifier\.[036])\.(weight|bias)$")

#: Whether a layout's files hold a classification head.
NO_HEAD, OPTIONAL_HEAD, HEAD = "no", "optional", "required"


@dataclasses.dataclass(frozen=True)
class Layout:
    """One naming of the tensors, relative to the released names (PyTorch layout).

    Attributes:
        name: the layout's one name (``NormalizedWeights.layout``, ``layout=``, ``--layout``).
        description: one line, for help texts.
        recognise: ``(prefix, keys) -> bool``: whether a file is in this layout, given the
            prefix in front of its encoder keys and all its keys (prefixed).
        prefix: written in front of every encoder key.
        renames: ``(released prefix, this layout's prefix)`` pairs, for encoder and head keys.
        transposed: released keys whose 2-D weight this layout stores as ``[in, out]``.
        head: :data:`NO_HEAD`, :data:`OPTIONAL_HEAD` or :data:`HEAD` (a classifier only).
        aliases: other names accepted for ``layout=``.
    """

    name: str
    description: str
    recognise: Callable[[str, Collection[str]], bool]
    prefix: str = ""
    renames: tuple[tuple[str, str], ...] = ()
    transposed: re.Pattern | None = None
    head: str = OPTIONAL_HEAD
    aliases: tuple[str, ...] = ()

    def to_released(self, key: str, value: np.ndarray) -> tuple[str, np.ndarray]:
        """One tensor of this layout (its prefix already stripped) under its released name."""
        key = _rename(key, {theirs: ours for ours, theirs in self.renames})
        return key, self._transpose(key, value)

    def from_released(self, key: str, value: np.ndarray) -> tuple[str, np.ndarray]:
        """One released-name tensor under this layout's name."""
        value = self._transpose(key, value)
        name = _rename(key, dict(self.renames))
        return (name if HEAD_KEY.match(key) else self.prefix + name), value

    def write(self, tensors: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
        """Released-name tensors (``what`` names them in errors) under this layout's names;
        a head where the layout has none, or none where it needs one, is a WeightsError."""
        has_head = any(HEAD_KEY.match(k) for k in tensors)
        if has_head and self.head == NO_HEAD:
            raise WeightsError(
                f"the {self.name} layout is defined for the encoder only, and {what} holds a "
                "classification head; write it with layout='released'"
            )
        if not has_head and self.head == HEAD:
            raise WeightsError(
                f"the {self.name} layout holds a classifier (encoder + head), and {what} is an "
                "encoder; write it with layout='released'"
            )
        return dict(self.from_released(k, v) for k, v in tensors.items())

    def _transpose(self, key: str, value: np.ndarray) -> np.ndarray:
        if self.transposed is None or not self.transposed.match(key) or np.ndim(value) != 2:
            return value
        return np.ascontiguousarray(np.transpose(value))


def _rename(key: str, renames: dict[str, str]) -> str:
    """``key`` with the first matching prefix of ``renames`` replaced."""
    old = next((o for o in renames if key.startswith(o)), None)
    return key if old is None else renames[old] + key[len(old) :]


LAYOUTS: tuple[Layout, ...] = (
    # Detection tries these in order and takes the first that recognises the file.
    Layout(
        "braindecode",
        "braindecode's EEGDINO: released encoder names, head under final_layer.*",
        recognise=lambda prefix, keys: any(k.startswith("final_layer.") for k in keys),
        renames=(
            ("full_linear.", "final_layer.token_proj.0."),
            ("channel_linear.", "final_layer.time_proj.0."),
            ("classifier.", "final_layer.classifier."),
        ),
        head=HEAD,
    ),
    Layout(
        "pretraining",
        "the released .pt checkpoints' student encoder, under module.student.",
        recognise=lambda prefix, keys: prefix.startswith("module.student."),
        prefix="module.student.",
        head=NO_HEAD,
    ),
    Layout(
        "eegdino-rs",
        "the eegdino-rs crate's converter: renamed patch embedding, Linears as [in, out]",
        recognise=lambda prefix, keys: any(".proj_in.conv1." in k for k in keys),
        renames=(
            ("patch_embedding.proj_in.0.", "patch_embedding.proj_in.conv1."),
            ("patch_embedding.proj_in.1.", "patch_embedding.proj_in.norm1."),
            ("patch_embedding.proj_in.3.", "patch_embedding.proj_in.conv2."),
            ("patch_embedding.proj_in.4.", "patch_embedding.proj_in.norm2."),
            ("patch_embedding.proj_in.6.", "patch_embedding.proj_in.conv3."),
            ("patch_embedding.proj_in.7.", "patch_embedding.proj_in.norm3."),
            ("patch_embedding.time_encoding.0.", "patch_embedding.time_encoding."),
            ("patch_embedding.spectral_proj.0.", "patch_embedding.spectral_proj."),
        ),
        transposed=re.compile(
            r"^(patch_embedding\.(spectral_proj\.0|channel_embedding)"
            r"|encoder_layers\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2))\.weight$"
        ),
        head=NO_HEAD,
        aliases=("rs",),
    ),
    Layout(
        "finetuning",
        "the original finetuning code: encoder under encoder., head unprefixed",
        recognise=lambda prefix, keys: prefix == "encoder." and any(map(HEAD_KEY.match, keys)),
        prefix="encoder.",
        head=HEAD,
    ),
    Layout(
        "released",
        "the released names (converted safetensors), and a head under its released names",
        recognise=lambda prefix, keys: True,
    ),
)
#: Every layout's name, in registry order.
NAMES = tuple(layout.name for layout in LAYOUTS)
#: What ``layout=`` accepts: the names and their aliases.
CHOICES = NAMES + tuple(alias for layout in LAYOUTS for alias in layout.aliases)


def get_layout(name: str) -> Layout:
    """The layout called ``name`` (or one of its aliases); otherwise a ConfigError."""
    found = next((x for x in LAYOUTS if name == x.name or name in x.aliases), None)
    if found is None:
        raise ConfigError(f"layout={name!r} is not a weight layout; choose one of {NAMES}")
    return found


def detect_layout(prefix: str, keys: Collection[str]) -> Layout:
    """The layout of a file whose encoder keys follow ``prefix``, from its ``keys``."""
    return next(layout for layout in LAYOUTS if layout.recognise(prefix, keys))
