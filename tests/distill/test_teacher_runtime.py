"""``pncd distill --teacher-runtime``: the frozen teacher through OpenVINO (real OpenVINO, no
mocks) gives the losses the tensors the torch teacher gives (float32, same shapes, to 1e-4
relative), and so the same loss terms; a tiny run works end to end through the command line,
and the runtime is recorded in config.json."""

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
