"""Image grids (PNG or JPEG) and loss-curve plots (written atomically)."""

from __future__ import annotations

import io
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from fissionvae.io import atomic_write_bytes


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 2, scale: int = 1) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> uint8 (rows, cols[, 3]) grid with white padding."""
    n, c, h, w = images.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol_rows = int(math.ceil(n / nrow))
    grid = np.full((ncol_rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    pix = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = pix[i]
    grid = grid[..., 0] if c == 1 else grid
    return np.kron(grid, np.ones((scale, scale) + ((1,) if c == 3 else ()), dtype=np.uint8)) if scale > 1 else grid


IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def image_format(path: str | Path) -> str:
    """The Pillow format an image path's suffix asks for; a ValueError naming the path for any other suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise ValueError(f"{path}: unsupported image type {suffix or '(no suffix)'!r}; use .png, .jpg or .jpeg")
    return IMAGE_FORMATS[suffix]


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, scale: int = 2) -> Path:
    """Write an image grid atomically, as PNG or JPEG (quality 95) as the path's suffix says."""
    fmt = image_format(path)
    buf = io.BytesIO()
    Image.fromarray(image_grid(images, nrow, scale=scale)).save(
        buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {})
    )
    return atomic_write_bytes(path, buf.getvalue())


GREY_LEVELS = 32  # results pages keep 32 grey levels: about half the PNG size, no visible change


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def quantise_grey(grid: np.ndarray, levels: int = GREY_LEVELS) -> np.ndarray:
    """A uint8 greyscale array reduced to ``levels`` grey levels (a divisor of 256)."""
    step = 256 // levels
    return (grid // step * step).astype(np.uint8)


def save_grey_grid(images: Tensor, path: str | Path, nrow: int | None = None, levels: int = GREY_LEVELS) -> Path:
    """A greyscale image grid as a small PNG (``levels`` grey levels), written atomically."""
    return atomic_write_bytes(path, _png_bytes(Image.fromarray(quantise_grey(image_grid(images, nrow), levels))))


def load_grey(path: str | Path) -> np.ndarray:
    """A PNG as a uint8 greyscale array (a clear error naming the file when it is not an image)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable PNG ({e})") from None


def _font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def save_mosaic(
    row_labels: list[str], col_labels: list[str], grids: list[list[np.ndarray | None]], path: str | Path
) -> Path:
    """Greyscale grids (uint8 arrays) in a labelled table (rows x columns) as one PNG; None cells say 'pending'."""
    import textwrap

    from PIL import ImageDraw

    present = [a for row in grids for a in row if a is not None]
    ch = max((a.shape[0] for a in present), default=60)
    cw = max((a.shape[1] for a in present), default=60)
    font, pad, line = _font(), 6, 14
    wrapped = [textwrap.wrap(label, 24) or [""] for label in row_labels]
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    label_w = 10 + int(max((draw.textlength(x, font=font) for w in wrapped for x in w), default=40))
    head = line * max(len(textwrap.wrap(c, max(8, cw // 7))) for c in col_labels) + pad
    img = Image.new("L", (label_w + len(col_labels) * (cw + pad), head + len(row_labels) * (ch + pad)), 255)
    draw = ImageDraw.Draw(img)
    for j, c in enumerate(col_labels):
        for k, text in enumerate(textwrap.wrap(c, max(8, cw // 7))):
            draw.text((label_w + j * (cw + pad), k * line), text, fill=0, font=font)
    for i, (lines, row) in enumerate(zip(wrapped, grids, strict=True)):
        y = head + i * (ch + pad)
        for k, text in enumerate(lines):
            draw.text((2, y + k * line), text, fill=0, font=font)
        for j, a in enumerate(row):
            if a is not None:
                img.paste(Image.fromarray(a), (label_w + j * (cw + pad), y))
            else:
                draw.text((label_w + j * (cw + pad) + 4, y + ch // 2), "pending", fill=128, font=font)
    return atomic_write_bytes(path, _png_bytes(img))


def save_figure(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


LOSS_CURVES = {"train": ("train/loss", "train/recon"), "test": ("test/loss",)}


def plot_losses(metrics: list[dict], path: str | Path, title: str = "") -> Path:
    """Left: the participants' train loss and reconstruction term; right: test loss, overall and per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for m in metrics:
        if m.get("type") != "round":
            continue
        for key, value in m.items():
            if (
                key in LOSS_CURVES["train"]
                or (key.startswith("test/") and key.endswith("/loss"))
                or key in LOSS_CURVES["test"]
            ):
                series[key].append((m["round"], value))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted(series):
        xs, ys = zip(*series[key], strict=True)
        ax = axes[0] if key.startswith("train/") else axes[1]
        ax.plot(xs, ys, label=key, marker="." if len(xs) < 30 else None, linewidth=2.2 if key == "test/loss" else 1.2)
    _label_round_panels(
        axes, ("train (this round's participants)", "test (fixed subset per group)"), "nats / image", title
    )
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def _label_round_panels(axes, names: tuple[str, ...], ylabel: str, title: str) -> None:
    """Axis labels, titles, grid and legend of per-round curve panels."""
    for ax, name in zip(axes, names, strict=True):
        ax.set_xlabel("round (centralised: epoch)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {name}" if title else name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)


GAN_CURVES = ("d_loss", "g_loss")


def plot_gan_losses(metrics: list[dict], path: str | Path, title: str = "") -> Path:
    """A DCGAN run: discriminator and generator losses per round, train (left) and test (right).

    The right panel also shows D's mean output on real and on generated test-batch images.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [m for m in metrics if m.get("type") == "round"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, split in zip(axes, ("train", "test"), strict=True):
        keys = [f"{split}/{k}" for k in GAN_CURVES + (("d_real", "d_fake") if split == "test" else ())]
        for key in keys:
            points = [(m["round"], m[key]) for m in rounds if key in m]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, label=key, marker="." if len(xs) < 30 else None)
    names = ("train (this round's participants)", "test (fixed test images + fresh samples)")
    _label_round_panels(axes, names, "nats / image (D outputs: probability)", title)
    out = save_figure(fig, path)
    plt.close(fig)
    return out
