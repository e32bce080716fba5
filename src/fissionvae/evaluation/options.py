"""What ``fissionvae evaluate`` computes: :class:`EvalOptions`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalOptions:
    """What to compute; ``None`` sample count means the paper's protocol (as many as test images)."""

    num_samples: int | None = None
    iw_samples: int = 100
    pathway: str | None = None
    fid: bool = True
    inception: str | None = None
    # which runtime computes the FID features: auto (OpenVINO, else ONNX Runtime, else torch on
    # the CPU; torch on a GPU), torch, openvino or onnx; every fp32 runtime gives the same numbers
    fid_runtime: str = "auto"
    # bf16 FID features (OpenVINO's bf16 hint, or torch autocast): a quick look only; moves FID by
    # about 1, cached apart from fp32 and marked "paper_comparable": false in eval.json
    fid_bf16: bool = False
    is_classifier: str | None = None
    classifier_epochs: int = 2
    tsne: bool = True
    tsne_points: int = 1000
    allow_unfinished: bool = False
    data_dir: str | None = None
    progress: bool = True
    device: str = "cpu"  # the VAE (sampling, NLL, latents) and the Inception network run here
    # Fig. 10's prior swap: group g's samples draw z1 from group (g + 1) mod k's prior and decode
    # with g's own branch (two groups: the priors swapped). Needs a pathway that samples z1.
    prior_swap: bool = False
    # where the result goes: <run>/<result_name>.json and pictures in <run>/<result_name>/, so
    # evaluations of several pathways (or a prior swap) of one run live side by side
    result_name: str = "eval"
    # evaluate against a seeded subset of this many test images per group (the rule of
    # data.groups.*.test_size, so 2,000 gives the subsets of configs/mixed_mnist/quick.yaml);
    # a reduced protocol, flagged as such
    test_size: int | None = None
    # bootstrap resamples of the generated images' Inception features for a 95% interval of the
    # overall FID (0: none); computed from the features the evaluation already has
    fid_bootstrap: int = 0
