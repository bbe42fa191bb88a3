"""Networks built from the ops: per space its discrete network and its supernets (for the DARTS cell ``cnn``
and ``search_cnn``; ``dense`` is DARTS's supernet code for any space), and ``protocols``, what a method may
call on a supernet."""

from .search_cnn import SearchNetwork, SparseCell

__all__ = ["SearchNetwork", "SparseCell"]
