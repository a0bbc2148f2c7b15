"""Run directories: weights as safetensors, the resolved configuration as JSON.

A run directory written by ``pncd train`` / ``pncd distill`` holds::

    config.json          resolved configuration: model spec + taps, data spec, recipe, versions
    best.safetensors     weights with the best validation Dice
    last.safetensors     weights after the last finished epoch
    last_state.pt        optimizer / scheduler / RNG / progress, for --resume (tensors only)
    log.jsonl            one JSON object per logged step and per epoch

Loading never runs code from a file: weights come from safetensors, the training state
from ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pncd.errors import PncdError
from pncd.io import atomic_path
from pncd.options import CONFIG

BEST = "best.safetensors"
LAST = "last.safetensors"
STATE = "last_state.pt"


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    model = unwrap(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "pt"}
    spec = getattr(model, "pncd_spec", None)
    if spec:
        meta["model"] = str(spec.get("name"))
    meta.update(metadata or {})
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    """(tensors, metadata, SHA-256) of a safetensors checkpoint, all from ONE read of the file:
    the hash is that of the very bytes the weights come from (a file replaced meanwhile cannot
    make them differ)."""
    import hashlib
    import json
    import struct

    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise PncdError(f"{path}: checkpoint not found")
    try:
        data = path.read_bytes()
        (size,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8:8 + size]).get("__metadata__") or {}
        state = load(data)
    except (SafetensorError, OSError, ValueError, struct.error, AttributeError) as e:
        raise PncdError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    return state, dict(meta), hashlib.sha256(data).hexdigest()


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load safetensors weights; a checkpoint of another architecture is a clear error."""
    state, meta, _sha = read_weights(path)
    return fit_weights(model, Path(path), state, meta)


def fit_weights(model: nn.Module, path: Path, state: dict[str, torch.Tensor], meta: dict[str, str]) -> nn.Module:
    """Load ``state`` (read from ``path``) into ``model``; another architecture is a clear error."""
    want = (getattr(model, "pncd_spec", None) or {}).get("name")
    have = meta.get("model")
    if want and have and want != have:
        raise PncdError(f"{path} holds weights of {have!r}, not {want!r}; pass a checkpoint of {want!r}")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        detail = (
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:2]}), {len(shapes)} of another shape (e.g. {shapes[:2]})"
        )
        raise PncdError(
            f"{path} does not fit {want or type(model).__name__}: {detail}; "
            "is it a checkpoint of another architecture or class count?"
        )
    model.load_state_dict(state)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if isinstance(inner, nn.Module):
            model = inner
        elif hasattr(model, "_orig_mod"):
            model = getattr(model, "_orig_mod")
        else:
            return model


def read_run_config(run: str | Path) -> dict[str, Any]:
    return _run_config(run)[0]


def _run_config(run: str | Path) -> tuple[dict[str, Any], str]:
    """(the checked config.json of ``run``, the SHA-256 of the bytes it was parsed from)."""
    import hashlib
    import json

    run = Path(run)
    if run.is_file():
        run = run.parent
    cfg_path = run / CONFIG
    if not cfg_path.is_file():
        raise PncdError(f"{run} is not a pncd run (no {CONFIG}); pass the --out directory of pncd train/distill")
    try:
        raw = cfg_path.read_bytes()
        cfg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise PncdError(f"{cfg_path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except (OSError, ValueError) as e:
        raise PncdError(f"{cfg_path}: not readable as JSON ({e})") from None
    fix = "pass the --out directory of pncd train/distill, or train the run again"
    if not isinstance(cfg, dict):
        raise PncdError(f"{cfg_path}: not a pncd run configuration (a JSON object is expected); {fix}")
    model = cfg.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise PncdError(f"{cfg_path}: has no 'model' with a 'name' (not a pncd run configuration, or damaged); {fix}")
    for key in ("data", "options"):
        if cfg.get(key) is not None and not isinstance(cfg[key], dict):
            raise PncdError(f"{cfg_path}: '{key}' is {type(cfg[key]).__name__}, not an object; {fix}")
    data = cfg.get("data") or {}
    for key in ("size", "channels", "num_classes"):
        if key in data and (not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 1):
            raise PncdError(f"{cfg_path}: data '{key}' is {data[key]!r}, not a positive integer; {fix}")
    return cfg, hashlib.sha256(raw).hexdigest()


def checkpoint_path(run: str | Path, which: str = "best") -> Path:
    """``run`` may be a run directory or a ``.safetensors`` file inside one."""
    run = Path(run)
    if run.suffix == ".safetensors":
        return run
    path = run / (BEST if which == "best" else LAST)
    if not path.is_file():
        other = run / (LAST if which == "best" else BEST)
        if other.is_file():
            return other
        raise PncdError(f"{run} has no checkpoint ({BEST} or {LAST}); train it first or point at the right run")
    return path


def build_model(model_cfg: dict[str, Any], where: str | Path = "config.json") -> nn.Module:
    """A fresh network from the ``model`` part of a run's config (:func:`model_spec`'s output)."""
    from pncd import models

    spec = dict(model_cfg)
    name = spec.pop("name")
    spec.pop("taps", None)
    spec.pop("parameters", None)
    try:
        return models.create(name, **spec)
    except TypeError as e:  # a hand-edited or foreign model spec
        raise PncdError(f"{where}: the 'model' spec does not build {name!r} ({e}); train the run again") from None


def load_model(run: str | Path, which: str = "best", device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a run's network from its config.json and load its weights, in eval mode."""
    loaded = load_run(run, which, device)
    return loaded.model, loaded.cfg


@dataclass
class LoadedRun:
    """A run's network as :func:`load_run` loaded it, with the SHA-256 of the very bytes its
    weights and configuration were read from (what a manifest records)."""

    model: nn.Module
    cfg: dict[str, Any]
    checkpoint: Path
    checkpoint_sha256: str
    config_sha256: str


def load_run(run: str | Path, which: str = "best", device: str | torch.device = "cpu") -> LoadedRun:
    """:func:`load_model`, and the checkpoint it loaded with the hashes of what was read (each
    file read once: hashed and parsed from the same bytes)."""
    cfg, cfg_sha = _run_config(run)
    model = build_model(cfg["model"], Path(run) / CONFIG)
    path = checkpoint_path(run, which)
    state, meta, sha = read_weights(path)
    fit_weights(model, path, state, meta)
    return LoadedRun(model.to(device).eval(), cfg, path, sha, cfg_sha)


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The model part of a run's config: how to rebuild it, plus taps and size (informative)."""
    from pncd.models import count_parameters

    model = unwrap(model)
    spec = dict(getattr(model, "pncd_spec"))
    spec["taps"] = {k: t.to_dict() for k, t in getattr(model, "taps").items()}
    spec["parameters"] = count_parameters(model)
    return spec


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PncdError(f"{path}: training state could not be loaded safely ({e}); start without --resume") from None


def save_training_state(path: str | Path, epoch: int, global_step: int, best: float, optimizer: Any, scheduler: Any,
                        scaler: Any, extra: dict[str, nn.Module]) -> None:
    """``last_state.pt``: what --resume needs besides the weights (every RNG included)."""
    from pncd.runtime import rng_state

    state = {
        "epoch": torch.tensor(epoch),
        "global_step": torch.tensor(global_step),
        "best": torch.tensor(best, dtype=torch.float64),
        "optimizer": optimizer.state_dict(),
        "scheduler": {k: v for k, v in scheduler.state_dict().items()},
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
        "extra": {k: m.state_dict() for k, m in extra.items()},
    }
    save_state(path, state)


def load_training_state(path: str | Path, optimizer: Any, scheduler: Any, scaler: Any,
                        extra: dict[str, nn.Module]) -> tuple[int, int, float]:
    """Restore what :func:`save_training_state` wrote (the RNGs last); returns the epoch to start
    at, the steps done and the best val Dice so far."""
    from pncd.runtime import set_rng_state

    state = load_state(path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    for k, m in extra.items():
        m.load_state_dict(state["extra"][k])
    set_rng_state(state["rng"])
    return int(state["epoch"]) + 1, int(state["global_step"]), float(state["best"])


def write_run_config(
    run_dir: str | Path,
    model: nn.Module,
    data: dict[str, Any],
    options: dict[str, Any],
    kind: str = "train",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``config.json`` so later stages rebuild the model and its data with no flags.

    ``data`` is ``pncd.data.DataSpec.to_dict()`` (root, size, channels, num_classes,
    normalization, ...); ``options`` the command's resolved options.
    """
    import sys

    from pncd import __version__
    from pncd.io import versions, write_json

    cfg = {
        "pncd_version": __version__,
        "kind": kind,
        "model": model_spec(model),
        "data": dict(data),
        "options": dict(options),
        "versions": versions(),
        "command": " ".join(["pncd", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("pncd") else None,
        **(extra or {}),
    }
    write_json(Path(run_dir) / CONFIG, cfg)
    return cfg
