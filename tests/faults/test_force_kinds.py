"""--force replaces only an output of the kind the command writes. The ownership marker
(.pncd-owned.json) records the kind (run, export, report, evaluation, dataset, ...); a bench
--force onto a data set, an export --force onto another run, a train --force onto an export
are refused (exit 2, one line, nothing changed). A data set is never replaced, marker or not,
nor a path the command reads (symbolic links resolved). A marker written before markers had
a kind matches every kind, so older outputs stay usable."""

from __future__ import annotations

import json

import pytest

from pncd.errors import PncdError
from pncd.io import OWNED_MARKER, check_output, claim_dir, is_dataset, owned_kind, swap_into, write_owned
from tests.faults.fault_helpers import TINY, ok, one_error, siblings, tree
from tests.helpers import run_cli

BENCH = ["--iters", "1", "--warmup", "0", "--n-boot", "100", "--overlays", "0", "--batch", "1", "--no-reference"]


def _drop_kind(folder):
    """The marker as a pncd from before markers recorded a kind wrote it."""
    marker = json.loads((folder / OWNED_MARKER).read_text())
    marker.pop("kind", None)
    (folder / OWNED_MARKER).write_text(json.dumps(marker))


# -- the reported cases, through the command line ------------------------------------------------

def test_bench_force_onto_a_data_set_is_refused(tiny_export, tiny_data, copy_of):
    """pncd bench ART --out DATA --force deleted images/, labels/ and splits.json (exit 0)."""
    data = copy_of(tiny_data, "synth")
    before = tree(data)
    line = one_error(run_cli("bench", tiny_export, "--out", data, "--force", *BENCH), 2)
    assert str(data) in line and "data set" in line, line
    assert tree(data) == before and siblings(data) == []


def test_export_force_onto_another_run_is_refused(tiny_run, copy_of):
    """pncd export RUN --out runs/other-run --force deleted the other run's checkpoints."""
    other = copy_of(tiny_run, "other-run")
    before = tree(other)
    line = one_error(run_cli("export", tiny_run, "--target", "onnxruntime", "--out", other, "--parity-images", "2",
                             "--force"), 2)
    assert str(other) in line and "'run'" in line and "'export'" in line and "same kind" in line, line
    assert tree(other) == before and siblings(other) == []


def test_train_and_eval_force_onto_another_kind_are_refused(tiny_data, tiny_export, tiny_run, copy_of, tmp_path):
    art = copy_of(tiny_export, "art")
    before = tree(art)
    line = one_error(run_cli("train", "--model", "enet", "--data", tiny_data, "--out", art, "--force", "--epochs", "1",
                             *TINY), 2)
    assert str(art) in line and "'export'" in line and "'run'" in line, line
    line = one_error(run_cli("eval", tiny_run, "--out", art, "--force", "--overlays", "0"), 2)
    assert "'export'" in line and "'evaluation'" in line, line
    line = one_error(run_cli("data", "synth", art, "--cases", "1", "--slices", "1", "--size", "16", "--force"), 2)
    assert "'export'" in line and "'dataset'" in line, line
    assert tree(art) == before and siblings(art) == []


@pytest.mark.parametrize("layout", ["images+masks", "nnunet"])
def test_a_data_set_without_marker_is_refused_as_a_data_set(tiny_run, tmp_path, layout):
    data = tmp_path / "theirs"
    if layout == "nnunet":
        (data / "imagesTr").mkdir(parents=True)
        (data / "dataset.json").write_text("{}")
    else:
        (data / "images").mkdir(parents=True)
        (data / "masks").mkdir()
    (data / "images" if layout != "nnunet" else data / "imagesTr").joinpath("a.png").write_bytes(b"img")
    before = tree(data)
    line = one_error(run_cli("eval", tiny_run, "--out", data, "--force", "--overlays", "0"), 2)
    assert str(data) in line and "is a data set" in line, line
    assert tree(data) == before


def test_a_link_to_the_input_or_to_a_data_set_is_refused(tiny_run, tiny_data, copy_of, tmp_path):
    run = copy_of(tiny_run, "run")
    link = tmp_path / "link"
    link.symlink_to(run)
    before = tree(run)
    line = one_error(run_cli("export", run, "--target", "onnxruntime", "--out", link, "--force"), 2)
    assert "input" in line and str(run) in line
    data_link = tmp_path / "data-link"
    data_link.symlink_to(copy_of(tiny_data, "d"))
    line = one_error(run_cli("eval", run, "--out", data_link, "--force", "--overlays", "0"), 2)
    assert "data set" in line
    assert tree(run) == before


def test_a_marker_without_kind_matches_and_gets_one(tiny_run, tmp_path):
    out = tmp_path / "ev"
    ok(run_cli("eval", tiny_run, "--out", out, "--overlays", "0"))
    assert owned_kind(out) == "evaluation"
    _drop_kind(out)
    assert owned_kind(out) is None
    ok(run_cli("eval", tiny_run, "--out", out, "--force", "--overlays", "0"))
    assert owned_kind(out) == "evaluation" and siblings(out) == []


# -- the rule itself (pncd.io) ---------------------------------------------------------------------

def _owned(folder, kind, names=("a.txt",)):
    folder.mkdir(parents=True)
    for n in names:
        (folder / n).write_text(n)
    write_owned(folder, names, kind)
    return folder


def test_check_output_replaces_only_the_same_kind(tmp_path):
    run = _owned(tmp_path / "run", "run")
    assert check_output(run, True, names=("a.txt",), kind="run") == run
    for kind in ("export", "report", "evaluation", "dataset", "ablation"):
        with pytest.raises(PncdError, match="kind 'run'.*same kind"):
            check_output(run, True, names=("a.txt",), kind=kind)
    with pytest.raises(PncdError, match="already exists"):  # without --force, as before
        check_output(run, False, kind="run")


def test_a_data_set_is_replaced_by_no_other_kind(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    write_owned(data, ["images", "labels"], "dataset")
    assert is_dataset(data)
    check_output(data, True, names=("images",), kind="dataset")  # pncd data synth --force onto its own set
    _drop_kind(data)  # even a marker without kind (which matches every kind) does not make it replaceable
    for kind in ("run", "report", "export", "evaluation", "ablation", "compare", "qat"):
        with pytest.raises(PncdError, match="is a data set"):
            check_output(data, True, kind=kind)


def test_swap_into_refuses_another_kind_and_records_its_own(tmp_path):
    final = _owned(tmp_path / "final", "run")
    new = _owned(tmp_path / "new", "report", names=("report.json",))
    with pytest.raises(PncdError, match="kind 'run'"):
        swap_into(new, final)
    assert sorted(p.name for p in final.iterdir()) == [OWNED_MARKER, "a.txt"]
    same = _owned(tmp_path / "same", "run", names=("b.txt",))
    swap_into(same, final)
    assert owned_kind(final) == "run" and sorted(p.name for p in final.iterdir()) == [OWNED_MARKER, "b.txt"]


def test_write_owned_keeps_the_recorded_kind_and_knows_its_kinds(tmp_path):
    d = _owned(tmp_path / "d", "export")
    write_owned(d, ["a.txt", "b.txt"])
    assert owned_kind(d) == "export"
    with pytest.raises(ValueError, match="unknown output kind"):
        write_owned(d, [], "nonsense")
    with pytest.raises(ValueError, match="unknown output kind"):
        check_output(tmp_path / "x", False, kind="nonsense")


def test_claim_dir_takes_a_new_or_own_folder_only(tmp_path):
    new = claim_dir(tmp_path / "abl", "ablation", ("ablation.md",))
    assert owned_kind(new) == "ablation" and json.loads((new / OWNED_MARKER).read_text())["names"] == ["ablation.md"]
    (new / "ablation.md").write_text("table")
    assert claim_dir(new, "ablation", ("ablation.md",)) == new
    users = tmp_path / "users"
    users.mkdir()
    (users / "ablation.md").write_text("mine")
    with pytest.raises(PncdError, match="not written by pncd"):
        claim_dir(users, "ablation", ("ablation.md",))
    with pytest.raises(PncdError, match="kind 'run'"):
        claim_dir(_owned(tmp_path / "run", "run"), "ablation")
    with pytest.raises(PncdError, match="input"):
        claim_dir(tmp_path, "ablation", protect=(new,))
    assert (users / "ablation.md").read_text() == "mine"
