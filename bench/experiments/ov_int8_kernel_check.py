"""Which OpenVINO CPU INT8 convolutions saturate on this CPU? One layer each, worst-case inputs.

Every u8 input is 255 and every weight the largest of its range, so the pairs of products that
kernels without VNNI add in int16 overflow it (2 x 255 x 127 > 32767) unless the kernel sums in
int32. Prints, per layer kind and weight range, the relative error of OpenVINO's output against
the exact sum (torch, float64) and the precision OpenVINO ran the layer in:

    OMP_NUM_THREADS=1 python bench/experiments/ov_int8_kernel_check.py

Measured on an AMD EPYC (AVX2 only): ordinary 1x1 and 3x3 convolutions with 8-bit weights 49% error,
7-bit weights exact; depthwise 3x3 exact with 8-bit weights; 7-bit activations (128 levels) run in f32.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import torch

C, H = 64, 16


def layer(kind: str, k: int, weight_max: int, act_levels: int) -> tuple[ov.Model, np.ndarray, np.ndarray]:
    hi = 2.55 if act_levels == 256 else 1.27
    x = ops.parameter([1, C, H, H], np.float32, name="x")
    xq = ops.fake_quantize(x, np.float32(0), np.float32(hi), np.float32(0), np.float32(hi), act_levels)
    shape = (C, 1, 1, k, k) if kind == "depthwise" else (C, C, k, k)
    w = np.full(shape, weight_max / 100, np.float32)
    lim = np.float32(1.27)
    wq = ops.fake_quantize(ops.constant(w), -lim, lim, -lim, lim, 255)
    pad = [k // 2] * 2
    y = (ops.group_convolution if kind == "depthwise" else ops.convolution)(xq, wq, [1, 1], pad, pad, [1, 1])
    image = np.full((1, C, H, H), hi, np.float32)
    wt = torch.from_numpy(w.reshape(C, 1, k, k) if kind == "depthwise" else w).double()
    ref = torch.nn.functional.conv2d(torch.from_numpy(image).double(), wt, padding=k // 2,
                                     groups=C if kind == "depthwise" else 1).numpy()
    return ov.Model([y], [x]), image, ref


def main() -> None:
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1"}
    for kind, k in (("ordinary", 1), ("ordinary", 3), ("depthwise", 3)):
        for weight_max, act_levels in ((127, 256), (63, 256), (127, 128)):
            model, image, ref = layer(kind, k, weight_max, act_levels)
            compiled = core.compile_model(model, "CPU", config)
            out = compiled(image)[0]
            ran = {str(op.get_rt_info()["runtimePrecision"].astype(str)) for op in compiled.get_runtime_model().get_ops()
                   if str(op.get_rt_info()["layerType"].astype(str)) == "Convolution"}
            err = float(np.abs(out - ref).max() / np.abs(ref).max())
            print(f"{kind} {k}x{k}, weights up to {weight_max}, {act_levels} activation levels: "
                  f"relative error {err:.2e}, ran in {', '.join(sorted(ran))}")


if __name__ == "__main__":
    main()
