"""pncd.bench.pipeline.run with a stand-in Site: entries, references, comparison and files,
without any runtime (the real runtimes: test_bench_e2e.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pncd.bench.artifact import Artifact
from pncd.bench.options import BenchOptions
from pncd.bench.pipeline import run
from pncd.privacy import public
from pncd.bench.report import latency_fields
from pncd.bench.sites import NO_POWER, Measured


class FakeSite:
    """Times nothing: references predict the ground truth, artifacts lose the lesion of one slice."""

    device = "fake"
    latency_what = "end-to-end: made up"
    env = {"device_model": "fake-device"}

    def __init__(self, masks):
        self.masks, self.measured, self.checked = masks, [], []

    def check(self, artifact):
        self.checked.append(artifact.dir.name)

    def _measured(self, preds, where):
        fields = {**latency_fields(None), "latency_ms_median": 1.0, "first_inference_ms": 2.0, "activation_s": 0.1,
                  "mem_rss_peak_growth_mib": None, "mem_rss_delta_mib": None}
        return Measured(fields=fields, preds=preds, settings={"runner": "Fake"}, where=where,
                        info={"compute_precision": "f32", "backend": "fake", **NO_POWER})

    def reference(self, artifact, images, ident):
        self.measured.append(ident)
        return "cpu", self._measured(self.masks.astype(np.uint8), "host")

    def measure(self, artifact, images, ident):
        self.measured.append(ident)
        preds = self.masks.astype(np.uint8)
        worst = int(np.argmax(self.masks.reshape(len(preds), -1).sum(axis=1)))
        preds[worst] = 0
        return self._measured(preds, "fake-device")


def _artifact(tmp_path: Path, name: str, data: dict, run: Path) -> Artifact:
    return Artifact(dir=tmp_path / name, manifest={}, target="onnxruntime", precision=name.split("-")[-1],
                    runtime="onnxruntime", model="enet", source_run=run, input_name="input", output_name="logits",
                    data=data, onnx=None, static_batch=None)


@pytest.fixture()
def two_artifacts(tmp_path, synthetic_root):
    run_dir = tmp_path / "runs" / "enet-pncd"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")  # the reference's run exists (the fake site never loads it)
    data = {"root": str(synthetic_root), "size": 64}
    return [_artifact(tmp_path, "exp-fp32", data, run_dir), _artifact(tmp_path, "exp-int8", data, run_dir)]


def test_run_with_a_site_measures_one_reference_per_run(two_artifacts, tmp_path):
    from pncd.data import DataSpec, load_split

    masks = load_split(DataSpec(root=two_artifacts[0].data["root"], size=64), "test").masks
    site = FakeSite(masks)
    out = tmp_path / "report"
    rep = run(two_artifacts, BenchOptions(out=out, verify=False, overlays=2, n_boot=200, progress=False),
              log=lambda m: None, command="test", site=site)
    ids = [e["id"] for e in rep.entries]
    assert ids == ["enet-pncd-torch-fp32", "enet-pncd-onnxruntime-fp32", "enet-pncd-onnxruntime-int8"]
    assert site.measured == ids and site.checked == ["exp-fp32", "exp-int8"]
    ref, art, _ = rep.entries
    assert ref["kind"] == "reference" and ref["device"] == "cpu" and ref["where"] == "host" and ref["dice"] == 1.0
    assert art["ref_id"] == ref["id"] and art["device"] == "cpu" and art["where"] == "fake-device"
    assert art["latency_what"] == "end-to-end: made up" and art["backend"] == "fake"
    assert art["dice"] < 1.0 and art["dice_diff"] == pytest.approx(art["dice"] - 1.0) and art["n_slices_differ"] == 1
    assert rep.device_machine["device_model"] == "fake-device" and "hostname" not in rep.device_machine and rep.path == out
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(public(rep.to_json()))) and "path" not in on_disk  # as shared: no host, no absolute path
    assert len(rep.files["overlays"]) == 2 and all((out / f).is_file() for f in rep.files["overlays"])
    assert (out / "report.md").read_text().startswith("# pncd bench report")


def test_a_missing_source_run_is_refused_before_anything_is_written(two_artifacts, tmp_path):
    from pncd.errors import PncdError

    (two_artifacts[0].source_run / "config.json").unlink()
    with pytest.raises(PncdError, match="restore the run or pass --no-reference"):
        run(two_artifacts, BenchOptions(out=tmp_path / "r", verify=False), log=lambda m: None, site=FakeSite(None))
    assert not (tmp_path / "r").exists()
