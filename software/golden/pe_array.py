"""Golden model of :class:`lowbit.hw.pe_array.PEArray`: the accumulators of array tiles.

Each PE ``(i, j)`` of a tile accumulates, over the tile's beats (bit planes from the top,
then words), ``acc = 2 * acc + pop`` on the first beat of each plane after the first and
``acc = acc + pop`` otherwise, with ``pop = popcount(XNOR(a_i, b_j))`` over the whole
``word``. That is ``acc = sum_p 2^p * popcount(XNOR(a_p, b))`` (:mod:`lowbit.layout`).
"""

import numpy as np

from ..config.accelerator import AcceleratorConfig

__all__ = ["PEArray"]


class PEArray:
    """Tile accumulators of a configuration's array.

    Parameters
    ----------
    config : AcceleratorConfig

    Raises
    ------
    TypeError
        If ``config`` is not an :class:`AcceleratorConfig`.
    """

    def __init__(self, config):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.config = config

    def tiles(self, a, b):
        """Accumulators ``(m_tiles, n_tiles, rows, cols)`` of every tile.

        ``a`` is ``(m_tiles, planes, words, rows)`` activation memory words (top plane
        first), ``b`` ``(n_tiles, words, cols)`` weight memory words (``uint64``).
        """
        word = self.config.word
        a = np.asarray(a, dtype=np.uint64)
        b = np.asarray(b, dtype=np.uint64)
        mt, planes, words, rows = a.shape
        nt = b.shape[0]
        mask = np.uint64((1 << word) - 1)
        weights = np.array([1 << (planes - 1 - s) for s in range(planes)], dtype=np.int64)
        out = np.zeros((mt, nt, rows, b.shape[2]), dtype=np.int64)
        # One column tile at a time keeps the XNOR block small for wide layers.
        for j in range(nt):
            x = ~(a[:, :, :, :, None] ^ b[j][None, None, :, None, :]) & mask
            pops = np.bitwise_count(x).astype(np.int64).sum(axis=2)   # (mt, planes, R, C)
            out[:, j] = np.tensordot(weights, pops, axes=([0], [1]))
        return out
