"""Weights: read a checkpoint, recognise its layout, infer its config, port it into Keras.

Three steps, kept apart as in keras-hub's converters:

1. :func:`read_tensors` reads a ``.safetensors`` file (or a ``.pt`` checkpoint, through the
   torch-free reader in :mod:`eegdino_tf.checkpoint`) into NumPy arrays.
2. :func:`normalize_state_dict` renames every layout users hold (released names with or
   without ``module.student.`` / ``encoder.``, braindecode's ``final_layer.*`` head, the
   eegdino-rs layout) to the released names in PyTorch layout, and sets aside the entries
   that inference never uses (teacher, projector, loss state, ``relative_position_index``).
   :func:`infer_config` reads the model's shape off those tensors.
3. :func:`encoder_weight_map` / :func:`head_weight_map` pair each released key with its Keras
   variable and a small layout hook (``[out, in] -> [in, out]`` for a Linear, ``OIHW -> HWIO``
   for a Conv2d); :func:`assign_weights` fills every variable exactly once and fails on a
   missing key, an unexpected key or a wrong shape.

The key map of every layout is in ``docs/architecture.md``, "Weights".
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from eegdino_tf.config import EEGDinoConfig, preset_with_width
from eegdino_tf.errors import WeightsError

# ---------------------------------------------------------------------------------------------
# 1. Reading
# ---------------------------------------------------------------------------------------------

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def read_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a ``.safetensors`` file or a ``torch.save`` checkpoint, as NumPy."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weight file not found: {path}")
    if path.is_dir():
        raise WeightsError(f"{path} is a directory; pass a .safetensors or .pt file")
    if path.suffix.lower() in TORCH_SUFFIXES:
        from eegdino_tf.checkpoint import read_state_dict

        return read_state_dict(path)
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        other = _other_format(path)
        if other:
            raise WeightsError(
                f"{path} is {other}, not a weight file; weights are read from .safetensors "
                "or torch.save (.pt) files"
            ) from None
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsError(
            f"cannot read {path} as safetensors ({reason}); the file is truncated, corrupt "
            f"or not a safetensors file"
        ) from None


#: Leading bytes of the model formats people confuse with weight files.
_MAGIC = (
    (b"PK\x03\x04", "a zip archive (a Keras .keras model, or a .npz)"),
    (b"\x89HDF", "an HDF5 file (a legacy Keras .h5 model)"),
)


def _other_format(path: Path) -> str | None:
    """What a file that failed to read as safetensors is, from its first bytes, if known."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if path.suffix.lower() == ".tflite" or head[4:8] == b"TFL3":
        return "a TFLite flatbuffer"
    return next((what for magic, what in _MAGIC if head.startswith(magic)), None)


# ---------------------------------------------------------------------------------------------
# 2. Layouts
# ---------------------------------------------------------------------------------------------

#: Head keys in the original finetuning layout, and braindecode's names for them.
BRAINDECODE_HEAD = {
    "final_layer.token_proj.0.": "full_linear.",
    "final_layer.time_proj.0.": "channel_linear.",
    "final_layer.classifier.": "classifier.",
}
HEAD_KEY = re.compile(r"^(full_linear|channel_linear|classifier\.[036])\.(weight|bias)$")

#: eegdino-rs renames (applied to the key after the encoder prefix).
RS_RENAMES = {
    "patch_embedding.proj_in.conv1.": "patch_embedding.proj_in.0.",
    "patch_embedding.proj_in.norm1.": "patch_embedding.proj_in.1.",
    "patch_embedding.proj_in.conv2.": "patch_embedding.proj_in.3.",
    "patch_embedding.proj_in.norm2.": "patch_embedding.proj_in.4.",
    "patch_embedding.proj_in.conv3.": "patch_embedding.proj_in.6.",
    "patch_embedding.proj_in.norm3.": "patch_embedding.proj_in.7.",
    "patch_embedding.time_encoding.": "patch_embedding.time_encoding.0.",
    "patch_embedding.spectral_proj.": "patch_embedding.spectral_proj.0.",
}
#: Released-name keys whose 2-D weight eegdino-rs stores transposed (``[in, out]``).
RS_TRANSPOSED = re.compile(
    r"^(patch_embedding\.(spectral_proj\.0|channel_embedding)"
    r"|encoder_layers\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2))\.weight$"
)

#: Entries inference never uses, with the reason reported when they are dropped.
IGNORED = (
    (re.compile(r"relative_position_index$"), "unused relative_position_index buffer"),
    (re.compile(r"(^|\.)teacher[._]"), "DINO teacher network (pretraining only)"),
    (re.compile(r"(head|projector)[._]"), "pretraining projection head"),
    (re.compile(r"(loss|center)"), "pretraining loss state"),
)


@dataclasses.dataclass
class NormalizedWeights:
    """A state dict in released key names and PyTorch layout.

    Attributes:
        tensors: encoder keys (no prefix) and, if present, head keys (``full_linear.*``...).
        layout: what was detected: ``"released"``, ``"pretraining"``, ``"finetuning"``,
            ``"braindecode"`` or ``"eegdino-rs"``.
        dropped: keys set aside, each with the reason.
        source_keys: canonical key -> the key as it appeared in the file (for messages).
    """

    tensors: dict[str, np.ndarray]
    layout: str
    dropped: dict[str, str]
    source_keys: dict[str, str]

    @property
    def has_head(self) -> bool:
        return any(HEAD_KEY.match(k) for k in self.tensors)

    def encoder_tensors(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.tensors.items() if not HEAD_KEY.match(k)}


def _encoder_prefix(keys: list[str]) -> str:
    """The prefix in front of the encoder keys, found from where ``global_tokens`` sits."""
    candidates = sorted(
        {k[: -len("global_tokens")] for k in keys if k.endswith("global_tokens")}
        - {p for p in (k[: -len("global_tokens")] for k in keys) if "teacher" in p}
    )
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise WeightsError(
            "no 'global_tokens' tensor found, so this is not an EEG-DINO encoder checkpoint "
            f"(first keys: {sorted(keys)[:5]})"
        )
    student = [c for c in candidates if "student" in c]
    if len(student) == 1:
        return student[0]
    raise WeightsError(f"several encoders in one file (prefixes {candidates}); keep one")


def normalize_state_dict(tensors: dict[str, np.ndarray]) -> NormalizedWeights:
    """Rename any supported layout to released names in PyTorch layout (see module doc)."""
    prefix = _encoder_prefix(list(tensors))
    is_rs = any(".proj_in.conv1." in k for k in tensors)
    layout = "eegdino-rs" if is_rs else "released"
    if prefix.startswith("module.student."):
        layout = "pretraining"
    out: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for key, value in tensors.items():
        reason = next((why for pattern, why in IGNORED if pattern.search(key)), None)
        name = key
        for old, new in BRAINDECODE_HEAD.items():
            if key.startswith(old):
                name, layout = new + key[len(old) :], "braindecode"
        if HEAD_KEY.match(name):
            if prefix == "encoder." and layout == "released":
                layout = "finetuning"
        elif key.startswith(prefix) and reason is None:
            name = key[len(prefix) :]
            for old, new in RS_RENAMES.items():
                if is_rs and name.startswith(old):
                    name = new + name[len(old) :]
            if is_rs and RS_TRANSPOSED.match(name) and np.ndim(value) == 2:
                value = np.ascontiguousarray(np.transpose(value))
        elif reason is not None:
            dropped[key] = reason
            continue
        if name in out:
            raise WeightsError(f"keys {source[name]!r} and {key!r} both map to {name!r}")
        out[name], source[name] = value, key
    return NormalizedWeights(out, layout, dropped, source)


def to_rs_layout(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Released encoder names (PyTorch layout) -> the eegdino-rs converter layout."""
    out = {}
    for key, value in tensors.items():
        name = key
        if RS_TRANSPOSED.match(key) and np.ndim(value) == 2:
            value = np.ascontiguousarray(np.transpose(value))
        for rs_name, released in RS_RENAMES.items():
            if name.startswith(released):
                name = rs_name + name[len(released) :]
        out[name] = value
    return out


def infer_config(tensors: dict[str, np.ndarray], **overrides) -> EEGDinoConfig:
    """The model shape, read off released-name tensors; GroupNorm groups from the size table.

    ``overrides`` (e.g. ``norm_groups=4``, ``num_heads=16``) win over what is inferred.
    """

    def shape(key: str) -> tuple[int, ...]:
        if key not in tensors:
            raise WeightsError(f"missing key {key!r}, needed to infer the model's shape")
        return tuple(tensors[key].shape)

    embed_dim = shape("global_tokens")[-1]
    layer_ids = {int(m.group(1)) for k in tensors if (m := re.match(r"encoder_layers\.(\d+)\.", k))}
    if not layer_ids:
        raise WeightsError("no 'encoder_layers.*' tensors found; the checkpoint has no layers")
    conv = tuple(shape(f"patch_embedding.proj_in.{i}.weight")[0] for i in (0, 3, 6))
    preset = preset_with_width(embed_dim)
    groups = preset.norm_groups if preset else _largest_group_count(conv)
    inferred = dict(
        embed_dim=embed_dim,
        depth=max(layer_ids) + 1,
        mlp_dim=shape("encoder_layers.0.mlp.fc1.weight")[0],
        conv_channels=conv,
        norm_groups=groups,
    )
    try:
        return EEGDinoConfig(**{**inferred, **overrides})
    except ValueError as err:
        raise WeightsError(f"the tensors do not form a valid model: {err}") from None


def _largest_group_count(conv_channels: tuple[int, ...]) -> int:
    """For a custom size without a table entry: the size-table rule, width / 5 ... / 16."""
    widths = np.gcd.reduce(conv_channels)
    return next(g for g in (16, 8, 5, 4, 2, 1) if widths % g == 0)


def describe_weights(path: str | os.PathLike, **overrides: Any) -> dict[str, Any]:
    """Layout, size, shape, parameter count and head of a weight file, without building it.

    ``overrides`` are config fields the tensors cannot tell (``norm_groups``, ``num_heads``).
    """
    normalized = normalize_state_dict(read_tensors(path))
    config = infer_config(normalized.tensors, **overrides)
    head = normalized.has_head
    return {
        "layout": normalized.layout,
        "size": config.name,
        "config": config.to_dict(),
        "encoder_parameters": int(sum(v.size for v in normalized.encoder_tensors().values())),
        "head": head,
        "num_classes": int(normalized.tensors["classifier.6.weight"].shape[0]) if head else None,
        "dropped": normalized.dropped,
    }


# ---------------------------------------------------------------------------------------------
# 3. Porting into Keras
# ---------------------------------------------------------------------------------------------

#: A layout hook: the axis permutation from the PyTorch tensor to the Keras variable.
LINEAR = (1, 0)  # Linear [out, in] -> Dense [in, out]
CONV = (2, 3, 1, 0)  # Conv2d [out, in, kh, kw] -> Conv2D [kh, kw, in, out]
DEPTHWISE = (2, 3, 0, 1)  # depthwise Conv2d [D, 1, kh, kw] -> DepthwiseConv2D [kh, kw, D, 1]
AS_IS = None


def _port_linear(key: str, dense) -> Iterator[tuple]:
    yield f"{key}.weight", dense.kernel, LINEAR
    if dense.bias is not None:
        yield f"{key}.bias", dense.bias, AS_IS


def _port_norm(key: str, norm) -> Iterator[tuple]:
    yield f"{key}.weight", norm.gamma, AS_IS
    yield f"{key}.bias", norm.beta, AS_IS


def encoder_weight_map(encoder) -> Iterator[tuple]:
    """``(released key, Keras variable, layout hook)`` for every encoder weight."""
    pe = encoder.get_layer("patch_embedding")
    yield "global_tokens", encoder.get_layer("global_token").token, AS_IS
    convs = (pe.temporal.conv1, pe.temporal.conv2, pe.temporal.conv3)
    norms = (pe.temporal.norm1, pe.temporal.norm2, pe.temporal.norm3)
    for index, conv, norm in zip((0, 3, 6), convs, norms, strict=False):
        yield f"patch_embedding.proj_in.{index}.weight", conv.kernel, CONV
        yield f"patch_embedding.proj_in.{index}.bias", conv.bias, AS_IS
        yield from _port_norm(f"patch_embedding.proj_in.{index + 1}", norm)
    yield from _port_linear("patch_embedding.spectral_proj.0", pe.spectral_proj)
    yield from _port_linear("patch_embedding.channel_embedding", pe.channel_embedding)
    yield "patch_embedding.time_encoding.0.weight", pe.time_encoding.kernel, DEPTHWISE
    yield "patch_embedding.time_encoding.0.bias", pe.time_encoding.bias, AS_IS
    for i in range(encoder.depth):
        block, key = encoder.get_layer(f"encoder_layer_{i}"), f"encoder_layers.{i}"
        yield from _port_norm(f"{key}.norm1", block.norm1)
        yield from _port_linear(f"{key}.attn.qkv", block.attn.qkv)
        yield f"{key}.attn.q_bias", block.attn.q_bias, AS_IS
        yield f"{key}.attn.v_bias", block.attn.v_bias, AS_IS
        yield from _port_linear(f"{key}.attn.proj", block.attn.proj)
        yield from _port_norm(f"{key}.norm2", block.norm2)
        yield from _port_linear(f"{key}.mlp.fc1", block.mlp.fc1)
        yield from _port_linear(f"{key}.mlp.fc2", block.mlp.fc2)


def head_weight_map(head) -> Iterator[tuple]:
    """``(released key, Keras variable, layout hook)`` for every classification-head weight."""
    yield from _port_linear("full_linear", head.full_linear)
    yield from _port_linear("channel_linear", head.channel_linear)
    # The reference's head MLP is a torch Sequential: Linear, GELU, Dropout at 0/1/2, ...
    yield from _port_linear("classifier.0", head.hidden1)
    yield from _port_linear("classifier.3", head.hidden2)
    yield from _port_linear("classifier.6", head.logits)


def assign_weights(
    weight_map: Iterator[tuple], weights: NormalizedWeights, *, ignore_head: bool = False
) -> None:
    """Fill every variable of ``weight_map`` exactly once from ``weights``; strict.

    Raises :class:`WeightsError` naming each missing key, each unexpected key and each shape
    mismatch (with both shapes, in PyTorch layout). Nothing is assigned unless all match.
    """
    pending = dict(weights.tensors)
    if ignore_head:
        pending = {k: v for k, v in pending.items() if not HEAD_KEY.match(k)}
    assignments, problems, filled = [], [], set()
    for key, variable, permutation in weight_map:
        assert id(variable) not in filled, f"{variable.path} mapped twice"  # a bug in the map
        filled.add(id(variable))
        expected = tuple(variable.shape)
        if permutation is not AS_IS:
            expected = tuple(expected[i] for i in np.argsort(permutation))
        if key not in pending:
            problems.append(f"missing key {key!r} (expected shape {list(expected)})")
            continue
        value = np.asarray(pending.pop(key), dtype=np.float32)
        if value.shape != expected:
            problems.append(
                f"key {weights.source_keys.get(key, key)!r} has shape {list(value.shape)}, "
                f"expected {list(expected)}"
            )
            continue
        assignments.append(
            (variable, value if permutation is AS_IS else value.transpose(permutation))
        )
    problems += [
        f"unexpected key {weights.source_keys.get(k, k)!r} (shape {list(v.shape)})"
        for k, v in pending.items()
    ]
    if problems:
        raise WeightsError(f"{len(problems)} problem(s) loading weights: " + "; ".join(problems))
    for variable, value in assignments:
        variable.assign(value)


# ---------------------------------------------------------------------------------------------
# 4. Writing back out
# ---------------------------------------------------------------------------------------------

#: Layouts :func:`save_weights` writes: the original finetuning code's (``encoder.*`` and the
#: head), braindecode ``EEGDINO``'s (un-prefixed encoder, ``final_layer.*`` head), and the
#: released encoder alone.
SAVE_LAYOUTS = ("finetuning", "braindecode", "released")


def model_tensors(model: Any, layout: str = "finetuning") -> dict[str, np.ndarray]:
    """Every weight of a Keras encoder or classifier as float32 PyTorch-layout tensors under
    ``layout``'s key names (:data:`SAVE_LAYOUTS`); the inverse of loading."""
    if layout not in SAVE_LAYOUTS:
        raise WeightsError(f"unknown layout {layout!r}; choose one of {SAVE_LAYOUTS}")
    head = getattr(model, "head", None)
    encoder = model.encoder if head is not None else model
    if layout != "released" and head is None:
        raise WeightsError(
            f"the {layout} layout holds a classifier (encoder + head), and this model is an "
            "encoder; save it with layout='released'"
        )
    prefix = "encoder." if layout == "finetuning" else ""
    pairs = [(prefix + key, v, p) for key, v, p in encoder_weight_map(encoder)]
    if layout != "released":
        renames = {ours: theirs for theirs, ours in BRAINDECODE_HEAD.items()}
        for key, variable, permutation in head_weight_map(head):
            if layout == "braindecode":
                ours = next(o for o in renames if key.startswith(o))
                key = renames[ours] + key[len(ours) :]
            pairs.append((key, variable, permutation))
    tensors = {}
    for key, variable, permutation in pairs:
        value = np.asarray(variable.numpy(), dtype=np.float32)
        if permutation is not None:  # the Keras layout back to PyTorch's
            value = value.transpose(np.argsort(permutation))
        tensors[key] = np.ascontiguousarray(value)
    return tensors


def save_weights(
    model: Any,
    path: str | os.PathLike,
    *,
    layout: str = "finetuning",
    force: bool = False,
) -> Path:
    """Write a Keras encoder or classifier as a float32 ``.safetensors`` file that PyTorch
    code loads: exactly the keys, shapes and tensor layouts of ``layout``
    (:data:`SAVE_LAYOUTS`; ``"released"`` writes the encoder alone). The shape goes in the
    file's metadata. Written atomically; an existing ``path`` is an error unless ``force``."""
    from safetensors.numpy import save_file

    from eegdino_tf import __version__
    from eegdino_tf.files import atomic_output

    tensors = model_tensors(model, layout)
    encoder = getattr(model, "encoder", model)
    config = encoder.config
    metadata = {
        "layout": layout,
        "size": config.name,
        "config": json.dumps(config.to_dict()),
        "has_head": str(layout != "released").lower(),
        "writer": f"eegdino-tf {__version__}",
    }
    with atomic_output(path, force=force) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)
