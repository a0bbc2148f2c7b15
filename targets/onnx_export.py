"""torch -> ONNX with every exporter option pinned, then ``onnx.checker``.

The exporter is ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter, the
default since PyTorch 2.9). The legacy TorchScript exporter (``dynamo=False``) is deprecated
and fails on graphs such as ``max_unpool2d``; the dynamo exporter handled every registered
network. Options are pinned rather than left to defaults that changed between releases:
opset 18, ``external_data=False`` (one self-contained file, no ``*.onnx.data`` beside it),
``optimize=True`` (onnxscript's graph clean-up: constant folding, dead code), input "image"
-> output "logits", batch static (1) or dynamic ("batch"). The options go into the manifest.
"""

from __future__ import annotations

import io
import re
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from pncd.errors import RunFailed
from pncd.targets.graph_rewrite import rewrite_file

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
OPSET = 18
MAX_DYNAMIC_BATCH = 4096


def exporter_options(dynamic_batch: bool) -> dict[str, Any]:
    """The pinned options, as recorded in the manifest."""
    import torch

    return {
        "exporter": "torch.onnx.export",
        "dynamo": True,
        "opset_version": OPSET,
        "external_data": False,
        "optimize": True,
        "verify": False,
        "input_names": [INPUT_NAME],
        "output_names": [OUTPUT_NAME],
        "dynamic_batch": bool(dynamic_batch),
        "dynamic_shapes": {INPUT_NAME: {0: f"batch in [1, {MAX_DYNAMIC_BATCH}]"}} if dynamic_batch else None,
        "torch": torch.__version__,
    }


def export_onnx(model, path: str | Path, channels: int, height: int, width: int,
                dynamic_batch: bool = False, seed: int = 0) -> dict[str, Any]:
    """Export ``model`` (eval mode) to ``path`` and check the file; returns the exporter options.

    A failing operator becomes a one-line PncdError naming the operator and, where it can be
    found, the module that calls it.
    """
    import onnx
    import torch

    path = Path(path)
    model = model.eval()
    gen = torch.Generator().manual_seed(seed)
    # An example batch of 2 for a dynamic batch: torch.export specialises dimensions of size 1.
    example = torch.randn(2 if dynamic_batch else 1, channels, height, width, generator=gen)
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},)
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                dynamic_shapes=dynamic_shapes,
                optimize=True,
                verify=False,
                report=False,
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types; all become one line
        raise RunFailed(describe_export_error(e, model, example)) from None
    side = path.with_name(path.name + ".data")
    if side.exists():  # external_data=False must give one file; refuse a split one
        raise RunFailed(f"{path}: the exporter wrote weights to {side.name} despite external_data=False; "
                        "the model may exceed 2 GB (ONNX's single-file limit)")
    rewrites = rewrite_file(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise RunFailed(f"{path}: the exported ONNX fails onnx.checker ({str(e).splitlines()[0][:200]})") from None
    graph_names(path)  # the names must have survived the exporter's renaming
    return {**exporter_options(dynamic_batch), "rewrites": rewrites}


def graph_names(path: str | Path) -> tuple[str, str]:
    """(input name, output name) of a one-input, one-output ONNX file, checked to be ours."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    inputs = [i.name for i in m.graph.input if i.name not in inits]
    outputs = [o.name for o in m.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise RunFailed(f"{path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, found {inputs} -> "
                        f"{outputs}; a network must take one image tensor and return one logits tensor")
    return inputs[0], outputs[0]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def describe_export_error(err: Exception, model, example) -> str:
    """One line: what failed, the operator and the module calling it (when they can be found)."""
    text = _ANSI.sub("", str(err))
    name = type(model).__name__
    op = None
    m = re.search(r"No ONNX function found for <OpOverload\(op='([\w.:]+)', overload='(\w+)'\)>", text)
    if m:
        op = f"{m.group(1)}.{m.group(2)}"
    else:
        m = re.search(r"target=torch\.ops\.([\w.]+)", text)
        if m:
            op = m.group(1)
    if op:
        where = _module_calling(model, example, op)
        at = f" (called in module {where})" if where else ""
        return (f"ONNX export of {name} failed: operator {op}{at} has no ONNX translation in torch "
                f"{_torch_version()}, opset {OPSET}; replace it with supported operations or register a "
                "translation (torch.onnx.export custom_translation_table)")
    summary = _summary_line(text)
    return f"ONNX export of {name} failed ({type(err).__name__}: {summary}); see the torch.onnx documentation"


def _summary_line(text: str) -> str:
    """The most specific line of a torch.onnx error: the last exception in its summary."""
    if "## Exception summary" in text:
        tail = text.split("## Exception summary", 1)[1]
        lines = [ln.strip() for ln in tail.splitlines() if ln.strip().startswith("<class")]
        if lines:
            return re.sub(r"^<class '[\w.]+'>:\s*", "", lines[0])[:300]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else "no message")[:300]


def _module_calling(model, example, op: str) -> str | None:
    """The dotted path and class of the module that calls ``op`` (re-traced with torch.export)."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(model, (example,), strict=False)
    except Exception:
        return None
    for node in ep.graph.nodes:
        if node.op == "call_function" and str(node.target) == op:
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path, cls = list(stack.values())[-1]
                cls = str(cls).rsplit(".", 1)[-1]
                return f"'{path}' ({cls})" if path else f"(top level, {cls})"
    return None


def _torch_version() -> str:
    import torch

    return torch.__version__
