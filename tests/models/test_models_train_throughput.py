"""bench/experiments/train_throughput.py: a tiny real run (ENet, 32 x 32, one step) writes its table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import experiment

main = experiment("train_throughput").main


def test_tiny_run_prints_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tput.json"
    rc = main(["--models", "enet", "--size", "32", "--batch", "2", "--steps", "1", "--warmup", "0", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "images/s" in printed and "enet" in printed
    report = json.loads(out.read_text())
    assert report["size"] == 32 and report["batch"] == 2
    (row,) = report["results"]
    assert row["model"] == "enet" and row["images_per_s"] > 0 and row["parameters"] > 300_000
    assert "torch" in report["versions"]


def test_unknown_model_fails_before_timing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--models", "nope", "--size", "32"]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err
