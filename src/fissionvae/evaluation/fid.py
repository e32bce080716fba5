"""Fréchet Inception Distance: preprocessing, feature extraction, statistics and their cache.

Preprocessing (identical for real and generated images, versioned as :data:`PREPROCESS_VERSION`):

1. float images in [0, 1] are quantised to uint8 by rounding half up, ``floor(255 x + 0.5)``
   after clipping to [0, 1], exactly as saving them to PNG would; uint8 images pass unchanged;
2. grey images are repeated to 3 channels;
3. each image is resized to 299 x 299 with **TF1-style bilinear** interpolation
   (``tf.compat.v1.image.resize_bilinear`` with ``align_corners=False`` and no half-pixel
   centres, the resize inside the TensorFlow FID reference graph): output pixel ``i`` samples
   input coordinate ``i * in / out``.  This is *not* ``torch.nn.functional.interpolate``'s
   bilinear, which uses half-pixel centres; on 1,000 MNIST images the two differ by FID 3.4;
4. values are scaled as ``(x - 128) / 128``.

FID numbers are biased upwards roughly as c / N: compare only numbers computed with the same
number of images and the same extractor configuration.

The parts live in their own modules and are importable from here as well:
:mod:`~fissionvae.evaluation.fid_preprocess` (steps 1-4), :mod:`~fissionvae.evaluation.fid_extractor`
(the extractor Protocol, its cache identity and the torch Inception-v3 extractor),
:mod:`~fissionvae.evaluation.frechet` (statistics and the distance) and
:mod:`~fissionvae.evaluation.stats_cache` (the cache of reference statistics).
"""

from __future__ import annotations

from fissionvae.evaluation.fid_extractor import (
    FeatureExtractor,
    InceptionFeatures,
    extract_in_batches,
    extractor_identity,
)
from fissionvae.evaluation.fid_preprocess import (
    INCEPTION_SIZE,
    PREPROCESS_VERSION,
    ImageArray,
    preprocess,
    quantize_uint8,
    resize_tf1_bilinear,
    tf1_bilinear_matrix,
)
from fissionvae.evaluation.frechet import FeatureStats, feature_stats, fid_from_stats, frechet_distance, pooled_stats
from fissionvae.evaluation.stats_cache import StatsCache, _save_npz_atomic, array_sha256, real_stats

__all__ = [
    "INCEPTION_SIZE",
    "PREPROCESS_VERSION",
    "FeatureExtractor",
    "FeatureStats",
    "ImageArray",
    "InceptionFeatures",
    "StatsCache",
    "_save_npz_atomic",
    "array_sha256",
    "extract_in_batches",
    "extractor_identity",
    "feature_stats",
    "fid",
    "fid_from_stats",
    "frechet_distance",
    "pooled_stats",
    "preprocess",
    "quantize_uint8",
    "real_stats",
    "resize_tf1_bilinear",
    "tf1_bilinear_matrix",
]


def fid(real: FeatureStats, generated: ImageArray, extractor: FeatureExtractor) -> float:
    """FID of generated images against reference statistics (compare only equal counts)."""
    return fid_from_stats(real, feature_stats(extractor(generated)))
