"""``pncd distill --teacher-runtime``: the frozen teacher through OpenVINO (real OpenVINO, no
mocks) gives the losses the tensors the torch teacher gives (float32, same shapes, to 1e-4
relative), and so the same loss terms; a tiny run works end to end through the command line,
and the runtime is recorded in config.json. ``openvino-int8`` (real NNCF): quantized, checked against
the float teacher, refused below --int8-agreement, recorded."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from tests.helpers import error_line, run_cli

pytest.importorskip("openvino")

# relative to the largest magnitude of each output; OpenVINO f32 agrees with torch to ~2e-6 (DCSAU-Net)
TOLERANCE = 1e-4
TINY = ["--size", "32", "--batch", "4", "--epochs", "1", "--steps-per-epoch", "2", "--log-every", "1"]


@pytest.fixture
def teacher_of(eval_net_with_bn_stats):
    """``make(name)``: (prepared teacher, its taps, their module names)."""
    from pncd.distill.teacher import prepare_teacher
    from pncd.models import FeatureTaps

    def make(name: str = "dcsaunet"):
        net = eval_net_with_bn_stats(name)
        teacher = prepare_teacher(net, "cpu")
        names = [net.taps["low"].module, net.taps["high"].module]
        return teacher, FeatureTaps(teacher, names), names

    return make


def test_openvino_teacher_equals_torch(teacher_of):
    """Logits and both tapped features, for a batch size other than the converted example's."""
    from pncd.distill.teacher_runtime import OpenVinoTeacher, TorchTeacher, build_runner, relative_error

    teacher, taps, names = teacher_of()
    notes: list[str] = []
    runner = build_runner("openvino", teacher, taps, names, channels=1, size=32, device="cpu", note=notes.append)
    assert isinstance(runner, OpenVinoTeacher) and runner.precision == "f32" and notes == []
    x = torch.randn(3, 1, 32, 32)
    got_logits, got_feats = runner(x)
    ref_logits, ref_feats = TorchTeacher(teacher, taps, names)(x)
    assert len(got_feats) == len(ref_feats) == 2
    for got, ref in [(got_logits, ref_logits), *zip(got_feats, ref_feats)]:
        assert got.shape == ref.shape and got.dtype == ref.dtype == torch.float32
        assert got.is_contiguous() and not got.is_inference() and not got.requires_grad
        assert relative_error(got, ref) <= TOLERANCE


def test_logits_only_and_auto(teacher_of):
    """No feature loss active: the logits alone; ``auto`` takes OpenVINO on a CPU."""
    from pncd.distill.teacher_runtime import OpenVinoTeacher, TorchTeacher, build_runner, relative_error

    teacher, _, _ = teacher_of("unet")
    runner = build_runner("auto", teacher, None, [], channels=1, size=32, device="cpu")
    assert isinstance(runner, OpenVinoTeacher)
    x = torch.randn(2, 1, 32, 32)
    (got, feats), (ref, _) = runner(x), TorchTeacher(teacher, None, [])(x)
    assert feats == [] and relative_error(got, ref) <= TOLERANCE


def test_off_the_cpu_auto_keeps_torch_and_openvino_refuses(teacher_of):
    from pncd.distill.teacher_runtime import TorchTeacher, build_runner
    from pncd.errors import PncdError

    teacher, taps, names = teacher_of("unet")
    notes: list[str] = []
    runner = build_runner("auto", teacher, taps, names, channels=1, size=32, device="cuda", note=notes.append)
    assert isinstance(runner, TorchTeacher) and len(notes) == 1 and "CPU only" in notes[0]
    with pytest.raises(PncdError, match="CPU only"):
        build_runner("openvino", teacher, taps, names, channels=1, size=32, device="cuda")
    assert isinstance(build_runner("torch", copy.deepcopy(teacher), None, [], 1, 32, "cpu"), TorchTeacher)


def _steps(run):
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["type"] == "step"]


def test_losses_are_the_same_through_either_runtime():
    """One distillation step's loss terms with the OpenVINO teacher equal the torch teacher's."""
    from pncd.distill.engine import PNCD, DistillOptions
    from pncd.losses import SegLoss
    from pncd.models import create

    teacher = create("unet")
    x = torch.randn(4, 1, 32, 32)
    y = torch.zeros(4, 32, 32, dtype=torch.long)
    y[:2, 8:20, 10:24] = 1
    terms = {}
    for runtime in ("openvino", "torch"):
        torch.manual_seed(1)
        student = create("enet")
        pncd = PNCD(student, teacher, DistillOptions(teacher_runtime=runtime), num_classes=2, channels=1, size=32,
                    n_region_samples=40)
        assert pncd.runner.name == runtime
        out = pncd(student.train(), x, y, SegLoss(2))
        out["loss"].backward()  # the teacher's tensors join the student's graph
        terms[runtime] = {k: float(v.detach()) for k, v in out.items()}
    assert terms["openvino"].keys() == terms["torch"].keys() >= {"pmd", "rmd", "rd", "pnscd", "loss"}
    for k, v in terms["torch"].items():
        assert terms["openvino"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), k


@pytest.mark.slow
def test_distill_cli_with_openvino_teacher(synthetic_root, tmp_path, user_teacher):
    """A tiny distillation through the CLI with the OpenVINO teacher; the runtime is recorded."""
    weights, env, taps = user_teacher
    base = ["distill", "--teacher", "user_teacher:build", "--teacher-weights", weights, "--student", "enet", "--data",
            synthetic_root, *taps, "--no-check-teacher", *TINY]
    out = tmp_path / "ov"
    p = run_cli(*base, "--out", out, "--teacher-runtime", "openvino", env=env)
    assert p.returncode == 0, p.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["options"]["teacher_runtime"] == cfg["distill"]["teacher_runtime"] == "openvino"
    assert (cfg["distill"]["teacher_runtime_used"], cfg["distill"]["teacher_runtime_precision"]) == ("openvino", "f32")
    steps = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["type"] == "step"]
    assert len(steps) == 2 and all(all(map(math.isfinite, (r["loss"], r["pnscd"], r["rd"]))) for r in steps)

    bad = run_cli(*base, "--out", tmp_path / "bad", "--teacher-runtime", "onnx", env=env)
    assert bad.returncode == 2 and "onnx" in error_line(bad)


def test_int8_teacher_is_quantized_checked_and_recorded(teacher_of):
    """openvino-int8: NNCF calibrates on the given slices and checks on others; the outputs are
    the INT8 model's (close to the float teacher's, not equal), and no random stream moves."""
    import numpy as np

    from pncd.distill.teacher_runtime import CALIBRATION_SLICES, OpenVinoTeacher, TorchTeacher, build_runner, relative_error, runtime_record

    teacher, taps, names = teacher_of("unet")
    images = np.random.RandomState(0).randn(150, 1, 32, 32).astype(np.float32)
    torch.manual_seed(123)
    np.random.seed(7)
    before = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    runner = build_runner("openvino-int8", teacher, taps, names, 1, 32, "cpu", calibration=images, min_agreement=0.0)
    assert torch.equal(torch.random.get_rng_state(), before[0]) and np.array_equal(np.random.get_state()[1], before[1])
    assert isinstance(runner, OpenVinoTeacher) and runner.name == "openvino-int8"
    rec = runtime_record(runner)
    q = rec["teacher_quantization"]
    assert rec["teacher_runtime_used"] == "openvino-int8" and rec["teacher_runtime_precision"].startswith("int8")
    assert q["calibration_slices"] == CALIBRATION_SLICES == q["check"]["check_slices"] and q["quantizer"] == "nncf.quantize"
    assert 0.5 < q["check"]["argmax_agreement"] <= 1.0
    x = torch.from_numpy(images[:3])
    (got, got_feats), (ref, ref_feats) = runner(x), TorchTeacher(teacher, taps, names)(x)
    assert len(got_feats) == len(ref_feats) == 2
    for g, r in [(got, ref), *zip(got_feats, ref_feats)]:
        assert g.shape == r.shape and g.dtype == torch.float32 and not g.requires_grad
    # quantized for real (f32 agrees to ~1e-6), yet near the float teacher
    assert 1e-4 < relative_error(got, ref) < 0.5 and q["check"]["logits_relative_error"] > 1e-4


def test_int8_teacher_refusals(teacher_of):
    import numpy as np

    from pncd.distill.teacher_runtime import build_runner
    from pncd.errors import PncdError

    teacher, taps, names = teacher_of("unet")
    images = np.random.RandomState(0).randn(40, 1, 32, 32).astype(np.float32)
    with pytest.raises(PncdError, match="needs training images"):
        build_runner("openvino-int8", teacher, taps, names, 1, 32, "cpu")
    with pytest.raises(PncdError, match=r"argmax agrees with the float teacher's on .* of 40 training slices.*needed\); "
                                        r"use --teacher-runtime torch or openvino$"):
        build_runner("openvino-int8", teacher, taps, names, 1, 32, "cpu", calibration=images, min_agreement=1.01)
    with pytest.raises(PncdError, match="CPU only.*use --teacher-runtime torch$"):  # f32 OpenVINO cannot run there either
        build_runner("openvino-int8", teacher, taps, names, 1, 32, "cuda", calibration=images)


def test_distill_cli_with_int8_teacher(synthetic_root, tmp_path, user_teacher):
    """A tiny distillation through the CLI with the INT8 teacher, calibrated on the run's own
    training slices; config.json records the quantization and its check. --int8-agreement 0:
    this teacher is untrained, its logits near ties (the refusal is tested above)."""
    weights, env, taps = user_teacher
    out = tmp_path / "ov8"
    p = run_cli("distill", "--teacher", "user_teacher:build", "--teacher-weights", weights, "--student", "enet", "--data",
                synthetic_root, *taps, "--no-check-teacher", *TINY, "--out", out, "--teacher-runtime", "openvino-int8",
                "--int8-agreement", "0", env=env)
    assert p.returncode == 0, p.stderr
    cfg = json.loads((out / "config.json").read_text())
    d = cfg["distill"]
    assert (d["teacher_runtime"], d["teacher_runtime_used"], d["int8_agreement"]) == ("openvino-int8", "openvino-int8", 0.0)
    q = d["teacher_quantization"]
    assert q["calibration_slices"] == 36 and q["check"]["check_slices"] == 36  # 6 train cases x 6 slices: all of them
    assert 0.0 <= q["check"]["argmax_agreement"] <= 1.0
    assert all(all(map(math.isfinite, (r["loss"], r["pnscd"], r["rd"]))) for r in _steps(out))
