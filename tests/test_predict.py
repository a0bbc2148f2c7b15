"""``pncd predict``: masks from a run or an exported artifact, for NIfTI volumes and 2-D images,
preprocessed as ``pncd eval`` reads a data set. Real files, real ONNX Runtime and OpenVINO
sessions, the real CLI in a subprocess (exit codes, one-line errors).

The model is the committed CI checkpoint (``bench/results/ci-gate/enet-pncd``: ENet trained on
the synthetic phantoms at 64 x 64), so nothing is trained here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CI_GATE_RUN
from tests.helpers import error_line, run_cli

LGG = Path(os.environ.get("PNCD_LGG", "/work/shared/data/lgg-flair"))
LGG_TEST = ("TCGA_CS_4943_20000902", "TCGA_HT_7686_19950629", "TCGA_HT_7874_19950902")
LGG_OTHER = {"train": ["TCGA_CS_4944_20010208"], "val": ["TCGA_CS_5395_19981004"]}


def _nifti(path: Path):
    import nibabel as nib

    img = nib.load(str(path))
    return img, np.asarray(img.dataobj)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Two phantom volumes at 96 x 96 (one with a scaled, shifted affine, NIfTI-1 .nii) and a
    folder of 2-D images: gray 100 x 72, RGB 80 x 120 (PNG) and a gray TIFF."""
    import nibabel as nib
    from PIL import Image

    from pncd.data.synthetic import generate

    root = generate(tmp_path_factory.mktemp("phantoms") / "data", n_cases=2, n_slices=5, size=96, seed=3)
    d = tmp_path_factory.mktemp("inputs")
    vols = sorted((root / "images").glob("*.nii.gz"))
    shutil.copy(vols[0], d / "vol_a.nii.gz")
    src = nib.load(str(vols[1]))
    affine = np.array([[0.8, 0, 0, -40.0], [0, 0.9, 0, 12.5], [0, 0, 3.0, 7.0], [0, 0, 0, 1]])
    moved = nib.Nifti1Image(np.asarray(src.dataobj).astype(np.int16), affine)
    moved.header.set_xyzt_units("mm", "sec")
    moved.header.set_qform(affine, code=1)
    nib.save(moved, str(d / "vol_b.nii"))
    vol = np.asarray(src.dataobj).astype(np.float32)
    sl = (255 * (vol[:, :, 2].T - vol.min()) / (np.ptp(vol) or 1)).astype(np.uint8)  # slice 2 as stored, (rows, cols)
    (d / "pics").mkdir()
    Image.fromarray(sl).resize((72, 100), Image.BILINEAR).save(d / "pics" / "gray.png")
    Image.fromarray(sl).convert("RGB").resize((120, 80), Image.BILINEAR).save(d / "pics" / "colour.png")
    Image.fromarray(sl).save(d / "pics" / "page.tif")
    (d / "pics" / "notes.txt").write_text("not an image: a folder's other files are left alone\n")
    return d


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """The CI checkpoint exported for ONNX Runtime and OpenVINO, FP32."""
    from pncd.export.pipeline import ExportOptions, export_run

    out = tmp_path_factory.mktemp("exports")
    dirs = {}
    for target in ("onnxruntime", "openvino"):
        dirs[target] = out / f"enet-{target}-fp32"
        export_run(CI_GATE_RUN, ExportOptions(target=target, precision="fp32", out=str(dirs[target]),
                                              dynamic_batch=target == "onnxruntime"), log=lambda _m: None)
    return dirs


def _predict(model: Path, args: list, out: Path, *extra: str) -> dict:
    proc = run_cli("predict", model, *args, "--out", out, "--threads", "1", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "predictions.json").read_text())


@pytest.fixture(scope="module")
def torch_masks(inputs, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("torch") / "masks"
    args = [inputs / "vol_a.nii.gz", inputs / "vol_b.nii", inputs / "pics"]
    return out, _predict(CI_GATE_RUN, args, out, "--batch", "4")


def test_nifti_and_png_masks_keep_the_inputs_form(inputs, torch_masks):
    import nibabel as nib
    from PIL import Image

    out, res = torch_masks
    rows = {r["input"]: r for r in res["predictions"]}
    assert sorted(rows) == ["pics/colour.png", "pics/gray.png", "pics/page.tif", "vol_a.nii.gz", "vol_b.nii"]
    assert res["model"]["runtime"] == "torch" and res["model"]["input"] == [1, 64, 64]
    text = (out / "predictions.json").read_text()
    assert str(inputs) not in text and str(inputs.resolve()) not in text  # input names relative to the arguments
    for name in ("vol_a.nii.gz", "vol_b.nii"):
        src, x = _nifti(inputs / name)
        mask, m = _nifti(out / rows[name]["output"])
        assert m.shape == x.shape and mask.get_data_dtype() == np.uint8 and rows[name]["shape"] == list(x.shape)
        np.testing.assert_array_equal(mask.affine, src.affine)
        for key in ("dim", "pixdim", "qform_code", "sform_code", "xyzt_units", "quatern_b", "qoffset_x", "srow_x"):
            np.testing.assert_array_equal(mask.header[key], src.header[key], err_msg=key)
        assert type(mask) is type(src)
        counts = np.bincount(m.ravel(), minlength=2)
        assert set(np.unique(m)) <= {0, 1} and counts[1] > 0
        assert rows[name]["voxels"] == {"0": int(counts[0]), "1": int(counts[1])}
    assert isinstance(nib.load(str(out / "vol_b.nii")), nib.Nifti1Image)
    for name, size in (("gray.png", (72, 100)), ("colour.png", (120, 80)), ("page.tif", (96, 96))):
        with Image.open(inputs / "pics" / name) as src_img, Image.open(out / f"{Path(name).stem}.png") as mask_img:
            assert src_img.size == mask_img.size == size and mask_img.mode == "L"
            m = np.asarray(mask_img)
        assert set(np.unique(m)) <= {0, 1}, name
        assert rows[f"pics/{name}"]["shape"] == [size[1], size[0]] and rows[f"pics/{name}"]["output"].endswith(".png")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".pncd-owned.json", "predictions.json", "vol_a.nii.gz", "vol_b.nii", "gray.png", "colour.png", "page.png"])


def test_onnxruntime_and_openvino_masks_match_torch(inputs, artifacts, torch_masks, tmp_path):
    torch_out, torch_res = torch_masks
    args = [inputs / "vol_a.nii.gz", inputs / "vol_b.nii", inputs / "pics"]
    for target, folder in artifacts.items():  # in this process: the CLI's own path is tested above
        from pncd.apps.predict import PredictOptions, run_predict

        out = tmp_path / target
        res = run_predict(folder, args, PredictOptions(out=out, batch=3, threads=1), log=lambda _m: None)
        assert json.loads((out / "predictions.json").read_text()) == res
        assert res["model"]["kind"] == "artifact" and res["model"]["runtime"] == target
        assert {r["precision"] for r in res["predictions"]} == {"fp32"}
        for row in torch_res["predictions"]:
            name = row["output"]
            if name.endswith((".nii", ".nii.gz")):
                ref, got = _nifti(torch_out / name)[1], _nifti(out / name)[1]
            else:
                from PIL import Image

                ref, got = np.asarray(Image.open(torch_out / name)), np.asarray(Image.open(out / name))
            assert ref.shape == got.shape
            assert np.array_equal(ref, got) or _dice(got, ref) >= 0.999, (target, name, _dice(got, ref))


@pytest.mark.skipif(not LGG.is_dir(), reason=f"LGG FLAIR data set not present at {LGG}")
def test_lgg_masks_score_as_pncd_eval_scores(tmp_path):
    """Per-case Dice of predict's NIfTI masks, read and scored over the slices as eval reads
    labels (resized to the run's size, nearest), equals what pncd eval wrote in metrics.json."""
    from pncd.data.preprocess import resize_masks
    from pncd.data.readers import read_mask
    from pncd.metrics import SegMetrics

    data = tmp_path / "lgg"
    for sub in ("images", "labels"):
        (data / sub).mkdir(parents=True)
        for case in (*LGG_TEST, *LGG_OTHER["train"], *LGG_OTHER["val"]):
            (data / sub / f"{case}.nii.gz").symlink_to(LGG / sub / f"{case}.nii.gz")
    (data / "splits.json").write_text(json.dumps({**LGG_OTHER, "test": list(LGG_TEST)}))
    from pncd.evaluation.run import evaluate_run

    evaluate_run(CI_GATE_RUN, "test", data=str(data), out=tmp_path / "eval", overlays=0, device="cpu",
                 echo=lambda _m: None)
    evaluated = {r["case"]: r["dice"] for r in json.loads((tmp_path / "eval" / "metrics.json").read_text())["per_case"]}
    res = _predict(CI_GATE_RUN, [data / "images" / f"{c}.nii.gz" for c in LGG_TEST], tmp_path / "masks")
    size = res["model"]["preprocessing"]["size"]
    m = SegMetrics(num_classes=2)
    for case in LGG_TEST:
        pred = read_mask(tmp_path / "masks" / f"{case}.nii.gz", 2)
        assert pred.shape == read_mask(data / "labels" / f"{case}.nii.gz", 2).shape == (20, 256, 256)
        m.update(case, resize_masks(pred, size), resize_masks(read_mask(data / "labels" / f"{case}.nii.gz", 2), size))
    ours = {r["case"]: r["dice"] for r in m.per_case()}
    assert set(ours) == set(evaluated) == set(LGG_TEST)
    for case in LGG_TEST:
        assert abs(ours[case] - evaluated[case]) <= 1e-6, (case, ours[case], evaluated[case])
    assert any(0.0 < d < 1.0 for d in ours.values()), ours  # the masks segment something: the check has teeth


def _refused(proc, *names) -> str:
    line = error_line(proc)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert line.startswith("Error: ") and len([x for x in proc.stderr.splitlines() if x.startswith("Error")]) == 1
    for n in names:
        assert str(n) in line, line
    return line


def _cut_gz(path: Path) -> bytes:
    """A .nii.gz cut short: its header (at the start of the stream) still reads."""
    data = path.read_bytes()
    return data[: len(data) // 2]


def test_bad_input_is_refused_in_one_line_and_nothing_is_written(inputs, tmp_path):
    import nibabel as nib

    out = tmp_path / "out"
    two = tmp_path / "two_channels.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((32, 32, 3, 2)).astype(np.float32), np.eye(4)), str(two))
    line = _refused(run_cli("predict", CI_GATE_RUN, inputs / "vol_a.nii.gz", two, "--out", out, "--threads", "1"), two)
    assert "2 channels" in line and "takes 1" in line
    _refused(run_cli("predict", CI_GATE_RUN, inputs / "missing.png", "--out", out), inputs / "missing.png")
    _refused(run_cli("predict", inputs / "pics", inputs / "vol_a.nii.gz", "--out", out), inputs / "pics")
    assert not out.exists()
    _refused(run_cli("predict", CI_GATE_RUN, inputs / "pics", "--out", inputs / "pics", "--threads", "1"), inputs / "pics")
    assert sorted(p.name for p in (inputs / "pics").iterdir()) == ["colour.png", "gray.png", "notes.txt", "page.tif"]
    cut = tmp_path / "cut.nii.gz"  # its header reads, its voxels do not: found after the first mask is made
    cut.write_bytes(_cut_gz(inputs / "vol_a.nii.gz"))
    from pncd.apps.predict import PredictOptions, run_predict
    from pncd.errors import PncdError

    with pytest.raises(PncdError, match="cut.nii.gz: the file is corrupt"):
        run_predict(CI_GATE_RUN, [inputs / "vol_a.nii.gz", cut], PredictOptions(out=out, threads=1), log=lambda _m: None)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("x")
    _refused(run_cli("predict", CI_GATE_RUN, inputs / "pics" / "gray.png", "--out", foreign, "--threads", "1"), foreign)
    assert [p.name for p in foreign.iterdir()] == ["mine.txt"]


def test_native_size_policy_and_a_second_predict_into_the_same_folder(inputs, artifacts, tmp_path):
    """--size-policy native: a run takes 96 x 96 slices (multiples of 16), an artifact exported at
    64 x 64 refuses them; an --out an earlier predict wrote is updated in place."""
    from pncd.apps.predict import PredictOptions, run_predict
    from pncd.errors import PncdError

    out = tmp_path / "native"
    logs: list[str] = []
    res = run_predict(CI_GATE_RUN, [inputs / "vol_a.nii.gz"], PredictOptions(out=out, size_policy="native", threads=1),
                      log=logs.append)
    assert res["predictions"][0]["shape"] == [96, 96, 5] and any("[1/1] vol_a.nii.gz" in m for m in logs)
    with pytest.raises(PncdError, match="exported for 64x64 only"):
        run_predict(artifacts["openvino"], [inputs / "vol_a.nii.gz"],
                    PredictOptions(out=tmp_path / "refused", size_policy="native", threads=1), log=logs.append)
    assert not (tmp_path / "refused").exists()
    res = run_predict(CI_GATE_RUN, [inputs / "pics" / "gray.png"], PredictOptions(out=out, threads=1), log=logs.append)
    assert [r["input"] for r in res["predictions"]] == ["gray.png"]
    assert sorted(p.name for p in out.iterdir()) == [".pncd-owned.json", "gray.png", "predictions.json"]
