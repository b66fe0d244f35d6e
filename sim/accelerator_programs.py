"""Test programs for the accelerator, built with the encoder and the memory layouts (never
raw bits), with their expected outputs computed independently in numpy.

:func:`programs` is a suite for any backend (the ISS and runtime tests run it; an RTL
test compares the gateware on the same programs): single layers of every
activation precision, networks whose ``THRESHOLD`` layers feed the next ``GEMM``, split
``STORE``\\ s, reloaded weights and thresholds, and a pipelined batch loop whose wait
fields let the stages overlap. Each entry is ``(name, program, inputs, expected)``:
``expected`` is the list of the words each ``STORE`` sends (``uint64``), computed from the
integer matrices by :func:`reference_acc` (``acc = sum_p 2^p * #{a_p == b}`` over the
padded bit matrices, checked against ``x @ w.T`` on the valid rows and channels) and
threshold counts on the dot products, not by the ISS.

:func:`faulty_streams` gives broken host-link byte streams with the status and index the
accelerator must report.
"""

import numpy as np

from ..config.accelerator import AcceleratorConfig
from ..config.xnor_array import XNORArrayConfig
from ..isa import NO_WAIT, Opcode, Status, instruction_set
from ..layout import acc_threshold, pack_act, pack_thresholds, pack_weights, plane_words, tiles
from ..program import Program

__all__ = ["small_config", "reference_acc", "score_words", "threshold_counts", "load",
           "store", "gemm", "halt", "network", "programs", "faulty_streams", "run_both"]


def run_both(config, program, inputs, *, stall=0.0, max_cycles=400_000):
    """``(iss, expected, got)``: the ISS after running ``program`` with ``inputs``, its reply
    bytes, and the gateware's (Amaranth's simulator, an ideal host but for ``stall``, the
    fraction of cycles in which the host takes no output beat)."""
    from .amaranth_transport import AmaranthTransport
    from .random_programs import stream
    from ..iss import ISS

    data = stream(program, inputs)
    iss = ISS(config)
    expected = iss.run_stream(data)
    with AmaranthTransport(config, stall=stall, seed=5, max_cycles=max_cycles) as rtl:
        rtl.write(data)
        got = rtl.read(len(expected))
    return iss, expected, got


def small_config(**overrides):
    """A small accelerator that simulates fast: a 2 x 4 array of 16-bit words (up to 4
    activation planes, 2-bit outputs), memories of 64..256 words, queues of 2."""
    base = dict(xnor_array=XNORArrayConfig(rows=2, cols=4, word=16, max_k=256,
                                           max_act_bits=4, max_weight_bits=1, pipeline=1),
                max_out_bits=2, in_depth=64, act_depth=64, weight_depth=256,
                thresh_depth=64, score_depth=64, queue_depth=2, timeout_cycles=64)
    base.update(overrides)
    return AcceleratorConfig(**base)


# Instructions ------------------------------------------------------------------------------


def load(buffer, source, addr, count, *, unread=NO_WAIT, unwritten=NO_WAIT):
    """A ``LOAD`` of ``count`` memory words (waits default to none)."""
    return dict(opcode="LOAD", buffer=buffer, source=source, addr=addr, count=count,
                unread=unread, unwritten=unwritten)


def store(addr, count, *, unwritten=0):
    """A ``STORE`` of ``count`` score words, by default after every earlier ``GEMM``."""
    return dict(opcode="STORE", buffer="SCORE", addr=addr, count=count, unwritten=unwritten)


def gemm(*, a_buffer, a_addr, b_addr, planes, words, m_tiles, n_tiles, mode, dst_addr,
         out_bits=1, thr_addr=0, sync=0, unsent=NO_WAIT, pool=1):
    """A ``GEMM`` instruction dict."""
    return dict(opcode="GEMM", a_buffer=a_buffer, a_addr=a_addr, b_addr=b_addr,
                planes=planes, words=words, m_tiles=m_tiles, n_tiles=n_tiles, pool=pool,
                mode=mode,
                out_bits=out_bits, dst_addr=dst_addr, thr_addr=thr_addr, sync=sync,
                unsent=unsent)


def halt(status=0):
    """A ``HALT``."""
    return dict(opcode="HALT", status=status)


# The independent reference ----------------------------------------------------------------


def reference_acc(a, w, planes, config, *, bipolar=False, dot=None):
    """Accumulators ``(m_tiles * rows, n_tiles * cols)`` of a ``GEMM`` over activation rows
    ``a`` (``(m_tiles * rows, K)`` values, padding rows included: what the memory holds)
    and +-1 weights ``w`` ``(N, K)``.

    Straight from the definition on padded bit matrices: activation padding elements are
    0, weight padding elements 1, padding channels 0. With ``dot`` (the valid rows' ``x @
    w.T``) the valid part is checked against ``layout``'s closed form.
    """
    a, w = np.asarray(a, dtype=np.int64), np.asarray(w, dtype=np.int64)
    rows, k = a.shape
    n = w.shape[0]
    width = plane_words(k, config.word) * config.word
    channels = tiles(n, config.cols) * config.cols
    b = np.zeros((channels, width), dtype=bool)
    b[:n] = True
    b[:n, :k] = w > 0
    acc = np.zeros((rows, channels), dtype=np.int64)
    for p in range(planes):
        bits = np.zeros((rows, width), dtype=bool)
        bits[:, :k] = a > 0 if bipolar else (a >> p) & 1 == 1
        acc += (1 << p) * (bits[:, None, :] == b[None]).sum(axis=2)
    if dot is not None:
        m = dot.shape[0]
        if bipolar:
            closed = (dot + k) // 2
        else:
            closed = dot + ((1 << planes) - 1) * (k - (w > 0).sum(axis=1))[None]
        assert np.array_equal(acc[:m, :n], closed), "reference accumulators disagree"
    return acc


def threshold_counts(acc, thresholds, n, config):
    """Outputs ``(rows, n_tiles * cols)`` of a ``THRESHOLD`` layer: per row and channel the
    number of the channel's accumulator thresholds (``(n, T)``) reached; padding channels
    (threshold ``never``) 0."""
    out = np.zeros(acc.shape, dtype=np.int64)
    out[:, :n] = (acc[:, :n, None] >= np.asarray(thresholds)[None]).sum(axis=2)
    return out


def score_words(acc, config):
    """The words a ``STORE`` of a ``SCORES`` layer's whole output sends: row ``r``, tile
    ``n``, lane ``c`` at word ``(r * n_tiles + n) * cols + c``."""
    return np.asarray(acc, dtype=np.int64).reshape(-1).astype(np.uint64)


# Networks ----------------------------------------------------------------------------------


def network(config, rng, batch, sizes, *, planes=1, bipolar=True, out_bits=(), in_addr=0,
            status=0):
    """A network ``sizes[0] - sizes[1] - ... - sizes[-1]`` on ``batch`` rows: each layer
    ``LOAD``\\ s its weights (and thresholds), the first reads the ``in`` memory, every
    hidden layer thresholds to ``out_bits[i]``-bit activations in the ``act`` memory (two
    regions in turn), the last writes scores, all of which one ``STORE`` sends.

    Returns ``(program, inputs, expected)``.
    """
    layers = len(sizes) - 1
    out_bits = list(out_bits) or [1] * (layers - 1)
    x = (rng.choice([-1, 1], (batch, sizes[0])) if bipolar
         else rng.integers(0, 1 << planes, (batch, sizes[0])))
    xw = pack_act(x, planes, config, bipolar=bipolar)
    mt = tiles(batch, config.rows)
    instrs = [load("IN", "INPUT", in_addr, len(xw))]
    consts = []
    a_values = np.zeros((mt * config.rows, sizes[0]), dtype=np.int64)
    a_values[:batch] = x
    a_buffer, a_addr, a_planes, a_bipolar = "IN", in_addr, planes, bipolar
    b_addr = thr_addr = 0
    act_regions = [0, config.act_depth // 2]
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.choice([-1, 1], (n, k))
        ww = pack_weights(w, config)
        instrs.append(load("WEIGHT", "CONST", b_addr, len(ww)))
        consts.append(ww.reshape(-1))
        nt, nw = tiles(n, config.cols), plane_words(k, config.word)
        dot = a_values[:batch] @ w.T
        acc = reference_acc(a_values, w, a_planes, config, bipolar=a_bipolar, dot=dot)
        fields = dict(a_buffer=a_buffer, a_addr=a_addr, b_addr=b_addr, planes=a_planes,
                      words=nw, m_tiles=mt, n_tiles=nt, sync=int(a_buffer == "ACT"))
        if i < layers - 1:
            bits = out_bits[i]
            count = (1 << bits) - 1
            # Thresholds on the dot product around its spread, a few out of reach both
            # ways, so that every count occurs.
            tau = np.sort(rng.integers(-k - 2, k + 3, (n, count)), axis=1)
            thr = np.clip(acc_threshold(tau, w, a_planes, bipolar=a_bipolar), 0,
                          config.never)
            tw = pack_thresholds(thr, config)
            instrs.append(load("THRESH", "CONST", thr_addr, len(tw)))
            consts.append(tw.reshape(-1))
            h = threshold_counts(acc, thr, n, config)
            assert np.array_equal(h[:batch, :n],
                                  (dot[:, :, None] >= tau[None]).sum(axis=2))
            dst = act_regions[i % 2]
            instrs.append(gemm(**fields, mode="THRESHOLD", out_bits=bits, dst_addr=dst,
                               thr_addr=thr_addr))
            thr_addr += len(tw)
            a_values = h[:, :n]
            a_buffer, a_addr, a_planes, a_bipolar = "ACT", dst, bits, False
        else:
            instrs.append(gemm(**fields, mode="SCORES", dst_addr=0))
            instrs.append(store(0, mt * config.rows * nt))
            expected = [score_words(acc, config)]
        b_addr += len(ww)
    instrs.append(halt(status))
    program = Program(config, instrs, np.concatenate(consts))
    return program, xw.reshape(-1), expected


def _single(config, rng, batch, n, k, *, planes=1, bipolar=True, a_addr=0, b_addr=0,
            dst_addr=0):
    # One SCORES layer at given addresses, its output stored row tile by row tile.
    x = (rng.choice([-1, 1], (batch, k)) if bipolar
         else rng.integers(0, 1 << planes, (batch, k)))
    w = rng.choice([-1, 1], (n, k))
    xw, ww = pack_act(x, planes, config, bipolar=bipolar), pack_weights(w, config)
    mt, nt = tiles(batch, config.rows), tiles(n, config.cols)
    a = np.zeros((mt * config.rows, k), dtype=np.int64)
    a[:batch] = x
    acc = reference_acc(a, w, planes, config, bipolar=bipolar, dot=x @ w.T)
    words = score_words(acc, config)
    tile_words = config.rows * nt
    instrs = [load("WEIGHT", "CONST", b_addr, len(ww)), load("IN", "INPUT", a_addr, len(xw)),
              gemm(a_buffer="IN", a_addr=a_addr, b_addr=b_addr, planes=planes,
                   words=plane_words(k, config.word), m_tiles=mt, n_tiles=nt, mode="SCORES",
                   dst_addr=dst_addr)]
    expected = []
    for t in range(mt):
        instrs.append(store(dst_addr + t * tile_words, tile_words))
        expected.append(words[t * tile_words * config.cols:(t + 1) * tile_words
                              * config.cols])
    instrs.append(halt(planes))
    return Program(config, instrs, ww.reshape(-1)), xw.reshape(-1), expected


def _reload(config, rng):
    # Two layers through the same weight, threshold and score regions: each reload waits
    # for the GEMM before it (weights: unread; thresholds: unwritten, as they are read
    # until the GEMM is written; scores: the GEMM waits for the STORE with unsent).
    k, n, batch = 40, 6, 3
    mt, nt, nw = tiles(batch, config.rows), tiles(n, config.cols), plane_words(k, config.word)
    x = rng.choice([-1, 1], (batch, k))
    xw = pack_act(x, 1, config, bipolar=True)
    a = np.zeros((mt * config.rows, k), dtype=np.int64)
    a[:batch] = x
    instrs = [load("IN", "INPUT", 0, len(xw))]
    consts, expected = [], []
    for step in range(2):
        w = rng.choice([-1, 1], (n, k))
        ww = pack_weights(w, config)
        tau = np.sort(rng.integers(-k, k + 1, (n, 1)), axis=1)
        thr = np.clip(acc_threshold(tau, w, 1, bipolar=True), 0, config.never)
        tw = pack_thresholds(thr, config)
        acc = reference_acc(a, w, 1, config, bipolar=True, dot=x @ w.T)
        wait = 0 if step else NO_WAIT
        instrs += [load("WEIGHT", "CONST", 0, len(ww), unread=wait),
                   load("THRESH", "CONST", 0, len(tw), unwritten=wait),
                   gemm(a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=nw, m_tiles=mt,
                        n_tiles=nt, mode="THRESHOLD", dst_addr=0),
                   gemm(a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=nw, m_tiles=mt,
                        n_tiles=nt, mode="SCORES", dst_addr=0, unsent=0),
                   store(0, mt * config.rows * nt)]
        consts += [ww.reshape(-1), tw.reshape(-1)]
        expected.append(score_words(acc, config))
        # The THRESHOLD layer's output is read by a last GEMM of the second step.
        h = threshold_counts(acc, thr, n, config)
        assert np.array_equal(h[:batch, :n], (x @ w.T >= tau[:, 0][None]).astype(int))
    w2 = rng.choice([-1, 1], (5, n))
    w2w = pack_weights(w2, config)
    acc2 = reference_acc(h[:, :n], w2, 1, config, dot=h[:batch, :n] @ w2.T)
    instrs += [load("WEIGHT", "CONST", 64, len(w2w)),
               gemm(a_buffer="ACT", a_addr=0, b_addr=64, planes=1,
                    words=plane_words(n, config.word), m_tiles=mt,
                    n_tiles=tiles(5, config.cols), mode="SCORES", dst_addr=32, sync=1),
               store(32, mt * config.rows * tiles(5, config.cols)), halt(9)]
    consts.append(w2w.reshape(-1))
    expected.append(score_words(acc2, config))
    return Program(config, instrs, np.concatenate(consts)), xw.reshape(-1), expected


def _pipelined(config, rng, batches=3):
    # A two-layer network over several batches with resident weights: the input and act
    # memories and the scores are double-buffered, so the next batch's LOAD and first
    # GEMM overlap the previous batch's second GEMM and STORE. Waits are as loose as the
    # reuse allows: a LOAD into an input region waits only for the GEMM that read it two
    # batches ago (unread=3), a second GEMM only for the STORE two batches ago (unsent=1).
    k, hidden, n, rows = 36, 10, 6, 3
    mt = tiles(rows, config.rows)
    w1, w2 = rng.choice([-1, 1], (hidden, k)), rng.choice([-1, 1], (n, hidden))
    w1w, w2w = pack_weights(w1, config), pack_weights(w2, config)
    bits = min(2, config.max_out_bits)
    tau = np.sort(rng.integers(-k, k + 1, (hidden, (1 << bits) - 1)), axis=1)
    thr = np.clip(acc_threshold(tau, w1, 1, bipolar=True), 0, config.never)
    tw = pack_thresholds(thr, config)
    nt1, nt2 = tiles(hidden, config.cols), tiles(n, config.cols)
    in_words = mt * plane_words(k, config.word)
    score = mt * config.rows * nt2
    instrs = [load("WEIGHT", "CONST", 0, len(w1w)), load("WEIGHT", "CONST", 100, len(w2w)),
              load("THRESH", "CONST", 0, len(tw))]
    inputs, expected = [], []
    for b in range(batches):
        x = rng.choice([-1, 1], (rows, k))
        xw = pack_act(x, 1, config, bipolar=True)
        a = np.zeros((mt * config.rows, k), dtype=np.int64)
        a[:rows] = x
        acc1 = reference_acc(a, w1, 1, config, bipolar=True, dot=x @ w1.T)
        h = threshold_counts(acc1, thr, hidden, config)[:, :hidden]
        assert np.array_equal(h[:rows], ((x @ w1.T)[:, :, None] >= tau[None]).sum(axis=2))
        acc2 = reference_acc(h, w2, bits, config, dot=h[:rows] @ w2.T)
        in_addr, act_addr, dst = (b % 2) * in_words, (b % 2) * 32, (b % 2) * score
        instrs += [load("IN", "INPUT", in_addr, len(xw), unread=3 if b >= 2 else NO_WAIT),
                   gemm(a_buffer="IN", a_addr=in_addr, b_addr=0, planes=1,
                        words=plane_words(k, config.word), m_tiles=mt, n_tiles=nt1,
                        mode="THRESHOLD", out_bits=bits, dst_addr=act_addr),
                   gemm(a_buffer="ACT", a_addr=act_addr, b_addr=100, planes=bits,
                        words=plane_words(hidden, config.word), m_tiles=mt, n_tiles=nt2,
                        mode="SCORES", dst_addr=dst, sync=1,
                        unsent=1 if b >= 2 else NO_WAIT),
                   store(dst, score)]
        inputs.append(xw.reshape(-1))
        expected.append(score_words(acc2, config))
    instrs.append(halt(batches))
    consts = np.concatenate([w1w.reshape(-1), w2w.reshape(-1), tw.reshape(-1)])
    return Program(config, instrs, consts), np.concatenate(inputs), expected


def programs(config=None, seed=0):
    """The test suite: a list of ``(name, program, inputs, expected)`` for ``config``
    (default :func:`small_config`), every ``expected`` the list of each ``STORE``'s
    words. Shapes are chosen so that reductions, rows and channels leave partial words and
    tiles."""
    config = small_config() if config is None else config
    rng = np.random.default_rng(seed)
    word = config.word
    out = [("halt", Program(config, [halt(7)]), np.zeros(0, dtype=np.uint64), [])]
    out.append(("scores bipolar", *_single(config, rng, 2 * config.rows + 1,
                                           2 * config.cols + 1, word + 7, a_addr=3,
                                           b_addr=5, dst_addr=2)))
    for planes in range(2, min(4, config.xnor_array.max_act_bits) + 1):
        out.append((f"scores {planes} planes",
                    *_single(config, rng, config.rows + 1, config.cols + 3, 2 * word - 3,
                             planes=planes, bipolar=False)))
    for bits in range(1, config.max_out_bits + 1):
        out.append((f"mlp out_bits {bits}",
                    *network(config, rng, config.rows + 1, [word + 5, 2 * config.cols + 1,
                                                            config.cols + 1],
                             out_bits=[bits], status=bits)))
    out.append(("deep unsigned input",
                *network(config, rng, 2 * config.rows, [20, 9, 2 * config.cols, 3],
                         planes=min(3, config.xnor_array.max_act_bits), bipolar=False,
                         out_bits=[config.max_out_bits, 1], in_addr=1)))
    out.append(("reload", *_reload(config, rng)))
    out.append(("pipelined", *_pipelined(config, rng)))
    return out


# Broken streams ----------------------------------------------------------------------------


def faulty_streams(config=None):
    """Broken host-link streams: a list of ``(name, bytes, status, index)``, the status
    and instruction index the accelerator reports. Built from a short valid program (a
    weight ``LOAD`` of one memory word, a ``GEMM``, a ``STORE``, ``HALT``) cut or followed
    by words made through the raw layouts."""
    config = small_config() if config is None else config
    isa = instruction_set(config)
    ww = np.arange(1, config.cols + 1, dtype=np.uint64)
    program = Program(config, [
        load("WEIGHT", "CONST", 0, 1),
        gemm(a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=1, m_tiles=1, n_tiles=1,
             mode="SCORES", dst_addr=0),
        store(0, config.rows), halt(1)], ww)
    words = [w.to_bytes(isa.bytes, "little") for w in program.words()]
    data = ww.astype(f"<u{config.word // 8}").tobytes()
    head = words[0] + data

    def raw(opcode, **fields):
        operands = 0
        if opcode in {op.value for op in isa.opcodes}:
            operands = isa.raw_operands[Opcode(opcode)].const(fields).as_bits()
        return isa.raw_layout.const({"opcode": opcode, "operands": operands,
                                     "reserved": 0}).as_bits().to_bytes(isa.bytes, "little")

    unknown = max(op.value for op in isa.opcodes) + 1   # UPDATE without a latent memory
    act_load = raw(Opcode.LOAD.value, buffer=1, source=0, addr=0, count=1)  # ACT: illegal
    halt_word = int.from_bytes(words[3], "little")
    mask = isa.unused_mask(Opcode.HALT)
    dirty = (halt_word | mask & -mask).to_bytes(isa.bytes, "little")  # its lowest unused bit
    return [
        ("unknown opcode", head + words[1] + raw(unknown), Status.ILLEGAL, 2),
        ("load into act", head + act_load, Status.ILLEGAL, 1),
        ("unused bits", head + words[1] + words[2] + dirty, Status.ILLEGAL, 3),
        ("truncated load data", words[0] + data[:len(data) // 2], Status.TRUNCATED, 0),
        ("truncated word", head + words[1][:isa.bytes // 2], Status.TRUNCATED, 1),
        ("no halt", head + words[1] + words[2], Status.TRUNCATED, 3),
    ]
