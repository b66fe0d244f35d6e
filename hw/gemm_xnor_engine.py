"""The accelerator's ``GEMM_XNOR`` engine: runs one instruction ``C = A @ B.T`` on the
XNOR-popcount array, reading operands from the activation and weight buffers and writing
results to the output buffer.

It walks the same beat schedule as :meth:`lowbit.golden.xnor_array.XNORArray.schedule`:
tiles row-major (``rows`` rows of ``A`` by ``cols`` rows of ``B``), in each tile the
bit-plane passes grouped by total exponent from the top down (Horner: ``dbl`` on the first
beat of each lower group), one beat per operand word. A binary (+-1) operand's second
plane is the all-ones plane, made here rather than stored.

Buffers are single-ported, so a beat's ``rows`` activation words and ``cols`` weight words
are gathered one per cycle from each buffer (in parallel), into staging registers, and
then handed to the array's input register: a beat every ``max(rows, cols)`` cycles, which
is the bandwidth of the buffers (see ``docs/accelerator.md``). A finished tile is written
to the output buffer one value per cycle while the next tile's operands are gathered.
"""

from amaranth import Array, Const, Module, Mux, Signal, signed

from ..config.xnor_array import Op
from ..isa import Opcode
from .buffer_port import Engine
from .xnor_array import XNORArray

__all__ = ["GemmXnorEngine"]


class GemmXnorEngine(Engine):
    """Sequencer of ``GEMM_XNOR`` instructions around an :class:`XNORArray`.

    Parameters
    ----------
    config : AcceleratorConfig

    Ports: those of :class:`~lowbit.hw.buffer_port.Engine`, on all three buffers; ``beat``
    pulses when the array accepts a beat.
    """

    opcode = Opcode.GEMM_XNOR

    def elaborate(self, platform):
        cfg, acfg = self.config, self.config.xnor_array
        R, C, W = acfg.rows, acfg.cols, cfg.word
        S = max(R, C)
        m = Module()
        m.submodules.array = array = XNORArray(acfg)
        m.d.comb += self.beat.eq(array.i_stream.valid & array.i_stream.ready)

        f = Signal(self.layout)  # the latched instruction
        log_w = W.bit_length() - 1
        nw = Signal(range(acfg.max_words + 1))
        last_mask = Signal(W)
        a_bin, b_bin, bb = Signal(), Signal(), Signal()
        top = Signal(range(16))
        na = Signal(range(9))
        maxexp_b = Signal(range(8))
        offset = Signal(signed(acfg.accumulator_width))

        # Issuer state.
        wide = max(cfg.act_words, cfg.weight_words, cfg.out_words) * 2 + 1
        r0 = Signal(range(cfg.act_words + R + 1))
        c0 = Signal(range(cfg.weight_words + C + 1))
        e = Signal(range(16))
        ia = Signal(range(9))
        w = Signal(range(acfg.max_words + 1))
        slot = Signal(range(S))
        a_tile = Signal(range(wide))
        b_tile = Signal(range(wide))
        a_ptr = Signal(range(wide))
        b_ptr = Signal(range(wide))
        tile_started, group_started = Signal(), Signal()
        issuing = Signal()

        # Pass (e, ia) -> which planes, validity, sign.
        exp_a = Signal(signed(5))
        eb = Signal(signed(6))
        ib = Signal(range(9))
        valid_pass = Signal()
        a_ones, b_ones = Signal(), Signal()
        neg = Signal()
        m.d.comb += [
            exp_a.eq(Mux(bb, 0, Mux(a_bin, 1 - ia, ia))),
            eb.eq(e - exp_a),
            valid_pass.eq(Mux(bb, ia == 0, (eb >= 0) & (eb <= maxexp_b))),
            ib.eq(Mux(b_bin & ~bb, 1 - eb, eb)),
            a_ones.eq(a_bin & ~bb & (ia == 1)),
            b_ones.eq(b_bin & ~bb & (ib == 1)),
            neg.eq((a_ones | (f.act_signed & (ia == f.act_bits - 1)))
                   ^ (b_ones | (f.weight_signed & (ib == f.weight_bits - 1)))),
        ]
        a_plane_off = Signal(range(8 * (acfg.max_words + 1)))
        b_plane_off = Signal(range(8 * (acfg.max_words + 1)))
        m.d.comb += [
            a_plane_off.eq(Mux(a_bin, 0, ia) * nw),
            b_plane_off.eq(Mux(b_bin, 0, ib) * nw),
        ]

        # Slot i of the current beat.
        a_row_ok = Signal()
        b_row_ok = Signal()
        m.d.comb += [
            a_row_ok.eq((slot < R) & (r0 + slot < f.m)),
            b_row_ok.eq((slot < C) & (c0 + slot < f.n)),
        ]
        a_read = Signal()
        b_read = Signal()
        go = Signal()
        can_issue = Signal()  # the staging registers can take this slot's data
        m.d.comb += [
            a_read.eq(issuing & valid_pass & a_row_ok & ~a_ones),
            b_read.eq(issuing & valid_pass & b_row_ok & ~b_ones),
            self.act.addr.eq(a_ptr + a_plane_off + w),
            self.act.re.eq(a_read & can_issue),
            self.weight.addr.eq(b_ptr + b_plane_off + w),
            self.weight.re.eq(b_read & can_issue),
            go.eq(issuing & valid_pass & can_issue & (~a_read | self.act.grant)
                  & (~b_read | self.weight.grant)),
        ]

        # What the capture stage (one cycle later) does with each slot.
        ctl_layout = {"first": 1, "last": 1, "dbl": 1, "neg": 1}
        cap = Signal(1, name="cap_valid")
        cap_slot = Signal(range(S))
        cap_a = Signal(2)  # 0 zero, 1 buffer data, 2 ones
        cap_b = Signal(2)
        cap_lastword = Signal()
        cap_ctl = {k: Signal(v, name=f"cap_{k}") for k, v in ctl_layout.items()}
        is_last_word = w == nw - 1
        beat_first = ~tile_started
        beat_last = Mux(bb, 1, e == 0) & is_last_word
        beat_dbl = (e != top) & ~group_started & (w == 0)
        m.d.sync += cap.eq(go)
        with m.If(go):
            m.d.sync += [
                cap_slot.eq(slot),
                cap_a.eq(Mux(a_row_ok, Mux(a_ones, 2, 1), 0)),
                cap_b.eq(Mux(b_row_ok, Mux(b_ones, 2, 1), 0)),
                cap_lastword.eq(is_last_word),
                cap_ctl["first"].eq(beat_first),
                cap_ctl["last"].eq(beat_last),
                cap_ctl["dbl"].eq(beat_dbl),
                cap_ctl["neg"].eq(neg),
            ]
        mask = Mux(cap_lastword, last_mask, Const(-1, W))
        val_a = Signal(W)
        val_b = Signal(W)
        m.d.comb += [
            val_a.eq(Mux(cap_a == 1, self.act.rdata & mask, Mux(cap_a == 2, mask, 0))),
            val_b.eq(Mux(cap_b == 1, self.weight.rdata & mask, Mux(cap_b == 2, mask, 0))),
        ]
        stage_a = Array(Signal(W, name=f"stage_a{i}", reset_less=True) for i in range(S))
        stage_b = Array(Signal(W, name=f"stage_b{i}", reset_less=True) for i in range(S))
        stage_ctl = {k: Signal(v, name=f"stage_{k}") for k, v in ctl_layout.items()}
        with m.If(cap):
            m.d.sync += [stage_a[cap_slot].eq(val_a), stage_b[cap_slot].eq(val_b)]
            with m.If(cap_slot == S - 1):
                m.d.sync += [stage_ctl[k].eq(cap_ctl[k]) for k in ctl_layout]

        # Staging -> the array's input register. `reserved`: a beat is being gathered.
        reserved = Signal()
        complete = Signal()  # all slots captured, not yet moved
        capturing_last = cap & (cap_slot == S - 1)
        beat_free = ~array.i_stream.valid | array.i_stream.ready
        move = Signal()
        m.d.comb += [
            move.eq((complete | capturing_last) & beat_free),
            can_issue.eq((slot != 0) | ~reserved | move),
        ]
        payload = array.i_stream.payload
        with m.If(array.i_stream.ready):
            m.d.sync += array.i_stream.valid.eq(0)
        with m.If(move):
            m.d.sync += array.i_stream.valid.eq(1)
            for i in range(R):
                m.d.sync += payload.a[i].eq(
                    Mux(capturing_last & (i == S - 1), val_a, stage_a[i]))
            for j in range(C):
                m.d.sync += payload.b[j].eq(
                    Mux(capturing_last & (j == S - 1), val_b, stage_b[j]))
            ctl = {k: Mux(capturing_last, cap_ctl[k], stage_ctl[k]) for k in ctl_layout}
            m.d.sync += [
                payload.first.eq(ctl["first"]), payload.last.eq(ctl["last"]),
                payload.dbl.eq(ctl["dbl"]), payload.neg.eq(ctl["neg"]),
                payload.op.eq(Mux(bb, Op.XNOR, Op.AND)), payload.offset.eq(offset),
            ]
        with m.If(capturing_last & ~move):
            m.d.sync += complete.eq(1)
        with m.Elif(move):
            m.d.sync += complete.eq(0)
        with m.If(go & (slot == 0)):
            m.d.sync += reserved.eq(1)
        with m.Elif(move):
            m.d.sync += reserved.eq(0)

        # Result writer: the array's tile to the output buffer, one value per cycle.
        r0w = Signal.like(r0)
        c0w = Signal.like(c0)
        pos_i = Signal(range(R))
        pos_j = Signal(range(C))
        c_rowtile = Signal(range(wide))
        c_row = Signal(range(wide))
        writing = Signal()
        issuer_done = Signal(init=1)
        tile = array.o_stream.payload
        values = Array(tile[i][j] for i in range(R) for j in range(C))
        in_range = (r0w + pos_i < f.m) & (c0w + pos_j < f.n)
        value = Signal(signed(acfg.accumulator_width))
        m.d.comb += [
            value.eq(values[pos_i * C + pos_j]),
            self.out.addr.eq(c_row + c0w + pos_j),
            self.out.wdata.eq(value),  # sign-extended to the buffer word
            self.out.we.eq(writing & array.o_stream.valid & in_range),
        ]
        step = writing & array.o_stream.valid & (~in_range | self.out.grant)
        last_pos = (pos_i == R - 1) & (pos_j == C - 1)
        m.d.comb += array.o_stream.ready.eq(step & last_pos)
        with m.If(step):
            m.d.sync += pos_j.eq(pos_j + 1)
            with m.If(pos_j == C - 1):
                m.d.sync += [pos_j.eq(0), pos_i.eq(pos_i + 1), c_row.eq(c_row + f.c_stride)]
            with m.If(last_pos):
                m.d.sync += [pos_i.eq(0), c0w.eq(c0w + C), c_row.eq(c_rowtile)]
                with m.If(c0w + C >= f.n):
                    m.d.sync += [c0w.eq(0), r0w.eq(r0w + R),
                                 c_rowtile.eq(c_rowtile + f.c_stride * R),
                                 c_row.eq(c_rowtile + f.c_stride * R)]
                    with m.If(r0w + R >= f.m):
                        m.d.sync += writing.eq(0)

        # Issuer loop advance.
        def next_tile():
            m.d.sync += [e.eq(top), ia.eq(0), w.eq(0), tile_started.eq(0),
                         group_started.eq(0), c0.eq(c0 + C), b_tile.eq(b_tile + f.b_stride * C),
                         b_ptr.eq(b_tile + f.b_stride * C), a_ptr.eq(a_tile)]
            with m.If(c0 + C >= f.n):
                m.d.sync += [c0.eq(0), b_tile.eq(f.b_addr), b_ptr.eq(f.b_addr),
                             r0.eq(r0 + R), a_tile.eq(a_tile + f.a_stride * R),
                             a_ptr.eq(a_tile + f.a_stride * R)]
                with m.If(r0 + R >= f.m):
                    m.d.sync += [issuing.eq(0), issuer_done.eq(1)]

        def next_pass():
            m.d.sync += [w.eq(0), ia.eq(ia + 1)]
            with m.If(ia == na - 1):
                m.d.sync += [ia.eq(0), e.eq(e - 1), group_started.eq(0)]
                with m.If(e == 0):
                    next_tile()

        with m.If(issuing):
            with m.If(~valid_pass):
                next_pass()
            with m.Elif(go):
                m.d.sync += [slot.eq(slot + 1), a_ptr.eq(a_ptr + f.a_stride),
                             b_ptr.eq(b_ptr + f.b_stride)]
                with m.If(slot == S - 1):
                    m.d.sync += [slot.eq(0), a_ptr.eq(a_tile), b_ptr.eq(b_tile),
                                 tile_started.eq(1), group_started.eq(1), w.eq(w + 1)]
                    with m.If(is_last_word):
                        next_pass()

        # Instruction start: latch, then derive the per-instruction constants.
        setup = Signal()
        m.d.sync += setup.eq(0)
        m.d.comb += self.busy.eq(setup | issuing | writing | ~issuer_done)
        with m.If(self.start):
            m.d.sync += [f.eq(self.instr), setup.eq(1), issuer_done.eq(0)]
        k_signed = Signal(signed(len(f.k) + 1))
        m.d.comb += k_signed.eq(f.k)
        with m.If(setup):
            k = f.k
            m.d.sync += [
                nw.eq((k + W - 1) >> log_w),
                last_mask.eq(Const(-1, W) >> ((k - 1)[:log_w] ^ (W - 1))),
                a_bin.eq(f.act_bits == 1), b_bin.eq(f.weight_bits == 1),
                bb.eq((f.act_bits == 1) & (f.weight_bits == 1)),
                top.eq(Mux(f.act_bits == 1, 1, f.act_bits - 1)
                       + Mux(f.weight_bits == 1, 1, f.weight_bits - 1)),
                e.eq(Mux((f.act_bits == 1) & (f.weight_bits == 1), 0,
                         Mux(f.act_bits == 1, 1, f.act_bits - 1)
                         + Mux(f.weight_bits == 1, 1, f.weight_bits - 1))),
                na.eq(Mux(f.act_bits == 1, Mux(f.weight_bits == 1, 1, 2), f.act_bits)),
                maxexp_b.eq(Mux(f.weight_bits == 1, 1, f.weight_bits - 1)),
                offset.eq(Mux((f.act_bits == 1) & (f.weight_bits == 1),
                              k_signed - (((k + W - 1) >> log_w) << (log_w + 1)), 0)),
                r0.eq(0), c0.eq(0), ia.eq(0), w.eq(0), slot.eq(0),
                a_tile.eq(f.a_addr), a_ptr.eq(f.a_addr), b_tile.eq(f.b_addr),
                b_ptr.eq(f.b_addr), tile_started.eq(0), group_started.eq(0),
                issuing.eq(1), writing.eq(1), r0w.eq(0), c0w.eq(0), pos_i.eq(0),
                pos_j.eq(0), c_rowtile.eq(f.c_addr), c_row.eq(f.c_addr),
            ]
            # top for binary x binary is 0 (a single XNOR pass).
            with m.If((f.act_bits == 1) & (f.weight_bits == 1)):
                m.d.sync += top.eq(0)
        return m
