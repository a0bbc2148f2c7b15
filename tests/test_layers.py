"""Imports go one way: each layer of the package imports only the layers below it, no module
takes part in an import circle, and only the command-line layer imports click.

The graph is read with grimp from the package laid out as it is installed (pyproject's
package-dir maps export/, bench/ and targets/ into ``pncd``), imports inside functions and
under ``TYPE_CHECKING`` included. The layers, top to bottom:

1. command line: ``pncd.cli``, ``pncd.commands`` (the only place that imports click)
2. applications: ``pncd.apps`` (demo, ablation, comparison)
3. ``pncd.bench``
4. ``pncd.export``
5. training and evaluation: ``pncd.training``, ``pncd.evaluation``, ``pncd.distill``, ``pncd.qat``
6. ``pncd.targets`` (each backend's build and run)
7. foundation: every other module (errors, io, metrics, scoring, data, models, checkpoints, run
   folders, options, ...)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")

ROOT = Path(__file__).resolve().parents[1]
NOT_IN_WHEEL = {"experiments", "results", "baselines"}

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("command line", ("pncd.cli", "pncd.commands", "pncd.__main__")),
    ("applications", ("pncd.apps",)),
    ("bench", ("pncd.bench",)),
    ("export", ("pncd.export",)),
    ("training and evaluation", ("pncd.training", "pncd.evaluation", "pncd.distill", "pncd.qat")),
    ("targets", ("pncd.targets",)),
]
FOUNDATION = len(LAYERS)
CLI_LAYER = 0


def layer_of(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return FOUNDATION


def layer_name(i: int) -> str:
    return LAYERS[i][0] if i < FOUNDATION else "foundation"


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """grimp's import graph of ``pncd`` (and click) over a tree of links laid out as the wheel is."""
    tree = tmp_path_factory.mktemp("installed")
    (tree / "pncd").mkdir()
    for entry in (ROOT / "pncd").iterdir():
        (tree / "pncd" / entry.name).symlink_to(entry)
    for sub in ("export", "bench", "targets"):
        (tree / "pncd" / sub).mkdir()
        for entry in (ROOT / sub).iterdir():
            if entry.name not in NOT_IN_WHEEL:
                (tree / "pncd" / sub / entry.name).symlink_to(entry)
    saved = list(sys.path), dict(sys.modules)
    sys.path.insert(0, str(tree))
    for name in [m for m in sys.modules if m == "pncd" or m.startswith("pncd.")]:
        del sys.modules[name]  # grimp finds the package through the import system: the tree above
    try:
        return grimp.build_graph("pncd", "click", cache_dir=None)
    finally:
        sys.path[:] = saved[0]
        sys.modules.clear()
        sys.modules.update(saved[1])


def pncd_modules(g) -> list[str]:
    return sorted(m for m in g.modules if m == "pncd" or m.startswith("pncd."))


def upward_imports(g) -> list[str]:
    out = []
    for m in pncd_modules(g):
        for d in g.find_modules_directly_imported_by(m):
            if d.startswith("pncd.") and layer_of(d) < layer_of(m):
                out.append(f"{m} ({layer_name(layer_of(m))}) imports {d} ({layer_name(layer_of(d))})")
    return sorted(out)


def circles(g) -> list[list[str]]:
    """Strongly connected components of two or more modules (Tarjan, iterative)."""
    mods = [m for m in pncd_modules(g) if m != "pncd"]
    adj = {m: sorted(d for d in g.find_modules_directly_imported_by(m) if d in mods) for m in mods}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in mods:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = len(index)
                stack.append(v)
                on.add(v)
            for j in range(i, len(adj[v])):
                w = adj[v][j]
                if w not in index:
                    work += [(v, j + 1), (w, 0)]
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
    return out


def test_the_graph_has_every_layer(graph):
    mods = pncd_modules(graph)
    assert {"pncd.cli", "pncd.apps.demo", "pncd.bench.pipeline", "pncd.export.pipeline", "pncd.training.loop",
            "pncd.targets.openvino_rt", "pncd.data.loading"} <= set(mods)
    assert not any(".experiments" in m or ".results" in m for m in mods)
    assert {layer_of(m) for m in mods} == set(range(FOUNDATION + 1))


def test_no_module_imports_a_layer_above_its_own(graph):
    assert upward_imports(graph) == []


def test_no_import_circles(graph):
    assert circles(graph) == []


def test_only_the_command_line_imports_click(graph):
    users = sorted(m for m in pncd_modules(graph) if graph.direct_import_exists(importer=m, imported="click"))
    assert users and [m for m in users if layer_of(m) != CLI_LAYER] == []


def test_the_checks_see_a_violation(graph):
    """The checks above fail on an upward import, a circle and click below the CLI."""
    graph.add_import(importer="pncd.targets.base", imported="pncd.export.pipeline")
    graph.add_import(importer="pncd.metrics", imported="click")
    try:
        assert upward_imports(graph) == ["pncd.targets.base (targets) imports pncd.export.pipeline (export)"]
        assert any("pncd.targets.base" in c and "pncd.export.pipeline" in c for c in circles(graph))
        assert graph.direct_import_exists(importer="pncd.metrics", imported="click")
        assert layer_of("pncd.metrics") != CLI_LAYER
    finally:
        graph.remove_import(importer="pncd.targets.base", imported="pncd.export.pipeline")
        graph.remove_import(importer="pncd.metrics", imported="click")


def test_library_modules_import_without_click():
    """Importing every module below the command line loads no click (checked in a fresh process)."""
    import subprocess

    code = (
        "import sys, importlib, pkgutil\n"
        "names = []\n"
        "for pkg in ('pncd', 'pncd.export', 'pncd.bench', 'pncd.targets'):\n"
        "    p = importlib.import_module(pkg)\n"
        "    names += [pkg] + [m.name for m in pkgutil.walk_packages(p.__path__, pkg + '.')]\n"
        "skip = ('pncd.cli', 'pncd.commands', 'pncd.__main__', 'pncd.bench.experiments', 'pncd.bench.results')\n"
        "for n in names:\n"
        "    if not n.startswith(skip):\n"
        "        importlib.import_module(n)\n"
        "print(len(names), 'click' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    count, loaded = out.stdout.strip().splitlines()[-1].split()
    assert int(count) > 80 and loaded == "False"
