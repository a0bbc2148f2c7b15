"""Fixtures the target tests share with the bench tests: a real sshd on 127.0.0.1 and tiny ONNX models
(defined in tests/bench/conftest.py)."""

from tests.bench.conftest import sshd, tiny_images, tiny_onnx

__all__ = ["sshd", "tiny_images", "tiny_onnx"]  # pytest fixtures
