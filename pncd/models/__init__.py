"""Model registry: ``create(name, in_channels, num_classes)`` and ``list_models()``.

Every network returns logits ``(B, num_classes, H, W)`` at the input's size, accepts any
input size divisible by 16 and 1 or 3 channels, and declares its distillation taps as data:
``model.taps = {"low": Tap(module, channels, stride), "high": Tap(...)}`` where ``module`` is a
dotted module path (as in ``named_modules()``) whose *output* is the feature.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from pncd.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


@dataclass(frozen=True)
class Tap:
    """A feature to distil: the output of ``module`` has ``channels`` channels at ``stride``."""

    module: str
    channels: int
    stride: int

    def to_dict(self) -> dict:
        return asdict(self)


def register_model(name: str, role: str, paper_params_m: float | None = None):
    """Register a factory ``fn(in_channels, num_classes, **kw) -> nn.Module``.

    ``role`` is "student" or "teacher"; ``paper_params_m`` the reference parameter count in
    millions at 2 classes (checked by the model tests).
    """
    return MODELS.register(name, role=role, paper_params_m=paper_params_m)


def create(name: str, in_channels: int = 1, num_classes: int = 2, **kwargs) -> nn.Module:
    """Build a registered network; records how it was built on ``model.pncd_spec``."""
    _import_all()
    model = MODELS.get(name)(in_channels=in_channels, num_classes=num_classes, **kwargs)
    setattr(model, "pncd_spec", {"name": name, "in_channels": in_channels, "num_classes": num_classes, **kwargs})
    if not isinstance(getattr(model, "taps", None), dict):
        raise TypeError(f"model {name!r} does not declare its taps")
    return model


def list_models(role: str | None = None) -> list[str]:
    _import_all()
    return MODELS.names(role=role) if role else MODELS.names()


def model_info(name: str) -> dict:
    _import_all()
    return MODELS.meta(name)


def init_convs(model: nn.Module) -> None:
    """He (fan-out) initialisation of every conv and transposed conv, as torchvision's ResNet."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_input_size(x: torch.Tensor, multiple: int, network: str) -> None:
    """Raise a PncdError unless both sides of ``x`` are multiples of ``multiple``.

    Networks stricter than "divisible by 16" declare ``model.size_multiple`` and call this at
    the top of ``forward``. Skipped while tracing or compiling (ONNX export): the sizes are
    symbolic there, and an exported graph needs the same sizes as the network it came from.
    """
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % multiple or w % multiple:
        from pncd.errors import PncdError

        ok = ", ".join(str(multiple * k) for k in range(1, 5))
        raise PncdError(
            f"{network} needs input height and width divisible by {multiple}, got {h}x{w}; "
            f"resize or crop to a valid size ({ok}, ...), e.g. --size {multiple * max(1, round(max(h, w) / multiple))}"
        )


class FeatureTaps:
    """Collect module outputs by dotted path with forward hooks (works for any nn.Module).

    Usage::

        with FeatureTaps(model, ["encoder.layer2"]) as taps:
            logits = model(x)
        feat = taps["encoder.layer2"]
    """

    def __init__(self, model: nn.Module, modules: list[str]) -> None:
        from pncd.errors import PncdError

        named = dict(model.named_modules())
        missing = [m for m in modules if m not in named]
        if missing:
            raise PncdError(
                f"module(s) {missing} not found in {type(model).__name__}; "
                f"some valid names: {[n for n in named if n][:12]}"
            )
        self.features: dict[str, torch.Tensor] = {}
        self._handles = [named[m].register_forward_hook(self._hook(m)) for m in dict.fromkeys(modules)]

    def _hook(self, name: str):
        def hook(_mod, _inp, out):
            if isinstance(out, (tuple, list)):
                out = out[0]
            self.features[name] = out

        return hook

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.features[name]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "FeatureTaps":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


_IMPORTED = False


def _import_all() -> None:
    """Import the architecture modules so their factories register (done lazily)."""
    global _IMPORTED
    if _IMPORTED:
        return
    _IMPORTED = True
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
