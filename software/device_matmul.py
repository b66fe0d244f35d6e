"""Exact integer matrix products on the accelerator: ``a @ b.T`` for the operand precisions
of :class:`lowbit.golden.xnor_array.Precision`, computed by ``SCORES`` GEMMs on any
:class:`lowbit.runtime.Runtime` (ISS, RTL simulation or a board).

The core multiplies unsigned bit-plane (or +-1) activation rows by +-1 weight rows
(``docs/accelerator.md``). Every other product reduces to that one exactly, with integer
corrections the host adds from the operands' row and column sums (cheap next to the
product itself):

* a signed ``k``-bit left operand is sent offset, ``a + 2^(k-1)`` (unsigned ``k`` bits):
  ``a s^T = (a + 2^(k-1)) s^T - 2^(k-1) * colsum(s)``;
* a left operand of more planes than the core's ``max_act_bits`` is split into chunks of
  planes, their products summed with their powers of two;
* a multi-bit right operand is offset the same way to ``u`` (0 .. 2^k - 1) and split into
  +-1 planes ``s_j = 2 u_j - 1``: ``a u_j^T = (a s_j^T + rowsum(a)) / 2``, all planes in one
  GEMM (stacked as rows of the weight operand);
* operands larger than the core's memories are cut into blocks of rows and of ``K``, one
  program each (weights from the program's constants, activations as its inputs).

:class:`DeviceMatmul` counts the cycles, array beats and GEMMs it ran (:attr:`stats`).
"""

import numpy as np

from .energy import Actions, count_program
from .golden.lightnorm import wrap
from .golden.xnor_array import Precision
from .layout import (dot_from_acc, pack_act, pack_weights, plane_words, stats_from_acc, tiles,
                     unpack_scores, unpack_stats)
from .program import Program

__all__ = ["DeviceMatmul"]


class DeviceMatmul:
    """``a @ b.T`` on the accelerator behind ``runtime``, bit-exact.

    Parameters
    ----------
    runtime : lowbit.runtime.Runtime
        Where the GEMMs run; its configuration sets the block sizes.

    Attributes
    ----------
    stats : dict
        Totals over every call: ``cycles``, ``array_beats``, ``gemms`` (programs run),
        ``macs`` (binary MACs the core did, every plane pair counted) and ``statistics``
        (products whose norm statistics the core's statistics unit computed).
    actions : lowbit.energy.Actions
        The energy model's action counts of every program run (``lowbit.energy``).
    """

    def __init__(self, runtime):
        c = runtime.config
        if c.score_depth < c.rows:
            # A block's scores are at least one row tile: `rows` score words.
            raise ValueError(f"products on the accelerator need score_depth >= rows "
                             f"({c.rows}) to store one row tile's scores, not "
                             f"{c.score_depth}")
        self.runtime = runtime
        self.config = c
        self.stats = {"cycles": 0, "array_beats": 0, "gemms": 0, "macs": 0, "statistics": 0}
        self.statistics_refused = None
        self.actions = Actions()

    def __call__(self, a, b, a_precision, b_precision):
        """``a @ b.T`` exactly (``int64``), as :func:`lowbit.golden.training.popcount_matmul`
        defines it; operands are checked against their precisions."""
        a_precision, b_precision = Precision.parse(a_precision), Precision.parse(b_precision)
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
            raise ValueError(f"operands must be (M, K) and (N, K), not {a.shape} and {b.shape}")
        a_precision.check(a, "left operand")
        b_precision.check(b, "right operand")
        if b_precision.kind == "binary":
            return self._left(a, a_precision, b)
        offset = 1 << (b_precision.bits - 1) if b_precision.kind == "signed" else 0
        u = b + offset
        bits = b_precision.bits
        planes = np.concatenate([2 * ((u >> j) & 1) - 1 for j in range(bits)])  # (bits*N, K)
        products = self._left(a, a_precision, planes).reshape(len(a), bits, len(b))
        rowsum = a.sum(axis=1)[:, None]
        out = np.zeros((len(a), len(b)), dtype=np.int64)
        for j in range(bits):
            out += (products[:, j] + rowsum) << j >> 1   # (a s_j^T + rowsum) is even
        return out - offset * rowsum

    def statistics(self, a, s, a_precision, norm):
        """``(a @ s.T, total, spread)``: a product by +-1 weights ``s`` with its range
        batch-norm statistics over the rows of ``a`` (``norm``, a
        :class:`lowbit.golden.lightnorm.LightNorm`, gives the chunks and the widths), the
        statistics computed by the core's statistics unit (``STATS``) on the accumulators
        and converted to those of the dot products on the host
        (:func:`lowbit.layout.stats_from_acc`, exact). ``None`` when the product does not
        fit one program with one ``STATS`` (no statistics unit, another chunk count, more
        planes than the array takes, a ``K`` or a block of rows or channels larger than
        the memories or the unit): then the caller computes both as before."""
        c = self.config
        precision = Precision.parse(a_precision)
        a, s = np.asarray(a, dtype=np.int64), np.asarray(s, dtype=np.int64)
        bipolar = precision.kind == "binary"
        planes = 1 if bipolar else precision.bits
        (m, k), n = a.shape, len(s)
        words = plane_words(k, c.word)
        nt, mt = tiles(n, c.cols), tiles(m, c.rows)
        reason = None
        if not c.statistics:
            reason = "the configuration has no statistics unit (norm_channels 0)"
        elif norm.config.chunks != c.norm_chunks:
            reason = (f"the norm has {norm.config.chunks} chunks, the statistics unit "
                      f"{c.norm_chunks}")
        elif precision.kind == "signed" or planes > c.xnor_array.max_act_bits:
            reason = f"a {precision} left operand takes more than one GEMM"
        elif nt > c.norm_groups:
            reason = (f"{n} channels are more than the statistics unit's "
                      f"{c.norm_channels}")
        elif (words > min(c.max_words, c.weight_depth // nt)
              or mt * planes * words > c.in_depth or mt * c.rows * nt > c.score_depth):
            reason = f"a ({m}, {k}) x ({n}, {k}) product does not fit one program"
        if reason is not None:
            #: Why the last product's statistics were left to the host.
            self.statistics_refused = reason
            return None
        precision.check(a, "left operand")
        acc, record = self._block(a, planes, bipolar, s, words, nt, statistics=True)
        total, spread = unpack_stats(record, n, c)
        total, spread = stats_from_acc(total, spread, m, s, planes, bipolar=bipolar)
        self.stats["statistics"] += 1
        return (dot_from_acc(acc, s, planes, bipolar=bipolar),
                wrap(total, norm.config.sum_bits), wrap(spread, norm.config.spread_bits))

    def _left(self, a, precision, s):
        """``a @ s.T`` for a +-1 ``s``."""
        if precision.kind == "binary":
            return self._gemm(a, 1, True, s)
        if precision.kind == "signed":
            offset = 1 << (precision.bits - 1)
            return self._unsigned(a + offset, precision.bits, s) - offset * s.sum(axis=1)[None]
        return self._unsigned(a, precision.bits, s)

    def _unsigned(self, a, bits, s):
        # At most as many planes a GEMM as the array takes and the input memory holds words.
        step = min(self.config.xnor_array.max_act_bits, self.config.in_depth)
        out = np.zeros((len(a), len(s)), dtype=np.int64)
        for low in range(0, bits, step):
            planes = min(step, bits - low)
            chunk = (a >> low) & ((1 << planes) - 1)
            out += self._gemm(chunk, planes, False, s) << low
        return out

    def _gemm(self, a, planes, bipolar, s):
        """``a @ s.T`` by as many ``SCORES`` GEMMs as the memories need."""
        c = self.config
        m, k = a.shape
        n = len(s)
        # A block of K fits one tile of weights and one row tile's planes in their memories.
        k_step = min(c.max_words, c.weight_depth, c.in_depth // planes) * c.word
        out = np.zeros((m, n), dtype=np.int64)
        for k0 in range(0, k, k_step):
            ka, ks = a[:, k0:k0 + k_step], s[:, k0:k0 + k_step]
            words = plane_words(ka.shape[1], c.word)
            nt_max = max(1, min(c.weight_depth // words, c.score_depth // c.rows))
            for n0 in range(0, n, nt_max * c.cols):
                sb = ks[n0:n0 + nt_max * c.cols]
                nt = tiles(len(sb), c.cols)
                mt_max = max(1, min(c.in_depth // (planes * words),
                                    c.score_depth // (c.rows * nt)))
                for m0 in range(0, m, mt_max * c.rows):
                    ab = ka[m0:m0 + mt_max * c.rows]
                    acc = self._block(ab, planes, bipolar, sb, words, nt)
                    out[m0:m0 + len(ab), n0:n0 + len(sb)] += dot_from_acc(
                        acc, sb, planes, bipolar=bipolar)
        return out

    def _block(self, a, planes, bipolar, s, words, nt, statistics=False):
        """The accumulators of one program's ``SCORES`` GEMM and, with ``statistics``,
        the words of its ``STATS`` record over the rows of ``a``."""
        c = self.config
        mt = tiles(len(a), c.rows)
        weights, inputs = pack_weights(s, c), pack_act(a, planes, c, bipolar=bipolar)
        program = Program(c, [
            dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=0, count=len(weights),
                 unread=0, unwritten=0),
            dict(opcode="LOAD", buffer="IN", source="INPUT", addr=0, count=len(inputs),
                 unread=0, unwritten=0),
            dict(opcode="GEMM", a_buffer="IN", a_addr=0, b_addr=0, planes=planes,
                 words=words, m_tiles=mt, n_tiles=nt, mode="SCORES", out_bits=1,
                 dst_addr=0, thr_addr=0, sync=1, unsent=0),
            dict(opcode="STORE", buffer="SCORE", addr=0, count=mt * c.rows * nt, unwritten=0),
            *([dict(opcode="STATS", addr=0, groups=nt, samples=len(a), unwritten=0)]
              if statistics else []),
            dict(opcode="HALT", status=0),
        ], constants=weights.reshape(-1))
        result = self.runtime.run(program, inputs.reshape(-1))
        for key in ("cycles", "array_beats"):
            self.stats[key] += int(result.stats.get(key, 0))
        self.stats["gemms"] += 1
        self.actions = self.actions + Actions.total(count_program(program))
        self.stats["macs"] += len(a) * len(s) * a.shape[1] * planes
        acc = unpack_scores(np.asarray(result.outputs[0]).reshape(-1, c.cols), len(a),
                            len(s), c)
        if statistics:
            return acc, np.asarray(result.outputs[1]).reshape(-1)
        return acc
