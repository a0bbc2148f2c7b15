"""Helpers shared by the export tests (imported by name: tests/export is on sys.path)."""

from __future__ import annotations

from pathlib import Path

SIZE = 32  # side of every test image and export, unless a network needs more


def leftovers(out: Path) -> list[str]:
    """Anything an export to ``out`` left behind: the directory or a temporary sibling."""
    found = [out.name] if out.exists() else []
    found += [p.name for p in out.parent.glob(f".{out.name}.*")]
    return found
