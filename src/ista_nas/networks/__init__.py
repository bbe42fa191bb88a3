"""Networks built from the ops: the sparse search supernet (and, later, the discrete networks)."""

from .search_cnn import SearchNetwork, SparseCell

__all__ = ["SearchNetwork", "SparseCell"]
