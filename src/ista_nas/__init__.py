"""ISTA-NAS: neural architecture search by sparse coding (Yang et al., NeurIPS 2020).

Layers, bottom up (docs/architecture.md): leaves (``ops``, ``solver``, ``sparse_coding``, ``genotype``) and the
model-agnostic ``engine`` (run driver, loops, checkpoints, distributed) -> ``networks`` -> ``spaces`` (a
registry: each space owns its supernets, network, genotype and presets) -> ``config`` -> ``summary`` and
``report`` -> ``methods`` (a registry of search methods, run by the engine's driver) and ``retrain`` ->
``cli``.
"""

from .errors import IstaNasError, RunFailed, UserError
from .genotype import Genotype, save_genotype
from .solver import LassoResult, lasso
from .spaces import load_genotype

__version__ = "0.2.0"

__all__ = ["Genotype", "IstaNasError", "LassoResult", "RunFailed", "UserError", "lasso", "load_genotype",
           "save_genotype", "__version__"]
