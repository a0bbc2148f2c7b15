"""What a report may say about where it was made and whose data it read.

Reports (``pncd bench``'s report.json/report.md, ``pncd eval``'s metrics.json, ``pncd compare``'s
compare.json/compare.md) are shared: pasted into issues, attached to papers, sent to a vendor.
By default they hold no host name and no absolute path: a path under the folder the command ran
in is written relative to it, any other absolute path as ``…/`` and its last two parts. With
``anonymize``, case identifiers (patient ids on real data) become stable aliases: ``case-`` and
the first 10 hex digits of the SHA-256 of the identifier, the same in every report and overlay
of every run, so reports can still be compared case by case.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from pathlib import Path
from typing import Any

HOST_KEYS = frozenset({"hostname", "host"})  # this machine's name; the Jetson host a bench was given
CASE_KEYS = frozenset({"case", "case_id", "worst_case", "patient"})
CASE_LIST_KEYS = frozenset({"case_ids", "cases_ids", "patients"})
_ABS = re.compile(r"(?<![\w.~:/-])/(?:[^\s/'\"`|,;:()\[\]]+/)*[^\s/'\"`|,;:()\[\]]*")


def case_alias(case_id: str) -> str:
    """The stable alias of one case id (see the module's docstring)."""
    return "case-" + hashlib.sha256(str(case_id).encode()).hexdigest()[:10]


def public_path(path: str | Path, cwd: Path | None = None) -> str:
    """``path`` as a report may print it: relative to ``cwd`` (default: the working directory)
    when under it, else ``…/`` with its last two parts; relative paths as they are."""
    p = Path(path)
    if not p.is_absolute():
        return str(path)
    base = Path(os.path.abspath(cwd or Path.cwd()))
    try:
        rel = Path(os.path.abspath(p)).relative_to(base)
        return str(rel) if str(rel) != "." else "."
    except ValueError:
        parts = p.parts[1:]
        return "…/" + "/".join(parts[-2:]) if parts else "…"


def scrub_text(text: str, cwd: Path | None = None, cases: dict[str, str] | None = None) -> str:
    """Every absolute path inside ``text`` replaced by :func:`public_path`, and every case id of
    ``cases`` (id -> alias) by its alias."""
    out = _ABS.sub(lambda m: public_path(m.group(0), cwd) if len(m.group(0)) > 1 else m.group(0), text)
    for cid, alias in (cases or {}).items():
        out = re.sub(rf"(?<![\w-]){re.escape(cid)}(?![\w-])", alias, out)
    return out


def _scrub_command(cmd: str, cwd: Path | None, cases: dict[str, str] | None) -> str:
    try:
        tokens = shlex.split(cmd)
    except ValueError:
        return scrub_text(cmd, cwd, cases)
    return " ".join(shlex.quote(public_path(t, cwd) if t.startswith("/") else scrub_text(t, cwd, cases))
                    for t in tokens)


def collect_case_ids(obj: Any, found: set[str] | None = None) -> set[str]:
    """Every value under a case key (:data:`CASE_KEYS`, :data:`CASE_LIST_KEYS`) of a JSON-like object."""
    found = set() if found is None else found
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in CASE_KEYS and isinstance(v, str):
                found.add(v)
            elif k in CASE_LIST_KEYS and isinstance(v, list):
                found.update(x for x in v if isinstance(x, str))
            else:
                collect_case_ids(v, found)
    elif isinstance(obj, list):
        for v in obj:
            collect_case_ids(v, found)
    return found


def public(obj: Any, *, anonymize: bool = False, cwd: Path | None = None,
           cases: dict[str, str] | None = None) -> Any:
    """A copy of a JSON-like report with no host name (keys in :data:`HOST_KEYS` dropped), no
    absolute path (:func:`scrub_text` on every string; a command line token by token) and, with
    ``anonymize``, every case id replaced by its alias (in values and in keys of per-case maps)."""
    if cases is None:
        cases = {c: case_alias(c) for c in collect_case_ids(obj)} if anonymize else {}
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if k in HOST_KEYS and isinstance(v, str):
                continue
            key = cases.get(k, k) if isinstance(k, str) else k
            if k == "command" and isinstance(v, str):
                out[key] = _scrub_command(v, cwd, cases)
            else:
                out[key] = public(v, anonymize=anonymize, cwd=cwd, cases=cases)
        return out
    if isinstance(obj, list):
        return [public(v, anonymize=anonymize, cwd=cwd, cases=cases) for v in obj]
    if isinstance(obj, tuple):
        return tuple(public(v, anonymize=anonymize, cwd=cwd, cases=cases) for v in obj)
    if isinstance(obj, str):
        return cases[obj] if obj in cases else scrub_text(obj, cwd, cases)
    return obj
