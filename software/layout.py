"""How operands, thresholds and scores sit in the accelerator's memories, defined once.

The compiler packs with these functions, the ISS and the golden models compute on what
they produce, and the tests and the runtime unpack with them. Every memory word is
``lanes`` lanes of ``word`` bits (:class:`~lowbit.config.accelerator.AcceleratorConfig`),
held here as a ``(words, lanes)`` array of ``uint64``; ``LOAD`` and ``STORE`` move the
lanes of a word in order (``flat = words.reshape(-1)``).

**Activations** (``in`` and ``act`` memories, ``rows`` lanes): ``M`` rows of ``K`` elements
of ``planes`` bit planes. Row ``r`` sits in lane ``r % rows`` of row tile ``r // rows``; a
tile takes ``planes * nw`` words (``nw = ceil(K / word)``), the **top plane first**, then
word ``w`` of the plane: element ``t`` of plane ``p`` of row ``r`` is bit ``t % word`` of
lane ``r % rows`` of word ``tile * planes * nw + (planes - 1 - p) * nw + t // word``.
Bipolar (+-1) rows take one plane, bit 1 meaning +1; unsigned ``k``-bit rows take ``k``.
Padding elements and padding rows are 0. This is also what a ``THRESHOLD`` layer writes.

**Weights** (``weight`` memory, ``cols`` lanes): ``N`` rows (output channels) of ``K`` +-1
elements, bit 1 meaning +1; channel ``n`` is lane ``n % cols`` of column tile
``n // cols``, which takes ``nw`` words. Padding *elements* are 1, so that ``XNOR`` with an
activation's padding 0 never counts; padding channels are 0.

**Thresholds** (``thresh`` memory, ``cols`` lanes): ``T = 2^bits - 1`` per channel, word
``tile * T + t`` lane ``n % cols`` holding threshold ``t`` of channel ``n`` (low
``acc_bits`` bits; the rest 0). Padding channels hold :attr:`~AcceleratorConfig.never`.

**Scores** (``score`` memory, ``cols`` lanes): the accumulator of row ``r``, channel ``n``
is lane ``n % cols`` of word ``r * n_tiles + n // cols``.

**Ranks** (``rank`` memory of an argmax unit, one lane of ``rank_bits`` bits): the table
of an ``ARGMAX`` (:func:`rank_table`), class ``c``'s rank at accumulator ``acc`` in word
``c * stride + acc``. The ``ARGMAX`` record holds one class byte per sample, sample ``j``
in byte ``j % B`` (little-endian) of record word ``j // B``, ``B = cols * word / 8``
(:func:`unpack_argmax`).

**Latent weights** (``latent`` memory of a training configuration, ``latent_bits`` lanes):
one memory word per lane word of the weight memory, in the weight memory's flat lane order
(word ``j`` belongs to lane word ``j`` of :func:`pack_weights`' flat output): its ``word``
LNS weights as bit planes, lane 0 the signs (1 = negative), lane ``1 + b`` bit ``b`` of the
codes. Padding elements are sign 0 (so their binary weight is the padding 1), padding
channels sign 1 (binary 0), both code 1 with a zero gradient, so an ``UPDATE`` keeps them
(a zero code would update as sign 0).
**Gradients** of an ``UPDATE`` (:func:`pack_gradients`): per latent word, its ``word``
mantissas as two's-complement bytes, element ``t`` in byte ``t`` (``word``-bit words,
little-endian: 8 words per latent word).

**Convolutions** (a first layer): the host builds the im2col rows (:func:`conv_rows`). Lane
``i`` of every row tile is sample ``i`` of a block of ``rows`` samples, and the block's row
tiles go pooling window by window (row-major), each window's positions in a row
(row-major), so that a ``GEMM`` with ``pool = P * P`` writes one output row tile per
pooled position: position ``q``'s ``N`` channels fill ``ow = ceil(N / word)`` words of
the ``act`` memory, ``q * ow`` words from the block's first. The next (dense) layer reads
them as one row of ``positions * ow`` words per sample; its weights are laid out to match
(:func:`flattened_weight`), the gaps of a position's last word padding elements.

The array computes, for a row of activation planes ``a_p`` and a weight row ``b``,
``acc = sum_p 2^p * popcount(XNOR(a_p, b))`` over the padded words. With ``T`` valid
elements that is ``(dot + T) / 2`` for bipolar activations and
``dot + (2^planes - 1) * (T - popcount(b))`` for unsigned ones (:func:`dot_from_acc`), so
thresholds on ``dot`` become thresholds on ``acc`` with a per-channel constant.
"""

import numpy as np

from .isa import STATS_LANES, argmax_bytes

__all__ = ["plane_words", "pack_act", "unpack_act", "pack_weights", "pack_thresholds",
           "unpack_scores", "unpack_stats", "rank_table", "unpack_argmax", "stats_from_acc",
           "dot_from_acc", "acc_threshold", "tiles", "conv_rows", "flattened_weight",
           "pack_latent", "unpack_latent", "pack_gradients", "latent_words",
           "signs_of_latent"]


def tiles(n, size):
    """Tiles of ``size`` that cover ``n``."""
    return -(-n // size)


def plane_words(k, word):
    """Words of one bit plane of ``k`` elements."""
    return -(-k // word)


def _pack_bits(bits, word):
    # (..., K) booleans -> (..., ceil(K / word)) uint64 words, element t in bit t % word.
    *lead, k = bits.shape
    nw = plane_words(k, word)
    padded = np.zeros((*lead, nw * word), dtype=bool)
    padded[..., :k] = bits
    packed = np.packbits(padded.reshape(-1, nw * word), axis=1, bitorder="little")
    words = packed.view(f"<u{word // 8}") if word >= 8 else packed
    return words.astype(np.uint64).reshape(*lead, nw)


def _unpack_bits(words, k, word):
    # Inverse of _pack_bits.
    words = np.asarray(words, dtype=np.uint64)
    *lead, nw = words.shape
    raw = np.ascontiguousarray(words.reshape(-1, nw).astype(f"<u{word // 8}"))
    bits = np.unpackbits(raw.view(np.uint8), axis=1, bitorder="little")
    return bits[:, :k].reshape(*lead, k).astype(bool)


def _planes_of(values, planes, bipolar):
    values = np.asarray(values, dtype=np.int64)
    if values.ndim != 2:
        raise ValueError(f"rows must be a 2-D array, not of shape {values.shape}")
    if bipolar:
        if planes != 1:
            raise ValueError(f"bipolar rows take one plane, not {planes}")
        if np.any((values != 1) & (values != -1)):
            raise ValueError("bipolar rows must hold only +1 and -1")
        return (values > 0)[None]
    if np.any((values < 0) | (values >= 1 << planes)):
        raise ValueError(f"rows hold values outside 0..{(1 << planes) - 1}")
    return np.stack([(values >> p) & 1 == 1 for p in range(planes)])


def pack_act(values, planes, config, *, bipolar=False):
    """Memory words ``(m_tiles * planes * nw, rows)`` of activation rows ``values``
    ``(M, K)``: bipolar (+-1, one plane) or unsigned ``planes``-bit integers.

    Raises ``ValueError`` for a value out of range.
    """
    bits = _planes_of(values, planes, bipolar)             # (planes, M, K)
    rows, word = config.rows, config.word
    _, m, k = bits.shape
    mt = tiles(m, rows)
    padded = np.zeros((bits.shape[0], mt * rows, k), dtype=bool)
    padded[:, :m] = bits
    words = _pack_bits(padded, word)                        # (planes, mt*rows, nw)
    nw = words.shape[-1]
    # -> (mt, plane from the top, nw, lane)
    words = words[::-1].reshape(-1, mt, rows, nw).transpose(1, 0, 3, 2)
    return np.ascontiguousarray(words).reshape(mt * bits.shape[0] * nw, rows)


def unpack_act(words, m, k, planes, config, *, bipolar=False):
    """Activation rows ``(m, k)`` of memory words; the inverse of :func:`pack_act`."""
    rows, word = config.rows, config.word
    mt, nw = tiles(m, rows), plane_words(k, word)
    words = np.asarray(words, dtype=np.uint64)[:mt * planes * nw]
    words = words.reshape(mt, planes, nw, rows).transpose(1, 0, 3, 2)[::-1]
    bits = _unpack_bits(words.reshape(planes, mt * rows, nw), k, word)[:, :m]
    if bipolar:
        return np.where(bits[0], 1, -1).astype(np.int64)
    return sum(bits[p].astype(np.int64) << p for p in range(planes))


def pack_weights(values, config):
    """Memory words ``(n_tiles * nw, cols)`` of +-1 weight rows ``values`` ``(N, K)``."""
    values = np.asarray(values, dtype=np.int64)
    if values.ndim != 2:
        raise ValueError(f"weights must be a 2-D array, not of shape {values.shape}")
    if np.any((values != 1) & (values != -1)):
        raise ValueError("weights must hold only +1 and -1")
    cols, word = config.cols, config.word
    n, k = values.shape
    nt, nw = tiles(n, cols), plane_words(k, word)
    bits = np.ones((nt * cols, nw * word), dtype=bool)     # padding elements: 1
    bits[:n, :k] = values > 0
    bits[n:] = False                                        # padding channels: 0
    words = _pack_bits(bits, word).reshape(nt, cols, nw).transpose(0, 2, 1)
    return np.ascontiguousarray(words).reshape(nt * nw, cols)


def pack_thresholds(thresholds, config):
    """Memory words ``(n_tiles * T, cols)`` of per-channel thresholds ``(N, T)`` on the
    accumulator, each ``0..never`` (clip before packing)."""
    thr = np.asarray(thresholds, dtype=np.int64)
    if thr.ndim != 2:
        raise ValueError(f"thresholds must be a 2-D array, not of shape {thr.shape}")
    if np.any((thr < 0) | (thr > config.never)):
        raise ValueError(f"thresholds must be within 0..{config.never}")
    cols = config.cols
    n, t = thr.shape
    nt = tiles(n, cols)
    padded = np.full((nt * cols, t), config.never, dtype=np.int64)
    padded[:n] = thr
    words = padded.reshape(nt, cols, t).transpose(0, 2, 1)
    return np.ascontiguousarray(words).reshape(nt * t, cols).astype(np.uint64)


def unpack_scores(words, m, n, config):
    """Scores ``(m, n)`` (accumulators) of score-memory words written by a ``SCORES``
    ``GEMM`` over ``n`` channels."""
    cols = config.cols
    nt = tiles(n, cols)
    words = np.asarray(words, dtype=np.uint64)[:m * nt]
    mask = np.uint64(config.never)
    return (words.reshape(m, nt * cols)[:, :n] & mask).astype(np.int64)


def unpack_stats(words, n, config):
    """The statistics ``(sum, spread)`` (``int64`` arrays of ``n`` channels) of a ``STATS``
    record's words: per channel group its ``cols`` sums, then its ``cols`` spreads, each a
    ``word``-bit two's-complement lane."""
    cols, word = config.cols, config.word
    groups = tiles(n, cols)
    words = np.asarray(words, dtype=np.uint64)[:groups * STATS_LANES * cols]
    if len(words) < groups * STATS_LANES * cols:
        raise ValueError(f"a STATS record of {n} channels needs "
                         f"{groups * STATS_LANES * cols} words, not {len(words)}")
    lanes = words.reshape(groups, STATS_LANES, cols).astype(np.int64)
    if word < 64:
        lanes = np.where(lanes >= 1 << (word - 1), lanes - (1 << word), lanes)
    return lanes[:, 0].reshape(-1)[:n], lanes[:, 1].reshape(-1)[:n]


def rank_table(acc_to_scores, classes, stride):
    """The ``rank`` memory words of an ``ARGMAX`` over ``classes`` classes whose accumulators
    lie in ``0..stride - 1``: ``acc_to_scores(acc)`` maps an ``(M, classes)`` accumulator
    array to the host's float scores (``argmax`` over a row is the prediction). Every
    ``(class, acc)`` score is ranked among all of them, equal scores equally (a dense
    rank), so the first class of largest rank is ``numpy.argmax`` of the scores, ties
    included. Returns ``int64`` words, class ``c``'s ranks from word ``c * stride``."""
    grid = np.repeat(np.arange(stride, dtype=np.int64)[:, None], classes, axis=1)
    scores = np.asarray(acc_to_scores(grid), dtype=np.float64)
    if scores.shape != grid.shape:
        raise ValueError(f"acc_to_scores gave shape {scores.shape} for {grid.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("the scores to rank must be finite")
    _, rank = np.unique(scores.T.reshape(-1), return_inverse=True)
    return rank.astype(np.int64).reshape(-1)


def unpack_argmax(words, n, config):
    """The ``n`` class indices (``int64``) of an ``ARGMAX`` record's ``word``-bit words."""
    per = argmax_bytes(config)
    need = -(-n // per) * config.cols
    words = np.asarray(words, dtype=np.uint64).reshape(-1)
    if len(words) < need:
        raise ValueError(f"an ARGMAX record of {n} samples needs {need} words, not "
                         f"{len(words)}")
    lanes = config.word // 8
    shifts = (8 * np.arange(lanes)).astype(np.uint64)
    out = (words[:need, None] >> shifts[None, :]) & np.uint64(0xFF)
    return out.reshape(-1)[:n].astype(np.int64)


def stats_from_acc(total, spread, m, weights, planes, *, bipolar):
    """The statistics of the dot products (:func:`dot_from_acc`) over ``m`` samples from
    those of the accumulators: ``dot = a acc + b_c`` with ``a`` 1 or 2 (positive), so
    ``sum(dot) = a sum(acc) + m b_c`` and ``spread(dot) = a spread(acc)``, exactly."""
    total = np.asarray(total, dtype=np.int64)
    spread = np.asarray(spread, dtype=np.int64)
    w = np.asarray(weights, dtype=np.int64)
    k = w.shape[1]
    if bipolar:
        return 2 * total - m * k, 2 * spread
    minus = k - (w > 0).sum(axis=1)
    return total - m * ((1 << planes) - 1) * minus, spread


def dot_from_acc(acc, weights, planes, *, bipolar):
    """The dot products ``x @ w.T`` from accumulators ``acc`` ``(M, N)`` of activations of
    ``planes`` planes (``bipolar``: +-1) against +-1 ``weights`` ``(N, K)``: exact."""
    acc = np.asarray(acc, dtype=np.int64)
    w = np.asarray(weights, dtype=np.int64)
    k = w.shape[1]
    if bipolar:
        return 2 * acc - k
    minus = k - (w > 0).sum(axis=1)                         # T - popcount(b)
    return acc - ((1 << planes) - 1) * minus[None, :]


def acc_threshold(tau, weights, planes, *, bipolar):
    """Per-channel thresholds on the accumulator equivalent to ``dot >= tau`` (``tau``
    ``(N, T)`` integers), before clipping: ``acc >= result`` exactly when ``dot >= tau``."""
    tau = np.asarray(tau, dtype=np.int64)
    w = np.asarray(weights, dtype=np.int64)
    k = w.shape[1]
    if bipolar:
        # 2 acc - K >= tau  <=>  acc >= ceil((tau + K) / 2)
        return -((-(tau + k)) // 2)
    minus = k - (w > 0).sum(axis=1)
    return tau + ((1 << planes) - 1) * minus[:, None]


def conv_rows(patches, pool, rows):
    """The im2col rows of a convolution in the order the core reads them.

    ``patches`` is ``(n, OH, OW, K)`` (``n`` a multiple of ``rows``), ``pool`` the side of
    the pooling window (1: none; positions outside whole windows are left out, as pooling
    drops them). Returns ``(n * windows * pool^2, K)``: per block of ``rows`` samples, per
    window, per position in the window, the block's samples, ready for :func:`pack_act`.
    """
    patches = np.asarray(patches)
    n, oh, ow, k = patches.shape
    if n % rows:
        raise ValueError(f"{n} samples do not fill blocks of {rows}")
    ph, pw = oh // pool, ow // pool
    x = patches[:, :ph * pool, :pw * pool].reshape(n, ph, pool, pw, pool, k)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(n // rows, rows, ph * pw * pool * pool, k)
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3)).reshape(-1, k)


def flattened_weight(weight, channels, positions, word):
    """A dense layer's +-1 ``weight`` ``(N, channels * positions)``, whose inputs are a
    convolution's outputs flattened channel-major (``c * positions + q``), rearranged for
    the ``act`` memory's order (position ``q``'s channels in ``ceil(channels / word)`` whole
    words): ``(N, positions * ceil(channels / word) * word)``, the gaps +1 (padding)."""
    weight = np.asarray(weight, dtype=np.int64)
    n = weight.shape[0]
    if weight.shape[1] != channels * positions:
        raise ValueError(f"weight has {weight.shape[1]} inputs, not {channels} channels x "
                         f"{positions} positions")
    slot = plane_words(channels, word) * word
    out = np.ones((n, positions, slot), dtype=np.int64)
    out[:, :, :channels] = weight.reshape(n, channels, positions).transpose(0, 2, 1)
    return out.reshape(n, positions * slot)


# Latent weights of a training configuration --------------------------------------------

def _lane_order(values, config, pad_element, pad_channel):
    # (N, K) -> (n_tiles * nw * cols, word): every lane word of pack_weights' flat order,
    # its elements in bit order; padding elements and channels set as given.
    values = np.asarray(values, dtype=np.int64)
    if values.ndim != 2:
        raise ValueError(f"latent weights must be a 2-D array, not of shape {values.shape}")
    cols, word = config.cols, config.word
    n, k = values.shape
    nt, nw = tiles(n, cols), plane_words(k, word)
    full = np.full((nt * cols, nw * word), pad_element, dtype=np.int64)
    full[:n, :k] = values
    full[n:] = pad_channel
    # (tile, lane, w, t) -> (tile, w, lane, t): lane-major within a memory word.
    return full.reshape(nt, cols, nw, word).transpose(0, 2, 1, 3).reshape(-1, word)


def latent_words(shape, config):
    """Latent-memory words (lane words of the weight memory) of ``(N, K)`` weights."""
    n, k = shape
    return tiles(n, config.cols) * plane_words(k, config.word) * config.cols


def pack_latent(sign, code, config):
    """Latent-memory words ``(latent_words, latent_bits)`` of LNS weights ``(N, K)``:
    ``sign`` 0/1 (1 = negative), ``code`` ``0..2^(latent_bits-1) - 1``."""
    bits = config.latent_bits
    sign, code = np.asarray(sign, dtype=np.int64), np.asarray(code, dtype=np.int64)
    if sign.shape != code.shape:
        raise ValueError(f"signs {sign.shape} and codes {code.shape} differ in shape")
    if np.any((sign != 0) & (sign != 1)):
        raise ValueError("latent signs must be 0 or 1")
    if np.any((code < 0) | (code >> (bits - 1) != 0)):
        raise ValueError(f"latent codes must be within 0..{(1 << (bits - 1)) - 1}")
    s = _lane_order(sign, config, 0, 1)
    c = _lane_order(code, config, 1, 1)   # code 0 would update as sign 0
    planes = [s] + [(c >> b) & 1 for b in range(bits - 1)]
    return np.stack([_pack_bits(p.astype(bool), config.word)[:, 0] for p in planes], axis=1)


def unpack_latent(words, shape, config):
    """``(sign, code)`` ``(N, K)`` of latent-memory words written by :func:`pack_latent`
    (and updated by ``UPDATE``)."""
    n, k = shape
    cols, word, bits = config.cols, config.word, config.latent_bits
    nt, nw = tiles(n, cols), plane_words(k, word)
    words = np.asarray(words, dtype=np.uint64).reshape(-1, bits)[:nt * nw * cols]
    planes = [_unpack_bits(words[:, p:p + 1], word, word).astype(np.int64)
              for p in range(bits)]
    code = sum(p << b for b, p in enumerate(planes[1:]))

    def back(v):
        v = v.reshape(nt, nw, cols, word).transpose(0, 2, 1, 3).reshape(nt * cols, nw * word)
        return v[:n, :k]
    return back(planes[0]), back(code)


def signs_of_latent(sign, config):
    """The weight-memory words (:func:`pack_weights`) an ``UPDATE`` writes for latent
    signs ``(N, K)``: +1 where the sign is 0."""
    return pack_weights(np.where(np.asarray(sign) == 0, 1, -1), config)


def pack_gradients(grad, config):
    """The data words of an ``UPDATE`` of ``(N, K)`` weights by mantissas ``grad``
    (-128..127; padding 0): ``latent_words * 8`` ``word``-bit words."""
    grad = np.asarray(grad, dtype=np.int64)
    if grad.size and (grad.min() < -128 or grad.max() > 127):
        raise ValueError("gradient mantissas must be within -128..127 (one byte each)")
    g = _lane_order(grad, config, 0, 0).astype(np.int8).view(np.uint8)
    nbytes = config.word // 8
    return np.ascontiguousarray(g).reshape(-1).view(f"<u{nbytes}").astype(np.uint64)
