"""FID preprocessing: the exact steps from raw images to the FID Inception-v3's input.

The steps (identical for real and generated images; versioned as :data:`PREPROCESS_VERSION`)
are listed in :mod:`fissionvae.evaluation.fid`.
"""

from __future__ import annotations

import numpy as np
import torch

PREPROCESS_VERSION = "fid-pre-v1:round-uint8,grey-to-rgb,tf1-bilinear-299,(x-128)/128"
INCEPTION_SIZE = 299
ImageArray = np.ndarray | torch.Tensor


def _as_tensor(images: ImageArray) -> torch.Tensor:
    """Return ``images`` as a CPU tensor shaped B x C x H x W (C = 1 or 3)."""
    tensor = torch.as_tensor(images).detach().cpu()
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)
    if tensor.ndim != 4 or tensor.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be B x H x W or B x C x H x W with C = 1 or 3; got shape "
            f"{tuple(tensor.shape)} (channels-last arrays need a transpose to B x C x H x W)"
        )
    return tensor


def quantize_uint8(images: torch.Tensor) -> torch.Tensor:
    """Quantise images to uint8 values the way saving a PNG would.

    Parameters
    ----------
    images
        uint8 tensor (returned as is) or float tensor with values in [0, 1].

    Returns
    -------
    torch.Tensor
        uint8 tensor; floats become ``floor(255 * clip(x, 0, 1) + 0.5)`` (round half up).

    Raises
    ------
    TypeError
        For dtypes other than uint8 and floating point.
    """
    if images.dtype == torch.uint8:
        return images
    if not images.dtype.is_floating_point:
        raise TypeError(f"images must be uint8 or float in [0, 1]; got dtype {images.dtype}")
    scaled = images.to(torch.float64).clamp(0.0, 1.0) * 255.0 + 0.5
    return scaled.floor().to(torch.uint8)


def tf1_bilinear_matrix(size_in: int, size_out: int = INCEPTION_SIZE) -> torch.Tensor:
    """Interpolation matrix of TF1's legacy bilinear resize along one axis.

    Parameters
    ----------
    size_in, size_out
        Input and output lengths.

    Returns
    -------
    torch.Tensor
        float32 ``size_out x size_in`` matrix ``W`` such that ``W @ column`` resizes a column.
        Output index ``i`` reads input coordinate ``i * size_in / size_out`` (float32, as TF).
    """
    scale = torch.tensor(size_in / size_out, dtype=torch.float32)
    source = torch.arange(size_out, dtype=torch.float32) * scale
    lower = source.floor().to(torch.int64).clamp(max=size_in - 1)
    upper = (lower + 1).clamp(max=size_in - 1)
    frac = (source - lower.to(torch.float32)).to(torch.float64)
    rows = torch.arange(size_out)
    weights = torch.zeros(size_out, size_in, dtype=torch.float64)
    weights.index_put_((rows, lower), 1.0 - frac, accumulate=True)
    weights.index_put_((rows, upper), frac, accumulate=True)
    return weights.to(torch.float32)


def resize_tf1_bilinear(images: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """Resize a float B x C x H x W batch to ``size x size`` with TF1-style bilinear."""
    rows = tf1_bilinear_matrix(images.shape[-2], size)
    cols = tf1_bilinear_matrix(images.shape[-1], size)
    return rows @ images @ cols.T


def preprocess(images: ImageArray) -> torch.Tensor:
    """Turn a batch of images into the FID Inception-v3's input.

    Parameters
    ----------
    images
        numpy array or tensor, B x H x W or B x C x H x W with C = 1 or 3; uint8 (0..255) or
        float in [0, 1] (clipped, then rounded to uint8 as when saving a PNG).

    Returns
    -------
    torch.Tensor
        float32, B x 3 x 299 x 299, scaled as ``(x - 128) / 128``; see the module docstring
        for the exact steps (TF1-style bilinear resize).

    Raises
    ------
    ValueError
        For other shapes.
    TypeError
        For dtypes other than uint8 and floating point.
    """
    pixels = quantize_uint8(_as_tensor(images)).to(torch.float32)
    resized = resize_tf1_bilinear(pixels)
    if resized.shape[1] == 1:
        resized = resized.expand(-1, 3, -1, -1)
    return ((resized - 128.0) / 128.0).contiguous()
