"""The distillation's training controls: defaults, warm-up, gradient clipping, per-term logging and
anomalies, the heads' own RNG stream, and the teacher check (tiny runs: 32x32, 1 epoch, 2-4 steps)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import error_line, run_cli

TINY = ["--size", "32", "--batch", "4", "--epochs", "1"]
TERMS = ("loss_seg", "seg_ce", "seg_dice", "pmd", "rmd", "rd", "pnscd", "loss")


@pytest.fixture(scope="module")
def teacher_run(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "enet"
    p = run_cli("train", "--model", "enet", "--data", synthetic_root, "--out", out, *TINY, "--steps-per-epoch", "2")
    assert p.returncode == 0, p.stderr
    return out


def _rows(run, kind):
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["type"] == kind]


def test_warmup_scale_ramps_linearly():
    from pncd.distill.engine import warmup_scale

    assert [warmup_scale(s, 20, 0.2) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert warmup_scale(0, 20, 0.0) == 1.0  # 0 disables
    assert warmup_scale(0, 3, 0.1) == 0.0 and warmup_scale(1, 3, 0.1) == 1.0  # at least one step


def test_new_defaults_log_every_term_and_warm_up(teacher_run, tmp_path):
    """Default run: EMKD's RMD, InfoNCE PNSCD with 256 region vectors per class, clipping at 5,
    10% warm-up (here --kd-warmup 0.5 over 4 steps); every term in every step row, mean and
    maximum of every term in the epoch row, the teacher's val Dice printed and saved."""
    out = tmp_path / "kd"
    p = run_cli("distill", "--teacher", teacher_run, "--student", "enet", "--out", out, *TINY, "--steps-per-epoch", "4",
                "--log-every", "1", "--kd-warmup", "0.5")
    assert p.returncode == 0, p.stderr
    assert "teacher val Dice" in p.stdout
    cfg = json.loads((out / "config.json").read_text())
    d = cfg["distill"]
    assert (d["rmd_variant"], d["pnscd_form"], d["pnscd_memory"], d["kd_warmup"]) == ("emkd", "infonce", None, 0.5)
    assert cfg["options"]["clip_grad_norm"] == 5.0 and cfg["options"]["log_every"] == 1
    teacher_dice = max(r["val_dice"] for r in _rows(teacher_run, "epoch"))
    assert cfg["teacher"]["check"]["val_dice"] == pytest.approx(teacher_dice, abs=1e-6)  # same data, same weights

    steps = _rows(out, "step")
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(set(TERMS) | {"grad_norm", "kd_scale", "lr"} <= r.keys() for r in steps)
    assert [r["kd_scale"] for r in steps] == [0.0, 0.5, 1.0, 1.0]
    assert steps[0]["loss"] == pytest.approx(steps[0]["loss_seg"])  # weights start at 0
    from pncd.commands.distill import DEFAULT_WEIGHTS

    kd = sum(w * steps[3][m] for m, w in DEFAULT_WEIGHTS.items())
    assert steps[3]["loss"] == pytest.approx(steps[3]["loss_seg"] + kd, rel=1e-5)
    epoch = _rows(out, "epoch")[0]
    for t in (*TERMS, "grad_norm"):
        assert epoch[t] == pytest.approx(sum(r[t] for r in steps) / 4, rel=1e-6)
        assert epoch[f"{t}_max"] == pytest.approx(max(r[t] for r in steps), rel=1e-6)
    state = torch.load(out / "last_state.pt", weights_only=True)["extra"]["losses"]
    t_channels = state["pnscd.embed_t.weight"].shape[1]
    assert tuple(state["pnscd.memory"].shape) == (2, 257, t_channels)  # region vectors, 256 per class + scratch


def test_old_behaviour_is_reachable(teacher_run, tmp_path):
    out = tmp_path / "old"
    p = run_cli("distill", "--teacher", teacher_run, "--student", "enet", "--out", out, *TINY, "--steps-per-epoch", "2",
                "--log-every", "1", "--pnscd-form", "crd", "--rmd-variant", "paper", "--kd-warmup", "0",
                "--clip-grad-norm", "0", "--no-check-teacher")
    assert p.returncode == 0, p.stderr
    assert "teacher val Dice" not in p.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["distill"]["pnscd_form"], cfg["distill"]["rmd_variant"], cfg["options"]["clip_grad_norm"]) == ("crd", "paper", 0.0)
    steps = _rows(out, "step")
    assert all(r["kd_scale"] == 1.0 and "grad_norm" not in r for r in steps)
    state = torch.load(out / "last_state.pt", weights_only=True)["extra"]["losses"]
    assert tuple(state["pnscd.memory"].shape) == (2, 4097, 128)  # the 4,096-slot embedding memory


def test_train_keeps_its_recipe_without_clipping(teacher_run):
    """``pncd train`` (the teacher fixture) defaults to no clipping: no grad_norm is computed."""
    cfg = json.loads((teacher_run / "config.json").read_text())
    assert cfg["options"]["clip_grad_norm"] == 0.0
    assert "grad_norm" not in _rows(teacher_run, "epoch")[0]


def _trainer(cls, root, tmp_path, name, *args, clip=0.0, steps=2):
    from pncd.data import DataSpec
    from pncd.models import create
    from pncd.runtime import seed_everything
    from pncd.training.run import TrainOptions

    spec = DataSpec(root=str(root), size=32)
    opts = TrainOptions(epochs=1, batch=4, steps_per_epoch=steps, device="cpu", seed=3, clip_grad_norm=clip, log_every=1, tensorboard=False)
    seed_everything(opts.seed)  # as the commands do before building the network
    return cls(create("enet"), *args, spec, opts, tmp_path / name)


def test_distillation_heads_leave_every_other_random_stream_alone(teacher_run, synthetic_root, tmp_path):
    """Built as the commands build them, a distillation trainer and a plain one of the same seed
    hold the same student weights, leave the global RNG in the same state (so dropout and
    augmentation match) and draw the same first batch, although building the PNSCD heads alone
    does draw from the global RNG."""
    from pncd.checkpoint import load_model
    from pncd.distill.engine import DistillOptions, DistillTrainer
    from pncd.distill.pnscd import PNSCDLoss
    from pncd.training.run import Trainer

    teacher, _ = load_model(teacher_run)
    got = []
    for cls, args in ((Trainer, ()), (DistillTrainer, (teacher, DistillOptions(), {}))):
        tr = _trainer(cls, synthetic_root, tmp_path, cls.__name__, *args)
        rng = torch.get_rng_state()
        images, masks = next(iter(tr.loader))
        got.append(({k: v.clone() for k, v in tr.raw_model.state_dict().items()}, rng, images, masks))
    (w_a, rng_a, img_a, m_a), (w_b, rng_b, img_b, m_b) = got
    assert w_a.keys() == w_b.keys() and all(torch.equal(w_a[k], w_b[k]) for k in w_a)
    assert torch.equal(rng_a, rng_b) and torch.equal(img_a, img_b) and torch.equal(m_a, m_b)
    before = torch.get_rng_state()
    PNSCDLoss(16, 16, 2)
    assert not torch.equal(before, torch.get_rng_state())  # so the equality above is the fork's doing


def test_distill_and_train_share_initial_weights_and_first_batch(teacher_run, synthetic_root, tmp_path):
    """The commands themselves: with lr 0 a one-step run keeps its initial weights, and the
    BatchNorm running statistics of that step record the first batch (through ENet's dropout),
    so equal checkpoints mean equal initial weights, first batch and dropout masks."""
    common = ["--data", synthetic_root, *TINY, "--steps-per-epoch", "1", "--lr", "0", "--min-lr", "0", "--seed", "5"]
    a, b, c = tmp_path / "alone", tmp_path / "kd", tmp_path / "alone-seed6"
    assert run_cli("train", "--model", "enet", "--out", a, *common).returncode == 0
    p = run_cli("distill", "--teacher", teacher_run, "--student", "enet", "--out", b, *common)
    assert p.returncode == 0, p.stderr
    assert run_cli("train", "--model", "enet", "--out", c, *common[:-1], "6").returncode == 0
    wa, wb, wc = (load_file(str(r / "last.safetensors")) for r in (a, b, c))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(k.endswith("running_mean") and not torch.equal(wa[k], wc[k]) for k in wa)  # the seed matters


class _ProbeTrainer:
    """A Trainer whose step dict has one more term, 1.0 except at chosen steps (a subclass
    through the documented extension point, ``compute_loss``)."""

    spikes: dict[int, float] = {}

    def compute_loss(self, images, masks):
        parts = super().compute_loss(images, masks)
        parts["probe"] = torch.tensor(self.spikes.get(self.global_step, 1.0))
        return parts


def test_anomalies_reported_with_their_step(synthetic_root, tmp_path, capsys):
    from pncd.training.run import Trainer

    cls = type("Probe", (_ProbeTrainer, Trainer), {"spikes": {6: 50.0, 7: float("nan")}})
    tr = _trainer(cls, synthetic_root, tmp_path, "probe", steps=8)
    tr.fit()
    anomalies = _rows(tmp_path / "probe", "anomaly")
    assert [(r["step"], r["term"]) for r in anomalies] == [(7, "probe"), (8, "probe")]
    assert anomalies[0]["value"] == 50.0 and anomalies[0]["running_mean"] == pytest.approx(1.0)
    assert anomalies[1]["value"] == "nan"
    out = capsys.readouterr().out
    assert "step 7 (epoch 1): probe = 50" in out and "step 8 (epoch 1): probe = nan (non-finite)" in out
    epoch = _rows(tmp_path / "probe", "epoch")[0]
    assert epoch["probe_max"] == 50.0 and epoch["probe"] == pytest.approx((6 + 50) / 7)  # NaN left out


def test_term_monitor_needs_history_before_calling_a_spike():
    from pncd.training.run import TermMonitor

    m = TermMonitor()
    assert m.update({"x": 100.0}) == [] and m.update({"x": 0.0}) == []  # too early to judge
    for _ in range(5):
        m.update({"x": 1.0})
    (term, value, mean), = m.update({"x": 1000.0})
    assert term == "x" and value == 1000.0 and 0 < 10 * mean < 1000
    assert m.update({"x": float("inf")}) == [("x", float("inf"), None)]
    for _ in range(6):
        assert m.update({"y": 0.0}) == []
    assert m.update({"y": 1.0}) == []  # a term that has been 0 is not called exploding


def test_clip_grad_norm_bounds_the_step_gradient(synthetic_root, tmp_path):
    """In the shared Trainer: after a step with --clip-grad-norm 1e-3 the gradients the optimizer
    used have a total norm of 1e-3; the logged grad_norm is the norm before clipping."""
    from pncd.training.run import Trainer

    tr = _trainer(Trainer, synthetic_root, tmp_path, "clip", clip=1e-3)
    tr.fit()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in tr._clip_params if p.grad is not None]))
    assert float(norm) == pytest.approx(1e-3, rel=1e-3)
    steps = _rows(tmp_path / "clip", "step")
    assert len(steps) == 2 and all(r["grad_norm"] > 1e-2 for r in steps)


def test_teacher_check_warns_and_strict_refuses(teacher_run, tmp_path):
    better = tmp_path / "student-alone"
    better.mkdir()
    (better / "log.jsonl").write_text(json.dumps({"type": "epoch", "epoch": 0, "val_dice": 0.98}) + "\n")
    args = ["distill", "--teacher", teacher_run, "--student", "enet", *TINY, "--steps-per-epoch", "1"]
    p = run_cli(*args, "--out", tmp_path / "strict", "--student-reference", better, "--strict")
    assert p.returncode != 0 and "below the student alone's 0.9800" in error_line(p)
    assert not (tmp_path / "strict").exists()
    p = run_cli(*args, "--out", tmp_path / "warn", "--student-reference", better)
    assert p.returncode == 0, p.stderr
    assert "does not beat the student alone (0.9800)" in p.stderr
    p = run_cli(*args, "--out", tmp_path / "no-ref", "--strict")
    assert p.returncode != 0 and "--student-reference" in error_line(p)


@pytest.mark.slow
def test_run_with_an_older_config_resumes_as_it_began(teacher_run, tmp_path):
    """A distillation run whose config.json predates --pnscd-form (crd memory in its state)
    resumes with the crd form, no warm-up and no clipping unless flags say otherwise."""
    out = tmp_path / "old-run"
    p = run_cli("distill", "--teacher", teacher_run, "--student", "enet", "--out", out, *TINY, "--steps-per-epoch", "1",
                "--pnscd-form", "crd", "--kd-warmup", "0", "--clip-grad-norm", "0", "--rmd-variant", "paper", "--no-check-teacher")
    assert p.returncode == 0, p.stderr
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("pnscd_form", "pnscd_memory", "kd_warmup"):  # as a run recorded without these options
        cfg["distill"].pop(key)
        cfg["options"].pop(key, None)
    for key in ("clip_grad_norm", "log_every", "student_reference", "strict", "check_teacher"):
        cfg["options"].pop(key, None)
    cfg_path.write_text(json.dumps(cfg))
    p = run_cli("distill", "--teacher", teacher_run, "--student", "enet", "--out", out, "--epochs", "2", "--resume")
    assert p.returncode == 0, p.stderr
    cfg = json.loads(cfg_path.read_text())
    assert (cfg["distill"]["pnscd_form"], cfg["distill"]["kd_warmup"], cfg["options"]["clip_grad_norm"]) == ("crd", 0.0, 0.0)
    assert [r["epoch"] for r in _rows(out, "epoch")] == [0, 1]
