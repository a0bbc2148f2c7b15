"""The project's own accuracy gate: a short seeded pipeline on the synthetic phantoms.

train (U-Net teacher) -> distil (Attention U-Net student, PNCD) -> export (ORT INT8, OpenVINO FP32 and INT8) ->
bench -> gate against ``bench/baselines/ci-synthetic.json``, committed in the repository.

Why it does not flake: every stage is seeded and runs single-threaded on the CPU, where the
training loop is bit-reproducible (``tests/test_train.py`` checks that two runs, one of them
killed and resumed, end with identical weights), calibration takes fixed images, and the
bench reads the whole test split. On the machine that wrote the baseline the Dice values are
reproduced exactly; across CPUs, oneDNN / OpenVINO may pick other kernels (AVX2 vs AVX-512),
which moves logits by ~1e-6 and flips a handful of boundary pixels: far inside the gate's
tolerance of 0.005 absolute Dice. A real regression (a broken preprocessing step, a wrong
calibration, a perturbed weight) moves Dice by more than that: ``tests/bench`` shows the gate
failing a perturbed model.

The student is a small U-shaped network rather than ENet: ENet at 64x64 reaches a Dice of
only ~0.06 in 80 steps, and on such a model INT8 and FP16 noise flip a large share of its few
foreground pixels, so the gate would measure noise. FP16 is not in this pipeline for the same
reason (a briefly trained model has many pixels near the decision boundary and fails the 99.9%
argmax-agreement check at export time, as that check should); ``tests/export`` covers FP16 on
every model.

Regenerate the baseline on purpose with::

    PNCD_UPDATE_BASELINE=1 python -m pytest tests/test_pipeline_gate.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BASELINE = Path(__file__).resolve().parents[1] / "bench" / "baselines" / "ci-synthetic.json"
# The 99% MLPerf quality target (the gate's default) is for trained models; this 80-step model
# keeps 84-85% of its FP32 Dice in INT8 (measured when the baseline was written), so here the
# reference rule only catches a collapse, and the baseline rules (Dice drop <= 0.005 absolute,
# VOE, RVD against the committed values) catch regressions.
MIN_REF_RATIO = 0.75


def ci_recipe():
    from pncd.distill.options import DistillOptions
    from pncd.pipeline import DemoRecipe

    # the distillation options spelled out: the CI recipe must not follow distill's defaults
    distill = DistillOptions(rmd_variant="emkd", weights={"pmd": 0.1, "rmd": 0.9, "rd": 0.9, "pnscd": 0.9})
    return DemoRecipe(teacher="unet", student="attention_unet", size=64, batch=8, teacher_epochs=4, student_epochs=4, steps_per_epoch=20,
                      teacher_lr=1e-3, student_lr=1e-3,
                      exports=("onnxruntime:int8", "openvino:fp32", "openvino:int8"), calib_size=32, bench_iters=10, n_boot=200,
                      distill=distill)


@pytest.mark.timeout(1500)
def test_seeded_pipeline_passes_committed_gate(tmp_path):
    from pncd.bench.gate import run_gate
    from pncd.pipeline import run_pipeline

    messages: list[str] = []
    result = run_pipeline(ci_recipe(), tmp_path / "ci", baseline=None, echo=messages.append)
    assert not result["export_failures"], result["export_failures"]
    report = result["report"] / "report.json"
    assert report.is_file() and (result["report"] / "report.md").is_file()
    if os.environ.get("PNCD_UPDATE_BASELINE"):
        from pncd.bench.gate import gate_command

        gate_command.main(args=[str(report), "--baseline", str(BASELINE), "--update-baseline"], standalone_mode=False)
    ok, rows = run_gate(report, BASELINE, require_all=True, min_ref_ratio=MIN_REF_RATIO)
    failed = [r for r in rows if r["status"] == "fail"]
    assert ok, failed
    checked = {r["rule"] for r in rows if r["status"] == "pass"}
    assert {"ref_ratio", "dice_drop"} <= checked, rows
    # the student segments something: a gate on an all-background model would be vacuous
    from pncd.io import read_json

    entries = read_json(report)["entries"]
    assert all(e["dice"] is not None and e["dice"] > 0.15 for e in entries), [(e["key"], e["dice"]) for e in entries]
