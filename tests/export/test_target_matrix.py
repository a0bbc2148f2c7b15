"""Every registered network x every local target x fp32/fp16/int8, on the real runtimes.

One base tester (:class:`TargetTester`) runs the export code the CLI runs (``build_target``)
on each network's FP32 ONNX (exported once per session at 32 x 32, or the network's own size
multiple; see conftest.py), then runs the artifact on its runtime (ONNX Runtime, OpenVINO on
CPU; for TensorRT, its symmetric INT8 QDQ ONNX on ONNX Runtime, as TensorRT cannot be
installed here; its FP32/FP16 ONNX are the same files as ONNX Runtime's) against torch logits
on held-out images:

- FP32 must pass the export-time rule (argmax agreement >= 99.99%), or flip only pixels where the
  untrained network's two logits are nearly tied, and stay close in logits.
- FP16 is compared with the FP32 graph carrying the *same FP16-rounded weights* (run on ONNX
  Runtime in FP32) and must pass the FP16 rule (>= 99.9%) against it. With untrained weights
  many pixels are near ties between the two classes, and rounding the weights alone (no FP16
  arithmetic at all) already flips up to ~1% of them for some networks (measured against FP32
  torch: RA-UNet 99.19%, FANet 99.3-99.5%, ENet 99.4%, PSPNet 99.76%, DCSAU-Net 88-94%; the
  same for ONNX Runtime FP16 and OpenVINO's FP16 weights). The rounded-weights reference tests
  the conversion and the runtime rather than the untrained network's conditioning; the
  agreement with FP32 torch is printed and recorded.
  The export-time rule itself (against FP32 torch) is tested on a trained run in
  test_export_cli.py and test_export_errors.py.
- INT8 (calibrated on 8 training images, untrained weights) is held to a loose logit bound;
  its numbers are printed (``-s``) and attached to the report (``record_property``).

Students run by default; teachers (bigger, slower to export and quantize) with ``-m slow``.
"""

from __future__ import annotations

import json

import pytest

from pncd import models
from pncd.export import parity
from pncd.targets.onnx_export import INPUT_NAME, OUTPUT_NAME
from pncd.export.pipeline import ExportOptions, build_target
from pncd.targets.cpu import UNIT_ROUNDOFF, compute_precision, isa_summary

NETWORKS = [n for n in models.list_models() if models.model_info(n)["role"] in ("student", "teacher")]
PARAMS = [pytest.param(n, marks=pytest.mark.slow) if models.model_info(n)["role"] == "teacher" else n
          for n in NETWORKS]

# Untrained weights leave pixels whose two class logits are nearly equal (RA-UNet on ONNX Runtime:
# 99.984% agreement, max |diff| 5e-5 on logits of ~1.7; DCSAU-Net on OpenVINO: 99.98%, max |diff|
# 0.14 on logits of ~330): a rounding difference far below any trained margin flips them. Below the
# 99.99% rule, every flipped pixel must be such a tie: torch's margin between its top two logits no
# larger than TIE_FACTOR times the largest logit difference measured.
TIE_FACTOR = 2.0


def flips_beyond_ties(ref, logits) -> int:
    """Pixels whose argmax differs from torch's although torch's top-two margin exceeds
    ``TIE_FACTOR`` x the max |logit difference|."""
    import numpy as np

    top2 = np.sort(ref, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    flipped = logits.argmax(1) != ref.argmax(1)
    return int((flipped & (margin > TIE_FACTOR * float(np.abs(logits - ref).max()))).sum())

# Untrained networks whose argmax still moves under FP16 arithmetic and FP16 weights beyond the
# rounded-weights reference (measured agreement with it on ONNX Runtime / OpenVINO):
FP16_ILL_CONDITIONED = {
    "enet": "max-unpooling keeps each 2x2 window's argmax position; near-equal activations swap it "
            "(99.84% / 99.82%)",
    "fanet": "the feedback pass feeds the first pass's soft mask back in, doubling the depth (99.41% / 99.50%)",
    "dcsaunet": "untrained DCSAU-Net amplifies rounding layer by layer (97.8% / 89.6%)",
}

# Mean |logit difference| bound, as a fraction of the logit range, for a graph computed in a given
# precision: ERROR_GROWTH unit roundoffs, and never below FLOOR. Rounding errors of the layers add
# up roughly as a random walk; measured on the untrained students at 32 x 32, OpenVINO bf16 reached
# 6.3 u (MobileNetV2: 0.089 of a 3.6 range, u = 2^-8), so 16 u leaves a factor 2.5. FLOOR is the
# bound this test has always had for FP16 artifacts: even computed in f32, a max-unpooling network
# (ENet) swaps near-tied pooling positions, which moves its logits by 0.0028 of the range on
# average (measured here, OpenVINO f32), far above what the f32 format alone would (MobileNetV2
# and ResNet-18: 1e-6 of the range).
ERROR_GROWTH = 16
FLOOR = 1e-2


def mean_diff_bound(compute: str) -> float:
    """Allowed mean |logit difference| / logit range for ``compute`` ("f32", "f16", "bf16", ...)."""
    key = "f16" if compute.startswith("f16") else compute
    return max(FLOOR, ERROR_GROWTH * UNIT_ROUNDOFF.get(key, UNIT_ROUNDOFF["f32"]))


# INT8 bound for untrained weights: the mean |logit difference| stays below this fraction of
# the logit range (a broken graph, wrong scales or a layout error give differences of the
# order of the range itself).
INT8_MEAN_DIFF_FRACTION = 0.25


class TargetTester:
    """Base tester: subclasses set ``target`` and the precisions whose files are their own."""

    target: str = ""

    def run(self, exported, images_at, tmp_path, name: str, precision: str,
            inference_precision: str = "auto") -> tuple[list[dict], dict]:
        ex = exported(name)
        held, calib = images_at(ex.size)
        out = tmp_path / "artifact"
        out.mkdir()
        opts = ExportOptions(target=self.target, precision=precision, out=str(out), calib_size=8,
                             inference_precision=inference_precision)
        built = build_target(opts, ex.onnx, out, calib if precision == "int8" else None, held, 2)
        assert (out / built.artifact).is_file()
        ref = ex.ref_fp16_weights if precision == "fp16" else ex.ref
        results = []
        for label, runner in built.parity_runners:
            try:
                logits = parity.runner_logits(runner, INPUT_NAME, OUTPUT_NAME, held.images)
                compute = compute_precision(runner, precision)
            finally:
                runner.deactivate()
            assert logits.shape == ex.ref.shape
            res = parity.compare(ref, logits, held.masks, held.case_ids, 2)
            res["runtime"] = label
            res["compute"] = compute
            res["agreement_with_fp32_torch"] = float((logits.argmax(1) == ex.ref.argmax(1)).mean())
            res["flips_beyond_ties"] = flips_beyond_ties(ref, logits)
            results.append(res)
        return results, built

    def report(self, record_property, precision: str, name: str, res: dict) -> dict:
        keys = ("runtime", "max_abs_logit_diff", "mean_abs_logit_diff", "logit_scale", "argmax_agreement",
                "agreement_with_fp32_torch")
        brief = {k: (round(res[k], 6) if isinstance(res[k], float) else res[k]) for k in keys}
        record_property(f"{self.target}-{precision}-{name}", json.dumps(brief))
        print(f"\n{self.target} {precision} {name}: {brief}")
        return brief


class FloatTests:
    """FP32 and FP16: both ONNX Runtime and OpenVINO write their own files for these."""

    @pytest.mark.parametrize("name", PARAMS)
    def test_fp32(self, exported, images_at, tmp_path, name, record_property):
        results, _ = self.run(exported, images_at, tmp_path, name, "fp32")
        for res in results:
            brief = self.report(record_property, "fp32", name, res)
            if res["argmax_agreement"] < parity.MIN_AGREEMENT["fp32"]:
                assert res["flips_beyond_ties"] == 0, brief  # only near-tied pixels of the untrained net flip
            else:
                parity.check("fp32", res)  # raises below 99.99% agreement
            assert res["max_abs_logit_diff"] <= 1e-3 * max(1.0, res["logit_scale"]), brief

    @pytest.mark.parametrize("name", PARAMS)
    def test_fp16(self, exported, images_at, tmp_path, name, record_property):
        """The FP16 artifact with the default (auto) compute precision: f32 on CPUs without FP16
        arithmetic (AVX2, AVX-512 with BF16 only), f16 where the CPU has it (AVX-512 FP16)."""
        results, built = self.run(exported, images_at, tmp_path, name, "fp16")
        for res in results:
            brief = self.report(record_property, "fp16", name, res)
            used = res["compute"]
            print(f"{self.target} fp16 {name}: computed in {used} on {isa_summary()}")
            if name in FP16_ILL_CONDITIONED and res["argmax_agreement"] < parity.MIN_AGREEMENT["fp16"]:
                pytest.xfail(f"untrained {name}: {FP16_ILL_CONDITIONED[name]}; measured {brief}")
            parity.check("fp16", res)  # >= 99.9% agreement with the FP16-weight reference
            assert res["mean_abs_logit_diff"] <= mean_diff_bound(used) * max(1.0, res["logit_scale"]), brief

class Int8Tests:
    @pytest.mark.parametrize("name", PARAMS)
    def test_int8(self, exported, images_at, tmp_path, name, record_property):
        results, built = self.run(exported, images_at, tmp_path, name, "int8")
        from pncd.export.calibration import calibration_record

        assert built.calibration_method  # the backend's name for its calibration, recorded in the manifest
        calib = calibration_record(images_at(exported(name).size)[1], "minmax", built.calibration_method)
        assert calib["count"] == 8 and calib["split"] == "train"
        ref = exported(name).ref
        for res in results:
            brief = self.report(record_property, "int8", name, res)
            assert res["finite"]
            assert res["mean_abs_logit_diff"] <= INT8_MEAN_DIFF_FRACTION * float(ref.max() - ref.min()), brief


class TestOnnxRuntime(TargetTester, FloatTests, Int8Tests):
    target = "onnxruntime"


# OpenVINO's INT8 (NNCF with bias correction) of ENet and MobileNetV2 takes a minute or more each: the
# second tier (ENet's OpenVINO INT8 export also runs in the first, from the CI gate's checkpoint)
OV_INT8_PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n in ("enet", "mobilenetv2") else n for n in PARAMS]


class TestOpenVino(TargetTester, FloatTests, Int8Tests):
    target = "openvino"

    @pytest.mark.parametrize("name", OV_INT8_PARAMS)
    def test_int8(self, exported, images_at, tmp_path, name, record_property):
        Int8Tests.test_int8(self, exported, images_at, tmp_path, name, record_property)

    @pytest.mark.parametrize("name", [n for n in PARAMS if isinstance(n, str)])
    def test_bf16_only_when_asked(self, exported, images_at, tmp_path, name, record_property):
        """bf16 is a choice, never the default. Where OpenVINO's CPU plugin can compute in bf16
        (AVX-512 BF16 or AMX), asking for it is honoured, reported, and stays within bf16's
        rounding bound; where it cannot (AVX2-only CPUs), asking for it is refused in one line."""
        from pncd.errors import PncdError
        from pncd.targets.cpu import openvino_capabilities

        if "BF16" not in openvino_capabilities("CPU"):
            with pytest.raises(PncdError, match="cannot compute in bf16 on this CPU"):
                self.run(exported, images_at, tmp_path, name, "fp16", inference_precision="bf16")
            return
        results, _ = self.run(exported, images_at, tmp_path, name, "fp16", inference_precision="bf16")
        for res in results:
            brief = self.report(record_property, "fp16-bf16", name, res)
            assert res["compute"] == "bf16", brief
            assert res["mean_abs_logit_diff"] <= mean_diff_bound("bf16") * max(1.0, res["logit_scale"]), brief


class TestTensorRtOnnx(TargetTester, Int8Tests):
    """TensorRT's INT8 ONNX (symmetric QInt8 QDQ) on ONNX Runtime; its FP32/FP16 files are ORT's."""

    target = "tensorrt"

    def test_fp32_and_fp16_files_equal_onnxruntime(self, exported, images_at, tmp_path):
        ex = exported("mobilenetv2")
        held, _ = images_at(ex.size)
        for precision in ("fp32", "fp16"):
            files = []
            for target in ("tensorrt", "onnxruntime"):
                out = tmp_path / f"{target}-{precision}"
                out.mkdir()
                built = build_target(ExportOptions(target, precision, str(out)), ex.onnx, out, None, held, 2)
                files.append((out / built.artifact).read_bytes())
            assert files[0] and files[0] == files[1], precision
