"""Shared fixtures for the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic data set (8 cases x 6 slices at 64 x 64, seed 0), generated once per session.

    Layout: ``images/*.nii.gz``, ``labels/*.nii.gz``, ``splits.json`` (6 train, 1 val, 1 test
    cases). Treat it as read-only: other tests share it.
    """
    from pncd.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synthetic") / "data", n_cases=8, n_slices=6, size=64, seed=0)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep the built-in synthetic default (written on first use) inside the test session, and
    run torch single-threaded: on a shared 2-core machine small ops are far slower with 2."""
    import os

    import torch

    old = {k: os.environ.get(k) for k in ("PNCD_CACHE", "OMP_NUM_THREADS")}
    os.environ["PNCD_CACHE"] = str(tmp_path_factory.mktemp("pncd-cache"))
    os.environ["OMP_NUM_THREADS"] = "1"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


CI_GATE_RUN = Path(__file__).resolve().parents[1] / "bench" / "results" / "ci-gate" / "enet-pncd"
CI_GATE_BASELINE = Path(__file__).resolve().parents[1] / "bench" / "baselines" / "ci-synthetic.json"
CI_GATE_EXPORTS = ("onnxruntime:int8", "openvino:fp32", "openvino:int8")


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build) -> Path:
    """``build(folder)`` run once per test session, also when pytest-xdist splits the session over
    worker processes (``-n 2``): the first worker to ask builds under a file lock in the temporary
    folder the workers share, the others wait and reuse it. Treat the folder as read-only."""
    import os

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / f"shared-{name}"
    with FileLock(str(folder) + ".lock"):
        if not (folder / ".built").is_file():
            if folder.exists():  # a worker that died while building
                import shutil

                shutil.rmtree(folder)
            folder.mkdir()
            build(folder)
            (folder / ".built").write_text("")
    return folder


@pytest.fixture(scope="session")
def ci_gate_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The committed CI checkpoint (``bench/results/ci-gate``) exported as ``CI_GATE_EXPORTS`` with
    pncd export's defaults, once per session: {"target:precision": artifact directory}."""
    from pncd.export.pipeline import ExportOptions, export_run

    def name(spec: str) -> str:
        return "enet-pncd-" + spec.replace(":", "-")

    def build(out: Path) -> None:
        for spec in CI_GATE_EXPORTS:
            target, precision = spec.split(":")
            export_run(CI_GATE_RUN, ExportOptions(target=target, precision=precision, out=str(out / name(spec))),
                       log=lambda _m: None)

    out = built_once(tmp_path_factory, "ci-gate", build)
    return {spec: out / name(spec) for spec in CI_GATE_EXPORTS}
