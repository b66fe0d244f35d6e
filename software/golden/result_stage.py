"""Golden model of :class:`lowbit.hw.result_stage.ResultStage`: what a ``GEMM``'s tiles
become in memory.

``THRESHOLD``: each output is the number of its channel's ``2^bits - 1`` thresholds that
the accumulator reaches (``acc >= t``, unsigned, on the low ``acc_bits`` bits of each
threshold lane), with ``pool > 1`` the largest count over each window of ``pool``
consecutive row tiles (max-pooling: the count grows with the accumulator, so it is the
count of the window's largest accumulator), packed as the next layer's activations
(:func:`lowbit.layout.pack_act`);
``SCORES``: the accumulators themselves, row by row (:func:`lowbit.layout.unpack_scores`).
"""

import numpy as np

from ..config.accelerator import AcceleratorConfig
from ..layout import pack_act

__all__ = ["ResultStage"]


class ResultStage:
    """Outputs of a configuration's result stage.

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

    def counts(self, acc, thr):
        """Threshold counts ``(m_tiles, n_tiles, rows, cols)`` of accumulators ``acc``
        (same shape) against threshold words ``thr`` ``(n_tiles, T, cols)``."""
        thr = np.asarray(thr, dtype=np.uint64) & np.uint64(self.config.never)
        thr = thr.astype(np.int64)
        acc = np.asarray(acc, dtype=np.int64)
        return (acc[:, :, None, :, :] >= thr[None, :, :, None, :]).sum(axis=2)

    def threshold_words(self, acc, thr, bits, pool=1):
        """Activation memory words ``(m_tiles / pool * bits * out_words, rows)`` a
        ``THRESHOLD`` ``GEMM`` writes; ``acc`` has ``m_tiles`` row tiles, a multiple of
        ``pool``."""
        counts = self.counts(acc, thr)
        mt, nt, rows, cols = counts.shape
        if mt % pool:
            raise ValueError(f"{mt} row tiles do not make windows of {pool}")
        mt //= pool
        counts = counts.reshape(mt, pool, nt, rows, cols).max(axis=1)
        values = counts.transpose(0, 2, 1, 3).reshape(mt * rows, nt * cols)
        return pack_act(values, bits, self.config)

    def score_words(self, acc):
        """Score memory words ``(m_tiles * rows * n_tiles, cols)`` a ``SCORES`` ``GEMM``
        writes: row ``r``'s tile ``n`` at word ``r * n_tiles + n``."""
        acc = np.asarray(acc, dtype=np.int64)
        mt, nt, rows, cols = acc.shape
        return acc.transpose(0, 2, 1, 3).reshape(mt * rows * nt, cols).astype(np.uint64)
