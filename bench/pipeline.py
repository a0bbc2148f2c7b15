"""``run``: exported artifacts -> one bench report directory, each against its torch reference.

For each artifact (a directory written by ``pncd export``, :class:`pncd.bench.artifact.Artifact`)
and, once per source run and preprocessing, the torch model it was exported from:

- latency: warm-up, timed loop at batch 1 (statistics, throughput), throughput at a larger
  batch, first inference, activation, memory, measured where ``--device`` says
  (:mod:`pncd.bench.sites`: this machine, or a Jetson whose torch references run here);
- accuracy: the whole split with the run's preprocessing, Dice/VOE/RVD/HD95/ASSD per case
  (:mod:`pncd.scoring`), compared with the reference (differences, worst case drop, paired
  bootstrap interval: :mod:`pncd.bench.accuracy`);
- a report directory, written atomically: report.json, report.md, latency_dice.png and overlays/
  (:mod:`pncd.bench.report`).

Order of work: everything that can fail on bad input (options, artifacts, checksums, each
artifact's source checkpoint against the SHA-256 its manifest recorded, the output directory, the
device's host and SSH options) fails before any data is loaded or written. Each manifest is read
once; each artifact is checked against it (files inside the folder and listed with their SHA-256,
the precision and target its graph bears out: :meth:`Artifact.snapshot`) and run from a private
copy of the very bytes checked. The torch reference of an artifact is the checkpoint it was
exported from, loaded from the bytes whose SHA-256 was checked; each entry records the benched
split's identity (:func:`pncd.data.loading.fingerprint`), which ``pncd gate`` compares with the
baseline's. One process at a time writes a report folder (:func:`pncd.outlock.out_lock`).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pncd.bench import report as rep
from pncd.bench import figures as fig
from pncd.bench.artifact import Artifact, SourceCopies, artifact_name, default_checkpoint, int8_record
from pncd.bench.options import BenchOptions, validate
from pncd.bench.report import Report
from pncd.bench.sites import Measured, Site, make_site
from pncd.errors import PncdError

Log = Callable[[str], None]
REPORT_FILES = ("report.json", "report.md", "latency_dice.png", "overlays", "profile.json")  # what a report directory holds


def run(artifacts: Sequence[str | os.PathLike | Artifact], options: BenchOptions, *, log: Log | None = None,
        command: str | None = None, params: dict[str, Any] | None = None, site: Site | None = None) -> Report:
    """Benchmark ``artifacts`` and their torch references; write the report to ``options.out``.

    ``command`` and ``params`` are recorded in the report (default: this process's command line,
    and no options). ``site``: where to time them (default: the one ``options.device`` names).
    Raises :class:`PncdError` on bad input before anything is written. Holds the lock of
    ``options.out`` throughout (:func:`pncd.outlock.out_lock`, as train and export do: a second
    bench or export into it is refused at once), and runs each artifact from a private copy of
    the bytes it verified (:meth:`Artifact.snapshot`), deleted at the end.
    """
    import tempfile

    from pncd.outlock import out_lock

    with out_lock(options.out, "pncd bench"), tempfile.TemporaryDirectory(prefix="pncd-bench-") as private:
        return _run(artifacts, options, log or _stderr, command, params, site, Path(private))


def _run(artifacts: Sequence[str | os.PathLike | Artifact], options: BenchOptions, log: Log, command: str | None,
         params: dict[str, Any] | None, site: Site | None, private: Path) -> Report:
    from pncd.bench.machine import command_line
    from pncd.io import atomic_dir, write_json, write_text
    from pncd.privacy import public

    threads, site, arts = prepare(artifacts, options, log, site, private)
    with atomic_dir(options.out, force=options.force, protect=tuple(a.folder for a in arts), kind="report") as tmp:
        bench = Bench(options, site, log)
        for a in arts:
            bench.add(a)
        bench.interleave()
        files = bench.write_figures(tmp)
        report = bench.report(files, threads, command or command_line(), params or {})
        shared = public(report.to_json(), anonymize=options.anonymize)  # no host name, path or (asked) case id
        write_json(tmp / "report.json", shared)
        write_text(tmp / "report.md", rep.render_markdown(shared))
        if bench.profiles:
            from pncd.bench.profile import profile_json

            write_json(tmp / "profile.json", public(profile_json(bench.profiles, report.entries),
                                                    anonymize=options.anonymize))
    report.path = Path(options.out)
    return report


def prepare(artifacts: Sequence[str | os.PathLike | Artifact], o: BenchOptions, log: Log,
            site: Site | None = None, private: Path | None = None) -> tuple[int, Site, list[Artifact]]:
    """Check everything that needs no data: (threads per runtime, the site, the artifacts).

    ``private``: a folder of the caller's own (it deletes it): each manifest is read once, each
    artifact verified against it and returned as a copy there of the very bytes verified
    (:meth:`Artifact.snapshot`; without ``private``, verified in place), and each source
    checkpoint's checked bytes are copied there for the torch reference to load."""
    from pncd.io import check_output
    from pncd.runtime import default_threads

    validate(o, list(artifacts))
    why = "--threads" if o.threads else "default: physical cores / processes"
    threads = o.threads or default_threads()
    log(f"threads: {threads} per runtime ({why})")
    site = site or make_site(o, threads, log)
    named = [a if isinstance(a, Artifact) else Artifact.read(a) for a in artifacts]
    arts = [a.snapshot(private / f"artifact-{i}") if o.verify and private is not None else a
            for i, a in enumerate(named)]
    for a in arts if o.verify and private is None else ():
        a.verify()
    sources = SourceCopies(private)  # each source checkpoint is read (hashed, copied) once
    arts = [a.with_source_checked(o.reference, o.allow_stale_source, sources) for a in arts]
    for a in arts:  # an export of a run stopped early (its manifest's source.complete, pncd.rundir.RunProgress)
        src = a.manifest.get("source") or {}
        if src.get("complete") is False:
            log(f"warning: {a.folder} was exported from {a.source_run} at epoch {src.get('epochs_done')} of "
                f"{src.get('epochs')} (the run had not finished); its numbers are those of an unfinished run")
    check_output(o.out, o.force, protect=tuple(a.folder for a in arts) + tuple(a.source_run for a in arts)
                 + ((o.data,) if o.data is not None else ()), names=REPORT_FILES, kind="report")
    for a, as_named in zip(arts, named):
        site.check(as_named)  # its messages name the folder given, not the private copy
        if o.reference and not (a.source_run / "config.json").is_file():
            raise PncdError(f"{a.folder}: its source run {a.source_run} is missing (no config.json); "
                            "restore the run or pass --no-reference")
    return threads, site, arts


class Bench:
    """The entries of one report, measured one artifact at a time (references once per run)."""

    def __init__(self, options: BenchOptions, site: Site, log: Log | None = None) -> None:
        self.o, self.site, self.log = options, site, log or _stderr
        self.splits: dict[str, Any] = {}  # data spec (JSON) -> SliceSet
        self.fingerprints: dict[str, str] = {}  # data spec (JSON) -> the split's identity (pncd.data.loading.fingerprint)
        self.entries: list[dict[str, Any]] = []
        self.per_case: dict[str, list[dict]] = {}
        self.settings: dict[str, Any] = {}
        self.preds: dict[str, np.ndarray] = {}  # entry id -> label maps
        self.split_of: dict[str, str] = {}  # entry id -> its split's key
        self.refs: dict[str, str] = {}  # "run|split key" -> reference entry id
        self.taken: set[str] = set()
        self.profiles: dict[str, dict[str, Any]] = {}  # entry id -> its per-node profile (--profile)

    def split(self, spec_dict: dict[str, Any]) -> tuple[str, Any]:
        """(key, SliceSet) of an artifact's data spec (``options.data`` replaces its root); loaded once."""
        from pncd.data import DataSpec, load_split
        from pncd.data.loading import fingerprint

        spec_d = dict(spec_dict)
        if self.o.data is not None:
            spec_d["root"] = str(self.o.data)
        key = json.dumps(spec_d, sort_keys=True, default=str)
        if key not in self.splits:
            spec = DataSpec.from_dict(spec_d)
            self.log(f"loading the {self.o.split} split of {spec.root or 'the synthetic data set'} "
                     f"({spec.size}x{spec.size})")
            self.splits[key] = load_split(spec, self.o.split)
            self.fingerprints[key] = fingerprint(spec, self.o.split)
        return key, self.splits[key]

    def add(self, a: Artifact) -> str:
        """Measure ``a`` (and its reference, the first time its run comes up); returns its entry id."""
        key, ss = self.split(a.data)
        ref_id = self.reference(a, key, ss) if self.o.reference else None
        aid = self._unique(artifact_name(a.run_name, a.target, a.precision))  # its one name (folder in artifact_dir)
        m = self.site.measure(a, ss.images, aid)
        if self.o.profile:  # a session of its own, after the timing (pncd.bench.profile)
            from pncd.bench.profile import profile_entry

            self.profiles[aid] = profile_entry(self.site, aid, self.log)
        head = {"id": aid, "key": aid, "kind": "artifact", "name": aid, "ref_id": ref_id,
                "source_run": str(a.source_run), "artifact_dir": str(a.folder), "model": a.model, "target": a.target,
                "runtime": a.runtime, "precision": a.precision, "device": self.o.device,
                "source_checkpoint": a.checkpoint.name if a.checkpoint is not None else None,
                "source_check": a.source_check, "int8": int8_record(a.manifest)}
        self._record(head, m, self.site.latency_what, key, ss)
        return aid

    def reference(self, a: Artifact, key: str, ss: Any) -> str:
        """The id of the torch reference of ``a``'s checkpoint on this split (measured the first
        time): the weights ``a`` was exported from, so an artifact of ``last.safetensors`` is not
        compared with ``best.safetensors``. Named ``RUN-torch-fp32`` for the run's default
        checkpoint, ``RUN-STEM-torch-fp32`` for another one."""
        ck = a.reference_source()  # the run's file; the reference loads the bytes checked (a.reference_checkpoint())
        rkey = f"{a.source_run}|{ck}|{key}"  # one reference per checkpoint and preprocessing
        if rkey not in self.refs:
            stem = None if ck is None or ck == default_checkpoint(a.source_run) else ck.name.split('.')[0]
            rid = self._unique(artifact_name(a.run_name, "torch", "fp32", stem))
            device, m = self.site.reference(a, ss.images, rid)
            head = {"id": rid, "key": rid, "kind": "reference", "name": rid, "ref_id": None,
                    "source_run": str(a.source_run), "artifact_dir": None, "model": a.model, "target": "torch",
                    "runtime": "torch", "precision": "fp32", "device": device,
                    "source_checkpoint": ck.name if ck is not None else None, "source_check": None}
            self._record(head, m, "end-to-end: numpy in and out, on this machine", key, ss)
            self.refs[rkey] = rid
        return self.refs[rkey]

    def _record(self, head: dict[str, Any], m: Measured, latency_what: str, key: str, ss: Any) -> None:
        from pncd.bench.accuracy import compare
        from pncd.data.spacing import case_spacing
        from pncd.scoring import score

        spacing, unit = case_spacing(ss)  # HD95 and ASSD in mm where the headers say so, else pixels
        metrics = score(m.preds, ss.masks, ss.case_ids, int(ss.spec.num_classes), distances=True, spacing=spacing,
                        unit=unit)
        summary, cases = metrics.summary(), metrics.per_case()
        ref_id = head["ref_id"]
        cmp = None
        if ref_id is not None:
            ref = next(e for e in self.entries if e["id"] == ref_id)
            cmp = compare(cases, self.per_case[ref_id], summary, ref, m.preds, self.preds[ref_id],
                          n_boot=self.o.n_boot, seed=self.o.seed)
        ident = head["id"]
        self.entries.append({**head, "data_fingerprint": self.fingerprints[key], "where": m.where, **m.fields, **m.info,
                             "latency_what": latency_what,
                             **rep.accuracy_fields(summary), **rep.compare_fields(cmp)})
        self.per_case[ident], self.settings[ident] = cases, m.settings
        self.preds[ident], self.split_of[ident] = m.preds, key

    def interleave(self) -> None:
        """Replace each entry's latency by the interleaved timing (where the site offers it), add its
        CV, the load, the stability verdict and, for artifacts, the speed-up over the reference
        with its interval; warn about unstable rows."""
        from pncd.bench.interleave import speedup

        if self.o.interleave_rounds <= 0 or not hasattr(self.site, "interleave") or len(self.entries) < 1:
            return
        figures, machine = self.site.interleave()
        for e in self.entries:
            f = figures.get(e["id"])
            if f is None:
                continue
            # the row's whole distribution from the interleaved samples (min <= median <= p99 <= max of one set)
            e.update({f"latency_ms_{k}": v for k, v in f["stats"].items() if f"latency_ms_{k}" in e})
            e.update(latency_ms_median_sequential=e.get("latency_ms_median"), latency_ms_median=f["median_ms"],
                     latency_cv=f["cv"], latency_unstable=f["unstable"], latency_unstable_why=f["unstable_why"],
                     latency_threads=f["threads"], latency_threads_tried=", ".join(f"{n}: {ms:.3f} ms" for n, ms in f["threads_tried"].items()),
                     load_average=max(v for v in (machine["load_before"], machine["load_after"], 0.0) if v is not None),
                     timing=f"interleaved: {machine['rounds']} rounds x {machine['iterations_per_round']} iterations")
            ref = figures.get(e.get("ref_id") or "")
            if ref is not None:
                sp = speedup(ref, f, n_boot=self.o.n_boot, seed=self.o.seed)
                lo, hi = sp.pop("speedup_ci")
                e.update(sp, speedup_ci_lo=lo, speedup_ci_hi=hi)  # report entries stay flat
                e["latency_unstable"] = e["latency_unstable"] or ref["unstable"]
                why = [w for w in (f["unstable_why"] or "").split("; ") if w]
                why += [f"reference: {w}" for w in (ref["unstable_why"] or "").split("; ") if w and w not in why]
                e["latency_unstable_why"] = "; ".join(why) or None
            if e["latency_unstable"]:
                self.log(f"warning: {e['id']}: timing unstable ({e['latency_unstable_why']}); its latency and speed-up "
                         "are marked in the report: rerun on an idle machine to trust them")

    def _unique(self, text: str) -> str:
        ident, out, i = _slug(text), _slug(text), 2
        while out in self.taken:
            out, i = f"{ident}-{i}", i + 1
        self.taken.add(out)
        return out

    def write_figures(self, tmp: Path) -> dict[str, Any]:
        """latency_dice.png and the overlays of each artifact's worst slices; the report's ``files``."""
        from pncd.privacy import case_alias
        from pncd.scoring import worst_slices
        from pncd.viz import save_png

        files: dict[str, Any] = {"plot": None, "overlays": []}
        if fig.plot_latency_dice(self.entries, tmp / "latency_dice.png"):
            files["plot"] = "latency_dice.png"
        if self.o.overlays <= 0:
            return files
        for e in self.entries:
            if e["kind"] != "artifact" or e["ref_id"] is None:
                continue
            ss = self.splits[self.split_of[e["id"]]]
            a_p, r_p = self.preds[e["id"]], self.preds[e["ref_id"]]
            for i in worst_slices(a_p, r_p, self.o.overlays):
                case = case_alias(ss.case_ids[i]) if self.o.anonymize else ss.case_ids[i]
                name = f"overlays/{e['id']}__{_slug(case)}_s{ss.slice_index[i]}.png"
                (tmp / "overlays").mkdir(exist_ok=True)
                scale = max(1, 256 // max(ss.masks.shape[1:]))  # small inputs are enlarged to be readable
                save_png(tmp / name, fig.disagreement_panel(ss.images[i], ss.masks[i], r_p[i], a_p[i]), scale=scale,
                         titles=fig.panel_titles(ss.masks[i], r_p[i], a_p[i]), legend=fig.PANEL_LEGEND,
                         caption=f"{e['name']} vs {e['ref_id']}: {case}, slice {ss.slice_index[i]}")
                files["overlays"].append(name)
        return files

    def report(self, files: dict[str, Any], threads: int, command: str, params: dict[str, Any]) -> Report:
        from pncd import __version__
        from pncd.bench.machine import device_machine, host_machine
        from pncd.io import versions
        from pncd.targets.cpu import isa_summary

        first_key, first = next(iter(self.splits.items()))
        o = self.o
        data = {"root": str(o.data) if o.data is not None else first.spec.root, "split": o.split,
                "fingerprint": self.fingerprints[first_key],
                "n_cases": len(dict.fromkeys(first.case_ids)), "n_slices": int(len(first.images)),
                "size": first.spec.size, "channels": first.spec.channels, "num_classes": first.spec.num_classes,
                "normalization": first.spec.normalization}
        return Report(
            schema=rep.SCHEMA, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), pncd_version=__version__,
            artifacts_verified=("sha256 against each manifest (run from a private copy of the files verified)"
                                if o.verify else "skipped (--no-verify)"),
            command=command, options=params,
            machine={**host_machine(), "bench_threads": threads, "cpu_isa": isa_summary()},
            device_machine=device_machine(self.site.env), versions=versions(), data=data, entries=self.entries,
            per_case=self.per_case, settings=self.settings, files=files, profile=self._profile_summaries())

    def _profile_summaries(self) -> dict[str, Any] | None:
        from pncd.bench.profile import summaries

        return summaries(self.profiles) if self.profiles else None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _stderr(msg: str) -> None:
    from pncd.console import warn

    warn(msg)
