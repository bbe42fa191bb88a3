"""ISTA-NAS: neural architecture search by sparse coding (Yang et al., NeurIPS 2020).

Layers, bottom up: ``ops`` and ``solver`` (torch only) -> ``sparse_coding`` -> ``genotype`` and ``networks``
-> ``methods`` (the search algorithms) -> ``engine`` helpers they use -> ``cli``.
"""

from .errors import IstaNasError, RunFailed, UserError
from .genotype import Genotype, load_genotype, save_genotype
from .solver import LassoResult, lasso

__version__ = "0.1.0"

__all__ = ["Genotype", "IstaNasError", "LassoResult", "RunFailed", "UserError", "lasso", "load_genotype",
           "save_genotype", "__version__"]
