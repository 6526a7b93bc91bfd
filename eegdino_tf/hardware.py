"""What this machine's processor can do for the model, and the precision that suits it.

TensorFlow runs bfloat16 very differently from one x86-64 CPU to the next:

- with AMX-BF16 or AVX512-BF16 the CPU multiplies bfloat16 natively (oneDNN's kernels), about
  twice float32's speed on the large model;
- with AVX-512 but neither of those, oneDNN still runs bfloat16 (converting to float32 inside
  its kernels): the numbers of native bfloat16, at roughly float32's speed or less;
- with AVX2 only (or with oneDNN turned off, ``TF_ENABLE_ONEDNN_OPTS=0``) TensorFlow falls back
  to its Eigen kernels, whose bfloat16 ``MatMul`` / ``BatchMatMul`` **truncate** each float32
  result to bfloat16 (round toward zero): a bias that grows through the layers (NRMSE 2e-2 on
  the small model instead of 7e-3) and 5-10x slower than float32.

:func:`bf16_matmul_rounds_to_nearest` tells the layers which case they are in (they then do
their bfloat16 contractions in float32 on bfloat16 values and round to nearest, the
arithmetic of the native kernels); :func:`auto_precision` is what ``precision="auto"`` picks;
:func:`describe` is the summary ``eegdino-tf info`` and ``demo`` print.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import gc
import os
import platform
import sys
import warnings

from eegdino_tf.config import PRECISIONS, PRESETS
from eegdino_tf.errors import ConfigError

#: CPU flags (Linux ``/proc/cpuinfo`` names) that decide speed and precision here.
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "avx_ne_convert")
#: Flags with which the CPU does bfloat16 arithmetic natively (oneDNN uses them).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
#: Flags with which TensorFlow sends bfloat16 ops to oneDNN (``IsBF16SupportedByOneDNN``).
ONEDNN_BF16_FLAGS = ("avx512f", "avx_ne_convert")
#: ``ONEDNN_MAX_CPU_ISA`` values that keep oneDNN from its AVX-512 (and so bfloat16) kernels.
_ONEDNN_BELOW_AVX512 = ("sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2")
#: GPUs from this compute capability on have float16 tensor cores.
TENSOR_CORE_CAPABILITY = (7, 0)
#: Narrowest model for which native-bfloat16 CPUs run mixed_bfloat16 faster than float32
#: (measured, README "Precision": small, D = 200, is faster in float32; medium and large not).
BF16_MIN_WIDTH = 512


class PrecisionWarning(UserWarning):
    """A precision was asked for that this hardware runs slower than float32."""


@dataclasses.dataclass(frozen=True)
class Hardware:
    """The facts the precision choice depends on."""

    cpu: str
    arch: str
    flags: frozenset[str]
    onednn: bool
    gpus: tuple[tuple[str, tuple[int, int] | None], ...]

    @property
    def native_bf16(self) -> str | None:
        """The CPU feature that gives native bfloat16 arithmetic, or None."""
        return next((f for f in NATIVE_BF16_FLAGS if f in self.flags), None)

    @property
    def onednn_bf16(self) -> bool:
        """Whether TensorFlow's (non-XLA) bfloat16 ops run in oneDNN, which rounds to nearest."""
        isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().lower()
        return (
            self.onednn
            and isa not in _ONEDNN_BELOW_AVX512
            and any(f in self.flags for f in ONEDNN_BF16_FLAGS)
        )

    @property
    def tensor_core_gpu(self) -> bool:
        return any(cc is not None and cc >= TENSOR_CORE_CAPABILITY for _, cc in self.gpus)

    def flag_report(self) -> dict[str, bool]:
        """``{flag: present}`` for :data:`REPORTED_FLAGS`."""
        return {f: f in self.flags for f in REPORTED_FLAGS}


def _cpuinfo_field(*keys: str) -> str | None:
    """The first ``/proc/cpuinfo`` value under one of ``keys``; None without that file."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``);
    empty where that file does not exist."""
    return frozenset((_cpuinfo_field("flags", "Features") or "").split())


def physical_memory() -> int | None:
    """This machine's physical memory in bytes (``sysconf``), or None where it cannot say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return None


def release_freed_memory() -> None:
    """Hand memory freed by the C allocator back to the system (glibc's ``malloc_trim``): a
    TFLite or ONNX conversion frees gigabytes that glibc would otherwise keep in the process
    (medium's LiteRT conversion: RSS 5.7 GB after it, 1.4 GB after this). A no-op where there
    is no glibc."""
    gc.collect()  # the converters' graphs sit in reference cycles
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    return (
        _cpuinfo_field("model name", "Model", "Hardware")
        or platform.processor()
        or platform.machine()
    )


def _onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN ops (on by default on x86-64 Linux;
    ``TF_ENABLE_ONEDNN_OPTS=0`` turns them off)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # a TensorFlow without the private probe
        default = "1" if platform.machine().lower() in ("x86_64", "amd64") else "0"
        return os.environ.get("TF_ENABLE_ONEDNN_OPTS", default).strip().lower() in ("1", "true")


def _gpus() -> tuple[tuple[str, tuple[int, int] | None], ...]:
    import tensorflow as tf

    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        found.append((details.get("device_name", gpu.name), details.get("compute_capability")))
    return tuple(found)


def cpu_threads() -> int:
    """TensorFlow's intra-op thread count where one was set, else the usable cores."""
    import tensorflow as tf

    threads = tf.config.threading.get_intra_op_parallelism_threads()
    if threads:
        return threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.cache
def detect() -> Hardware:
    """This machine (read once per process)."""
    return Hardware(
        cpu=cpu_name(),
        arch=platform.machine(),
        flags=cpu_flags(),
        onednn=_onednn_enabled(),
        gpus=_gpus(),
    )


def bf16_matmul_rounds_to_nearest() -> bool:
    """Whether TensorFlow's non-XLA bfloat16 matmuls here round their results to nearest.

    True on a GPU and where oneDNN runs them; False where TensorFlow's Eigen fallback does
    (AVX2-only CPUs, aarch64, oneDNN off), which truncates.
    """
    hw = detect()
    return bool(hw.gpus) or hw.onednn_bf16


def auto_precision(embed_dim: int, hw: Hardware | None = None) -> str:
    """The fastest precision for a model of width ``embed_dim`` that keeps the accuracy bounds
    (README "Precision") here.

    A GPU with tensor cores: ``mixed_float16``. A CPU with native bfloat16 (AMX-BF16 or
    AVX512-BF16) under oneDNN: ``mixed_bfloat16`` from :data:`BF16_MIN_WIDTH` on. Anything
    else: ``float32``, since float16 and bfloat16 without hardware support are slower than
    float32 there (measured, README).
    """
    hw = hw or detect()
    if hw.gpus:
        return "mixed_float16" if hw.tensor_core_gpu else "float32"
    if hw.native_bf16 and hw.onednn_bf16 and embed_dim >= BF16_MIN_WIDTH:
        return "mixed_bfloat16"
    return "float32"


def resolve_precision(precision: str, embed_dim: int) -> str:
    """``precision`` itself, or what ``"auto"`` means here for a model of width ``embed_dim``;
    warns (once per process) when the choice runs slower than float32 on this hardware."""
    if precision == "auto":
        return auto_precision(embed_dim)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be 'auto' or one of {PRECISIONS}, got {precision!r}")
    slow = slow_precision_reason(precision)
    if slow:
        _warn_once(slow)
    return precision


def slow_precision_reason(precision: str, hw: Hardware | None = None) -> str | None:
    """Why ``precision`` is slower than float32 on this hardware, or None."""
    hw = hw or detect()
    if hw.gpus or precision == "float32":
        return None
    if precision == "mixed_bfloat16" and not (hw.native_bf16 and hw.onednn_bf16):
        if not hw.onednn:
            missing = "oneDNN is off"
        elif hw.native_bf16:
            missing = f"ONEDNN_MAX_CPU_ISA keeps oneDNN from {hw.native_bf16}"
        else:
            missing = "no " + " or ".join(NATIVE_BF16_FLAGS)
        return (
            f"mixed_bfloat16 on this CPU ({hw.cpu}: {missing}) has no native bfloat16 "
            "arithmetic: it runs slower than float32, for bfloat16's accuracy; "
            "precision='float32' is faster and exact"
        )
    if precision == "mixed_float16":
        return (
            f"mixed_float16 without a GPU ({hw.cpu}) has no native float16 arithmetic: it "
            "runs slower than float32; precision='float32' is faster and exact"
        )
    return None


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, PrecisionWarning, stacklevel=_caller_stacklevel())


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this package and
    Keras (the user's call), however deep the model construction went."""
    import keras

    inside = (os.path.dirname(__file__), os.path.dirname(keras.__file__))
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


def describe(hw: Hardware | None = None) -> str:
    """One paragraph: the CPU and its relevant flags, oneDNN, GPUs, and what ``"auto"`` picks."""
    hw = hw or detect()
    have = [f for f in REPORTED_FLAGS if f in hw.flags]
    lacking = [f for f in REPORTED_FLAGS if f not in hw.flags]
    flags = ", ".join(have) or "none of " + ", ".join(REPORTED_FLAGS)
    if lacking and have:
        flags += "; no " + ", ".join(lacking)
    gpus = ", ".join(f"{name} (compute {cc[0]}.{cc[1]})" if cc else name for name, cc in hw.gpus)
    bf16 = (
        f"native ({hw.native_bf16})"
        if hw.native_bf16 and hw.onednn_bf16
        else "oneDNN, converted to float32 inside its kernels"
        if hw.onednn_bf16
        else "software (float32 matmuls rounded to bfloat16)"
    )
    return (
        f"CPU {hw.cpu} [{hw.arch}] ({flags}); oneDNN {'on' if hw.onednn else 'off'}; "
        f"GPU {gpus or 'none'}; bfloat16 {bf16}; precision='auto' -> "
        + ", ".join(f"{auto_precision(c.embed_dim, hw)} ({n})" for n, c in PRESETS.items())
    )
