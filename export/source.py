"""The run ``pncd export`` exports: its network, configuration and data spec, loaded once.

The checkpoint and ``config.json`` are each read once: the SHA-256 the manifest records
(``source.checkpoint_sha256``, ``source.config_sha256``) is that of the very bytes the weights
and the configuration were parsed from (:func:`pncd.checkpoint.load_run`), so a file replaced
while an export runs cannot make the manifest vouch for weights other than the exported ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pncd.errors import PncdError

SIZE_MULTIPLE = 16


@dataclass
class Source:
    """The run being exported: its model, config and the data spec it is checked on."""

    run_dir: Path
    checkpoint: Path
    model: Any
    cfg: dict[str, Any]
    data: dict[str, Any]
    channels: int
    num_classes: int
    size: tuple[int, int]
    qdq_onnx: Path | None = None  # INT8 of a QAT run (pncd qat): its quantized ONNX
    checkpoint_sha256: str | None = None  # of the bytes the weights were loaded from
    config_sha256: str | None = None  # of the bytes config.json was parsed from


def qat_onnx(run_dir: Path, cfg: dict[str, Any], opts: Any) -> Path | None:
    """A QAT run's QDQ ONNX when INT8 is asked of one, else None (the usual calibrated route)."""
    if cfg.get("kind") != "qat" or opts.precision != "int8":
        return None
    path = run_dir / cfg["qat"]["qdq_onnx"]
    if not path.is_file():
        raise PncdError(f"{run_dir} is a QAT run but has no {path.name}; run pncd qat again")
    size = (int(cfg["data"]["size"]),) * 2
    if opts.input_size and tuple(opts.input_size) != size:
        raise PncdError(f"--input-size: a QAT run's INT8 ONNX is fixed at {size[0]}x{size[1]}; drop the option")
    return path


def load_source(run: str | Path, opts: Any) -> Source:
    """Load the run (config, checkpoint) and settle the data root and the input size (``opts``:
    the export's :class:`~pncd.export.pipeline.ExportOptions`), or fail in one line."""
    from pncd.checkpoint import load_run
    from pncd.console import warn
    from pncd.rundir import incomplete_warning, run_progress

    run_dir = Path(run).parent if Path(run).is_file() else Path(run)  # validate() refused an --out onto it
    loaded = load_run(run)  # a clear error for a directory that is not a run
    model, cfg = loaded.model, loaded.cfg
    stopped = incomplete_warning(run, run_progress(run, cfg), "exporting")  # the manifest records it too
    if stopped:
        warn(stopped)
    data = dict(cfg.get("data") or {})
    if not data:
        raise PncdError(f"{run}/config.json has no data spec; re-run training with this pncd version")
    if opts.data:
        if not Path(opts.data).is_dir():
            raise PncdError(f"--data {opts.data}: no such directory")
        data["root"] = str(Path(opts.data).resolve())
    channels = int(cfg["model"].get("in_channels", data.get("channels", 1)))
    num_classes = int(cfg["model"].get("num_classes", data.get("num_classes", 2)))
    size = opts.input_size or (int(data["size"]), int(data["size"]))
    multiple = max(SIZE_MULTIPLE, int(getattr(model, "size_multiple", SIZE_MULTIPLE)))
    if size[0] % multiple or size[1] % multiple:
        what = "--input-size" if opts.input_size else "the run's image size"
        raise PncdError(f"{what} {size[0]}x{size[1]} does not suit {cfg['model'].get('name')}: it needs sides "
                        f"divisible by {multiple}; pass --input-size HxW (e.g. {multiple * 4}x{multiple * 4})")
    return Source(run_dir, loaded.checkpoint, model, cfg, data, channels, num_classes, size,
                  qat_onnx(run_dir, cfg, opts), loaded.checkpoint_sha256, loaded.config_sha256)
