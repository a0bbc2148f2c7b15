"""Overlays a person can read: image in gray, ground truth in green, prediction in red, their
difference, a legend and the slice's Dice in the picture."""

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


GT_COLOR = (0, 220, 0)  # ground truth
PRED_COLOR = (255, 40, 40)  # prediction
MISSED_COLOR = (0, 220, 0)  # in the ground truth only (false negative)
EXTRA_COLOR = (255, 40, 40)  # in the prediction only (false positive)
BOTH_COLOR = (150, 150, 150)  # in both

OVERLAY_TITLES = ["image", "ground truth", "prediction", "difference"]
OVERLAY_LEGEND = [(GT_COLOR, "ground truth / missed"), (PRED_COLOR, "prediction / extra"),
                  (BOTH_COLOR, "both agree")]


def slice_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of one slice's foreground (1.0 when both are empty)."""
    p, g = pred > 0, gt > 0
    denom = int(p.sum()) + int(g.sum())
    return 1.0 if denom == 0 else 2.0 * int((p & g).sum()) / denom


def difference(base: np.ndarray, a: np.ndarray, b: np.ndarray, only_a: tuple[int, int, int],
               only_b: tuple[int, int, int]) -> np.ndarray:
    """``base`` dimmed, with the pixels in both masks gray, in ``a`` only ``only_a``, in ``b`` only ``only_b``."""
    out = (base // 3).copy()
    out[(a > 0) & (b > 0)] = BOTH_COLOR
    out[(a > 0) & ~(b > 0)] = only_a
    out[(b > 0) & ~(a > 0)] = only_b
    return out


def overlay(image: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """RGB uint8 panels: [image | ground truth outline | prediction outline | difference
    (green: missed, red: extra, gray: both)]."""
    g = to_uint8(image)
    base = np.stack([g, g, g], axis=-1)
    with_gt, with_pred = base.copy(), base.copy()
    with_gt[outline(gt > 0)] = GT_COLOR
    with_pred[outline(pred > 0)] = PRED_COLOR
    sep = np.full((g.shape[0], 2, 3), 255, np.uint8)
    diff = difference(base, gt, pred, MISSED_COLOR, EXTRA_COLOR)
    return np.concatenate([base, sep, with_gt, sep, with_pred, sep, diff], axis=1)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except TypeError:
        return ImageFont.load_default()


def _wrap(draw, text: str, font, width: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels."""
    lines, cur = [], ""
    for word in text.split(" "):
        trial = f"{cur} {word}" if cur else word
        if cur and draw.textlength(trial, font=font) > width:
            lines.append(cur)
            cur = word
        else:
            cur = trial
    return lines + ([cur] if cur else [])


def save_png(path: str | Path, rgb: np.ndarray, scale: int = 1, titles: list[str] | None = None,
             caption: str | None = None, legend: list[tuple[tuple[int, int, int], str]] | None = None) -> None:
    """Write ``rgb`` as PNG (enlarged ``scale`` times). ``titles``: one per panel of a row of
    equal panels separated by 2-pixel bars (as :func:`overlay` makes), written above each (wrapped
    to the panel's width); ``caption``: a line above (e.g. the case, slice and Dice), wrapped to the
    image's width; ``legend``: colour swatches with their meaning, below the image."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    font = _font(12)
    draw = ImageDraw.Draw(im)
    line_h = 15
    cap = _wrap(draw, caption, font, im.width - 8) if caption else []
    n = len(titles or [])
    panel_w = (im.width - 2 * scale * (n - 1)) / n if n else im.width
    heads = [_wrap(draw, t, font, int(panel_w) - 6) for t in titles or []]
    head_lines = max((len(h) for h in heads), default=0)
    top = line_h * (len(cap) + head_lines) + (4 if cap or heads else 0)
    bottom = line_h + 6 if legend else 0
    canvas = Image.new("RGB", (im.width, im.height + top + bottom), (255, 255, 255))
    canvas.paste(im, (0, top))
    draw = ImageDraw.Draw(canvas)
    y = 2
    for line in cap:
        draw.text((4, y), line, fill=(0, 0, 0), font=font)
        y += line_h
    for k, head in enumerate(heads):
        for j, line in enumerate(head):
            draw.text((int(k * (panel_w + 2 * scale)) + 4, y + j * line_h), line, fill=(0, 0, 0), font=font)
    if legend:
        x, y = 4, top + im.height + 4
        for color, label in legend:
            draw.rectangle((x, y + 2, x + 10, y + 12), fill=tuple(color), outline=(0, 0, 0))
            draw.text((x + 14, y), label, fill=(0, 0, 0), font=font)
            x += 14 + int(draw.textlength(label, font=font)) + 14
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
