"""U-Net specifics: the base width sets the size; bad widths are a clear error."""

from __future__ import annotations

import pytest

from pncd import models
from pncd.errors import PncdError


def test_base_width_scales_parameters_and_taps() -> None:
    small = models.create("unet", in_channels=1, num_classes=2, base=8)
    wide = models.create("unet", in_channels=1, num_classes=2, base=16)
    assert small.taps["low"].channels == 16 and small.taps["high"].channels == 64
    assert wide.taps["high"].channels == 128
    # Convs dominate and scale with width squared: doubling the base roughly quadruples the count.
    ratio = models.count_parameters(wide) / models.count_parameters(small)
    assert 3.5 < ratio < 4.1
    assert small.pncd_spec["base"] == 8  # recorded so a run rebuilds the same network


def test_odd_base_is_rejected() -> None:
    with pytest.raises(PncdError, match="base"):
        models.create("unet", base=7)
