"""Ready-made studies: train the runs a paper compares, evaluate them and draw its figure set.

``fissionvae study dugdale`` (:func:`fissionvae.studies.dugdale.run_dugdale_study`): a conv VAE
on MNIST trained with FedAvg over 4 IID clients against the same model trained centrally.
"""

from fissionvae.studies.dugdale import run_dugdale_study

__all__ = ["run_dugdale_study"]
