"""The torch reference as a runner: the same dict-in, dict-out life cycle as the exports."""

from __future__ import annotations

from typing import Any

import numpy as np

from pncd.targets.base import Runner


class TorchRunner(Runner):
    """Run an ``nn.Module`` in eval mode under ``torch.inference_mode``.

    Feeds ``{input_name: array}`` and returns ``{output_name: logits}``; ``threads`` sets
    torch's intra-op threads while active (restored on deactivate).
    """

    name = "torch"

    def __init__(self, model, input_name: str = "image", output_name: str = "logits",
                 device: str = "cpu", threads: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.input_name = input_name
        self.output_name = output_name
        self.device = device
        self.threads = threads
        self._old_threads: int | None = None

    def _activate(self) -> None:
        import torch

        if self.threads:
            self._old_threads = torch.get_num_threads()
            torch.set_num_threads(int(self.threads))
        self.model = self.model.to(self.device).eval()

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(feed[self.input_name], dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            y = self.model(x)
        if self.device != "cpu":
            torch.cuda.synchronize()
        return {self.output_name: y.float().cpu().numpy()}

    def _deactivate(self) -> None:
        if self._old_threads is not None:
            import torch

            torch.set_num_threads(self._old_threads)
            self._old_threads = None

    def input_names(self) -> list[str]:
        return [self.input_name]

    @property
    def settings(self) -> dict[str, Any]:
        import torch

        return {"runner": type(self).__name__, "runtime": "torch", "version": torch.__version__,
                "device": self.device, "threads": self.threads or torch.get_num_threads(), "mode": "eager fp32"}
