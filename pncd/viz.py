"""Overlays a person can read: image in gray, ground truth in green, prediction in red."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pncd.io import atomic_path


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(C,H,W) or (H,W) float image -> (H,W) uint8, stretched to its 1st-99th percentile."""
    img = image[0] if image.ndim == 3 else image
    lo, hi = np.percentile(img, [1, 99])
    return (np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a mask (the mask minus its 4-neighbour erosion)."""
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


OVERLAY_TITLES = ["image", "ground truth (green)", "prediction (red)"]


def overlay(image: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """RGB uint8 panel: [image | image + GT outline (green) | image + prediction outline (red)]."""
    g = to_uint8(image)
    base = np.stack([g, g, g], axis=-1)
    with_gt, with_pred = base.copy(), base.copy()
    with_gt[outline(gt > 0)] = (0, 255, 0)
    with_pred[outline(pred > 0)] = (255, 0, 0)
    sep = np.full((g.shape[0], 2, 3), 255, np.uint8)
    return np.concatenate([base, sep, with_gt, sep, with_pred], axis=1)


def save_png(path: str | Path, rgb: np.ndarray, scale: int = 1, titles: list[str] | None = None,
             caption: str | None = None) -> None:
    """Write ``rgb`` as PNG (enlarged ``scale`` times). ``titles``: one per panel of a row of
    equal panels separated by 2-pixel bars (as :func:`overlay` makes), written above each;
    ``caption``: one line above the titles (e.g. the case and slice)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    lines = int(bool(titles)) + int(bool(caption))
    if lines:
        line_h = 14
        canvas = Image.new("RGB", (im.width, im.height + line_h * lines + 4), (255, 255, 255))
        canvas.paste(im, (0, line_h * lines + 4))
        draw = ImageDraw.Draw(canvas)
        y = 2
        if caption:
            draw.text((4, y), caption, fill=(0, 0, 0))
            y += line_h
        if titles:
            n = len(titles)
            panel_w = (im.width - 2 * scale * (n - 1)) / n
            for k, t in enumerate(titles):
                draw.text((int(k * (panel_w + 2 * scale)) + 4, y), t, fill=(0, 0, 0))
        im = canvas
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
