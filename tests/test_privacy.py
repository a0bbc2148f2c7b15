"""Reports are shareable: no host name, no absolute path, and with ``--anonymize`` no case id
(patient id on real data) in report.json, report.md or the overlays' names and captions; every
bench report opens with its verdict."""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path

from pncd.privacy import case_alias, public, public_path, scrub_text
from tests.helpers import run_cli

ABSOLUTE = re.compile(r"(?<![\w.~:/…-])/(?:[A-Za-z0-9_.-]+/)+")  # an absolute path (not …/elided)


def test_public_drops_host_names_and_rewrites_paths(tmp_path):
    doc = {"machine": {"hostname": "ward-7-ws", "cpu_model": "AMD EPYC"}, "host": "jetson.local",
           "command": f"pncd bench {tmp_path}/exports/a --data '/srv/hospital data/lgg' --out=/srv/r",
           "data": {"root": "/srv/hospital/lgg-flair"}, "run": str(tmp_path / "runs" / "t"),
           "note": "units ms/it, see https://example.org/a/b"}
    out = public(doc, cwd=tmp_path)
    text = json.dumps(out)
    assert "ward-7-ws" not in text and "jetson.local" not in text and "hostname" not in text
    assert out["run"] == "runs/t" and out["data"]["root"] == "…/hospital/lgg-flair"
    assert not ABSOLUTE.search(out["command"]) and "exports/a" in out["command"] and str(tmp_path) not in out["command"]
    assert out["note"] == "units ms/it, see https://example.org/a/b"  # not a path: unchanged
    assert out["machine"]["cpu_model"] == "AMD EPYC"


def test_anonymize_is_stable_and_covers_keys_values_and_text():
    doc = {"per_case": {"enet": [{"case": "TCGA_CS_4941", "dice": 0.8}]}, "worst_case": "TCGA_CS_4941",
           "case_ids": ["TCGA_CS_4941", "TCGA_DU_5849"], "caption": "enet vs torch: TCGA_DU_5849, slice 12"}
    out = public(doc, anonymize=True)
    text = json.dumps(out)
    assert "TCGA" not in text
    alias = case_alias("TCGA_CS_4941")
    assert re.fullmatch(r"case-[0-9a-f]{10}", alias) and alias == case_alias("TCGA_CS_4941")
    assert out["worst_case"] == alias and out["per_case"]["enet"][0]["case"] == alias
    assert out["caption"] == f"enet vs torch: {case_alias('TCGA_DU_5849')}, slice 12"
    assert public(doc)["worst_case"] == "TCGA_CS_4941"  # without anonymize, ids stay


def test_public_path_and_scrub_text(tmp_path):
    assert public_path(tmp_path / "a" / "b.json", cwd=tmp_path) == "a/b.json"
    assert public_path("relative/x", cwd=tmp_path) == "relative/x"
    assert public_path("/x/y/z/w.nii.gz", cwd=tmp_path) == "…/z/w.nii.gz"
    assert scrub_text("read /data/lgg/TCGA_1.nii.gz, 3 ms / it", cwd=tmp_path) == "read …/lgg/TCGA_1.nii.gz, 3 ms / it"


def test_bench_report_is_shareable(ci_gate_exports, tmp_path):
    """A real bench (OpenVINO INT8 artifact and its torch reference, overlays on) run from a
    folder the artifact is not under, with absolute paths on its command line."""
    art = Path(ci_gate_exports["openvino:int8"]).resolve()
    out = (tmp_path / "report").resolve()
    p = run_cli("bench", art, "--iters", "5", "--warmup", "1", "--batch", "1", "--interleave-rounds", "2",
                "--threads", "1", "--overlays", "2", "--anonymize", "--out", out, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    report_json = (out / "report.json").read_text()
    report_md = (out / "report.md").read_text()
    host = platform.node()
    for text in (report_json, report_md):
        assert not ABSOLUTE.search(text), ABSOLUTE.search(text).group(0)
        assert str(art) not in text and os.getcwd() not in text and str(Path.home()) + "/" not in text
        if len(host) > 3:
            assert host not in text
    doc = json.loads(report_json)
    art_entry = next(e for e in doc["entries"] if e["kind"] == "artifact")
    ref_entry = next(e for e in doc["entries"] if e["kind"] == "reference")
    assert art_entry["async_throughput_ips"] > 0 and art_entry["async_requests"] >= 1  # OpenVINO's throughput mode
    assert ref_entry["async_throughput_ips"] is None and "img/s (async)" in report_md
    cases = {c["case"] for rows in doc["per_case"].values() for c in rows}
    assert cases and all(re.fullmatch(r"case-[0-9a-f]{10}", c) for c in cases)
    overlays = doc["files"]["overlays"]
    assert overlays and all(re.search(r"__case-[0-9a-f]{10}_s\d+\.png$", f) for f in overlays), overlays
    first = report_md.splitlines()[2]
    assert re.match(r"\*\*Verdict: (PASS|FAIL|NOT COMPARED)\*\*: \d+ of 1 artifacts", first), first
