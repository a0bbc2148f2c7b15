"""``pncd export`` with NNCF's quantization changed, to compare OpenVINO INT8 variants side by side.

    VARIANT=fast python bench/experiments/ov_int8_variants.py export RUN --target openvino \\
        --precision int8 --data path/to/lgg-flair --out runs/int8v/mnv2-fast --no-strict

``$VARIANT`` (comma-separated): ``fast`` (NNCF's fast bias correction instead of pncd's default,
the full one), ``align`` (NNCF's channel alignment on). The rest of the command line is pncd's, so
the artifact is benched with ``pncd bench`` like any other. The manifest records pncd's own
settings, not the variant's: name the output folder after it. Used for
``bench/results/int8/bias_correction.md``.
"""

from __future__ import annotations

import os
import sys

import nncf
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

_quantize = nncf.quantize


def _variant(*args, **kwargs):
    wanted = [v for v in os.environ.get("VARIANT", "").split(",") if v]
    if "fast" in wanted:
        kwargs["fast_bias_correction"] = True
    if "align" in wanted:
        advanced = kwargs.get("advanced_parameters") or AdvancedQuantizationParameters()
        advanced.disable_channel_alignment = False
        kwargs["advanced_parameters"] = advanced
    print(f"variant {wanted or ['none']}: fast_bias_correction={kwargs.get('fast_bias_correction')}", file=sys.stderr)
    return _quantize(*args, **kwargs)


nncf.quantize = _variant

if __name__ == "__main__":
    from pncd.cli import main

    main(sys.argv[1:])
