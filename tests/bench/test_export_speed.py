"""bench/experiments/export_speed.py: every variant built with the export functions and timed interleaved."""

import json

import numpy as np
from click.testing import CliRunner

from tests.helpers import experiment

_speed = experiment("export_speed")
main, time_interleaved = _speed.main, _speed.time_interleaved


class _Counter:
    """A runner stand-in for the scheduling test only (no inference: it counts calls in order)."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def activate(self):
        pass

    def infer(self, feed):
        self.log.append(self.name)


def test_time_interleaved_round_robin():
    log = []
    feed = {"image": np.zeros((1, 1, 4, 4), np.float32)}
    out = time_interleaved({"a": _Counter("a", log), "b": _Counter("b", log)}, feed, warmup=1, iters=5, rounds=2)
    assert log[:2] == ["a", "b"]  # warm-up
    assert log[2:] == ["a"] * 3 + ["b"] * 3 + ["a"] * 2 + ["b"] * 2  # 5 calls each in two slices, alternating
    assert set(out) == {"a", "b"} and all(v["median_ms"] >= v["min_ms"] >= 0 for v in out.values())


def test_export_speed_runs_every_variant(tmp_path):
    out = tmp_path / "speed.json"
    res = CliRunner().invoke(main, ["--models", "enet", "--size", "32", "--iters", "3", "--warmup", "1",
                                    "--threads", "1", "--calib-size", "4", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["torch-fp32", "ort-fp32", "ort-fp16", "ort-int8", "ov-fp32", "ov-fp16", "ov-int8"]
    assert all(r["median_ms"] > 0 and r["speedup_vs_torch"] > 0 for r in rows)
    by = {r["variant"]: r for r in rows}
    assert by["torch-fp32"]["speedup_vs_torch"] == 1.0
    assert by["ov-fp32"]["argmax_agreement"] > 0.99 and by["ort-fp32"]["argmax_agreement"] > 0.99
