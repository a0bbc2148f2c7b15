"""``pncd models``: the table and the JSON list of registered networks."""

from __future__ import annotations

import json

from click.testing import CliRunner

from pncd import models
from pncd.cli import cli


def test_json_lists_students_with_counts_and_taps() -> None:
    result = CliRunner().invoke(cli, ["models", "--role", "student", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert set(rows) == set(models.list_models("student"))
    enet = rows["enet"]
    assert enet["role"] == "student"
    assert enet["parameters"] == models.count_parameters(models.create("enet", in_channels=1, num_classes=2))
    assert enet["taps"]["high"] == {"module": "stage3", "channels": 128, "stride": 8}


def test_table_has_one_row_per_model() -> None:
    result = CliRunner().invoke(cli, ["models", "--role", "student"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:2] == ["name", "role"]
    names = [ln.split()[0] for ln in lines[2:]]
    assert names == models.list_models("student")
    assert "backbone.layer4 (512 ch, /8)" in result.output


def test_counts_follow_channels_and_classes() -> None:
    args = ["models", "--role", "student", "--json", "--channels", "3", "--classes", "4"]
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(cli, args).output)}
    assert rows["resnet18"]["parameters"] == models.count_parameters(models.create("resnet18", in_channels=3, num_classes=4))


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(cli, ["models", "--help"])
    assert result.exit_code == 0
    assert "pncd models --json" in result.output
