"""What this CPU can compute fast, and which precision OpenVINO computes in on it.

x86-64 machines differ in the instructions the runtimes pick kernels for: AVX2-only parts (e.g.
AMD EPYC before Zen 4) have no native BF16, FP16 or INT8 dot-product (VNNI) instructions;
AVX-512 parts may have BF16 and VNNI (Intel Xeon since Cooper Lake / Ice Lake, AMD Zen 4+),
AVX-512 FP16 and AMX (Intel Sapphire Rapids and later).

Two effects matter to pncd:

- OpenVINO's CPU plugin computes in bf16 by default where the CPU has BF16
  (``INFERENCE_PRECISION_HINT``), and in f16 where asked and the CPU has FP16 arithmetic.
  :func:`resolve_inference_precision` turns ``--inference-precision auto|f32|f16|bf16`` into
  the hint pncd passes, so the precision is always a choice, never the plugin's default.
- ONNX Runtime's x86 integer kernels multiply u8 activations by s8 weights; without VNNI they
  use ``vpmaddubsw``, whose 16-bit intermediate sums can saturate (ONNX Runtime's quantization
  docs: "on x86-64 with AVX2 or AVX-512 (without VNNI) U8S8 may suffer from saturation").
  :func:`has_vnni` tells which case a machine is. OpenVINO's oneDNN kernels do the same on such
  CPUs. So ``pncd export``'s INT8 for the CPU runtimes keeps its weights in 7 bits by default
  (ONNX Runtime's ``reduce_range``, NNCF's ``OverflowFix.ENABLE``): a pair of u8 x s7 products
  fits in int16, and the artifact computes the same on every x86 CPU (``--int8-cpu``).

The features come from the CPUID instruction, as NumPy's runtime dispatch reads it
(``__cpu_features__``), not from /proc/cpuinfo: the runtimes pick their kernels by CPUID, and
under an emulator (``qemu-x86_64 -cpu Haswell``) /proc/cpuinfo still describes the host.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

from pncd.errors import PncdError

INFERENCE_PRECISIONS = ("auto", "f32", "f16", "bf16")

# Unit roundoff (half the spacing of floating-point numbers at 1) of each compute precision:
# f32 has 23 fraction bits, f16 10, bf16 7.
UNIT_ROUNDOFF = {"f32": 2.0**-24, "f16": 2.0**-11, "bf16": 2.0**-8}

# OpenVINO's OPTIMIZATION_CAPABILITIES entry that a compute precision needs on the CPU.
_CAPABILITY = {"f16": "FP16", "bf16": "BF16"}


@functools.lru_cache(maxsize=4)
def _cpuinfo_field(key: str) -> str | None:
    """The first processor's ``key`` line of /proc/cpuinfo (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    return frozenset((_cpuinfo_field("flags") or "").split())


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) ..."), or what platform knows."""
    return _cpuinfo_field("model name") or platform.processor() or "unknown CPU"


# /proc/cpuinfo flag -> NumPy's CPUID feature name, for the features that decide the kernels
_CPUID_NAME = {"avx2": "AVX2", "avx512f": "AVX512F", "avx512_vnni": "AVX512VNNI", "avx512_bf16": "AVX512BF16",
               "avx512_fp16": "AVX512FP16"}


@functools.lru_cache(maxsize=1)
def cpuid_features() -> frozenset[str] | None:
    """The x86 features CPUID reports to this process (NumPy's names: "AVX2", "AVX512VNNI", ...),
    or None where NumPy does not expose them (then /proc/cpuinfo is used)."""
    import importlib

    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # NumPy 2, NumPy 1
        try:
            features = importlib.import_module(module).__cpu_features__
        except (ImportError, AttributeError):
            continue
        return frozenset(name for name, present in features.items() if present)
    return None


def _has(flag: str) -> bool:
    """``flag`` (a /proc/cpuinfo name) as CPUID reports it where NumPy tells, else /proc/cpuinfo."""
    features = cpuid_features()
    if features is not None and flag in _CPUID_NAME:
        return _CPUID_NAME[flag] in features
    return flag in cpu_flags()


def has_vnni() -> bool:
    """INT8 dot-product instructions with 32-bit sums (AVX-512 VNNI; every AMX CPU has it too).

    AVX-VNNI alone (client CPUs without AVX-512) is not seen by CPUID through NumPy and counts as
    no VNNI: the safe side, an artifact made for VNNI is then refused there, never run wrongly."""
    features = cpuid_features()
    if features is not None:
        return "AVX512VNNI" in features
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def isa_summary() -> str:
    """One line naming the instruction sets that decide the runtimes' kernels."""
    # CPUID and /proc/cpuinfo disagree under an emulator; AMX is known from /proc/cpuinfo only
    emulated = cpuid_features() is not None and ("avx512f" in cpu_flags()) != _has("avx512f")
    names = [n for n, f in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("VNNI", None), ("BF16", "avx512_bf16"),
                            ("AVX-512 FP16", "avx512_fp16"), ("AMX", "amx_tile"))
             if (has_vnni() if f is None else _has(f) and not (emulated and f not in _CPUID_NAME))]
    return f"{cpu_model()}{' as emulated' if emulated else ''} ({', '.join(names) or 'no AVX2'})"


@functools.lru_cache(maxsize=8)
def openvino_capabilities(device: str = "CPU") -> tuple[str, ...]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of ``device`` (e.g. FP32, BF16, FP16, INT8)."""
    import openvino as ov

    try:
        return tuple(ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES"))
    except RuntimeError:
        return ()


def resolve_inference_precision(requested: str | None, artifact_precision: str | None, device: str = "CPU") -> str:
    """The ``INFERENCE_PRECISION_HINT`` pncd passes to OpenVINO for an artifact.

    ``auto`` (or None) means what the artifact's precision promises: f32 for fp32 and int8
    (the layers INT8 leaves in float are computed in f32), f16 for fp16 where the device
    computes in FP16, else f32 (the FP16 weights are then widened, which loses nothing).
    bf16 is never chosen automatically: it keeps 8 significant bits, fewer than FP16's 11.
    An explicit f16/bf16 that the device cannot compute is refused with one line.
    """
    requested = (requested or "auto").lower()
    if requested not in INFERENCE_PRECISIONS:
        raise PncdError(f"--inference-precision {requested!r} is unknown; use one of {', '.join(INFERENCE_PRECISIONS)}")
    base = device.split(".")[0].split(":")[0].upper()
    caps = openvino_capabilities(base) if base == "CPU" else ()
    if requested == "auto":
        if artifact_precision == "fp16" and (base != "CPU" or "FP16" in caps):
            return "f16"
        return "f32"
    need = _CAPABILITY.get(requested)
    if base == "CPU" and need and need not in caps:
        raise PncdError(f"--inference-precision {requested}: OpenVINO cannot compute in {requested} on this CPU "
                        f"({cpu_model()}; capabilities {', '.join(caps) or 'unknown'}); use f32 or auto")
    return requested


def compute_precision(runner: object, artifact_precision: str) -> str:
    """The precision a runner computes in, for the console, manifests and reports.

    OpenVINO reports its own (``INFERENCE_PRECISION_HINT`` of the compiled model, e.g. "f32",
    "bf16"); the other runtimes compute in the graph's precision ("f32", "f16 graph"). INT8 says
    which layers ran in INT8 and what the others computed in (:func:`pncd.targets.compute_label.int8_label`).
    """
    used = getattr(runner, "inference_precision", None)
    value = used() if callable(used) else None
    if artifact_precision == "int8":
        from pncd.targets.compute_label import int8_label

        return int8_label(runner, str(value or "f32"))
    if value:
        return str(value)
    return {"fp32": "f32", "fp16": "f16 graph"}.get(artifact_precision, artifact_precision)
