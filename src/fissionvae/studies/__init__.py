"""Ready-made studies: train the runs a paper compares, evaluate them and draw its figure set.

``fissionvae study dugdale`` (:func:`fissionvae.studies.dugdale.run_dugdale_study`): a conv VAE
on MNIST trained with FedAvg over 4 IID clients against the same model trained centrally.

``fissionvae study fission`` (:func:`fissionvae.studies.fission.run_fission_study`): FissionVAE
(Hu et al. 2024) on Mixed MNIST, Tables 3, 5, 6, 7 and Figure 10, beside the paper's numbers.
"""

from fissionvae.studies.dugdale import run_dugdale_study
from fissionvae.studies.fission import run_fission_study

__all__ = ["run_dugdale_study", "run_fission_study"]
