"""The accelerator's ``NORM`` engine for the threshold modes (``THRESHOLD`` with the norm
unit built for ``sign`` output, ``REQUANTISE`` with ``multithreshold``).

One instruction runs in two phases on the norm unit (:class:`lowbit.hw.lightnorm.
LightNorm`):

1. **parameters**: for each channel group in use, ``block * T`` thresholds and ``block``
   flip words are read from the weight buffer (layout in ``docs/program_format.md``) and
   sent as one ``LOAD`` beat; channels past ``channels`` get zeros;
2. **apply**: for each of ``rows`` rows, each group's ``block`` values are read from the
   output buffer (the low ``input_width`` bits of each word, two's complement) and sent as
   an ``APPLY`` beat. The unit's outputs are packed into bit planes (a row of ``levels``
   planes of ``ceil(channels / word)`` words, bit 1 meaning +1 for ``sign``) and written
   to the activation buffer.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..config.lightnorm import Op
from ..isa import Opcode, instruction_set
from .buffer_port import BufferPort
from .lightnorm import LightNorm

__all__ = ["NormEngine"]


class NormEngine(wiring.Component):
    """Sequencer of ``NORM`` ``THRESHOLD``/``REQUANTISE`` instructions around a
    :class:`LightNorm`. Ports as :class:`~lowbit.hw.gemm_xnor_engine.GemmXnorEngine`'s;
    ``beat`` pulses when the unit accepts a beat."""

    def __init__(self, config):
        self.config = config
        self.layout = instruction_set(config).operands[Opcode.NORM]
        super().__init__({
            "start": In(1),
            "instr": In(self.layout),
            "busy": Out(1),
            "beat": Out(1),
            "act": Out(BufferPort(config.act_words, config.word)),
            "weight": Out(BufferPort(config.weight_words, config.word)),
            "out": Out(BufferPort(config.out_words, config.word)),
        })

    def elaborate(self, platform):
        cfg, ncfg = self.config, self.config.lightnorm
        W, B, T, L = cfg.word, ncfg.block, ncfg.thresholds, ncfg.levels
        per_word = W // B  # groups per packed word (both powers of two)
        log_b, log_w, log_pw = (B.bit_length() - 1, W.bit_length() - 1,
                                per_word.bit_length() - 1)
        m = Module()
        m.submodules.unit = unit = LightNorm(ncfg)
        m.d.comb += self.beat.eq(unit.i_stream.valid & unit.i_stream.ready)

        f = Signal(self.layout)
        wide = 2 * max(cfg.act_words, cfg.weight_words, cfg.out_words) + 1
        groups_used = Signal(range(ncfg.groups + 1))
        ncw = Signal(range(ncfg.channels // W + 2))  # words per plane of a row

        # Issuer: parameters, then apply beats.
        g = Signal(range(ncfg.groups + 1))
        b = Signal(range(B))
        t = Signal(range(T + 1))
        r = Signal(range(cfg.out_words + 1))
        ch = Signal(range(ncfg.channels + B + 1))
        tptr = Signal(range(wide))
        fptr = Signal(range(wide))
        src_row = Signal(range(wide))
        xptr = Signal(range(wide))
        params = Signal(ncfg.param_layout)
        xs = Signal(data.ArrayLayout(ncfg.input_width, B))
        cap, cap_flip = Signal(), Signal()
        cap_b = Signal(range(B))
        cap_t = Signal(range(T + 1))
        ch_ok = ch < f.channels
        beat = unit.i_stream.payload
        thresholds = params.t
        m.d.sync += cap.eq(0)
        with m.If(cap):
            with m.If(cap_flip):
                m.d.sync += params.flip[cap_b].eq(self.weight.rdata[0])
            with m.Else():
                m.d.sync += thresholds[cap_b][cap_t].eq(self.weight.rdata)
        xcap = Signal()
        xcap_b = Signal(range(B))
        m.d.sync += xcap.eq(0)
        with m.If(xcap):
            m.d.sync += xs[xcap_b].eq(self.out.rdata)

        issue_done = Signal(init=1)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [f.eq(self.instr), issue_done.eq(0)]
                    m.next = "SETUP"
            with m.State("SETUP"):
                m.d.sync += [
                    groups_used.eq((f.channels + B - 1) >> log_b),
                    ncw.eq((f.channels + W - 1) >> log_w),
                    g.eq(0), b.eq(0), t.eq(0), r.eq(0), ch.eq(0),
                    tptr.eq(f.param_addr), fptr.eq(f.param_addr + f.channels * T),
                    src_row.eq(f.src_addr), xptr.eq(f.src_addr),
                ]
                m.next = "PARAM"
            with m.State("PARAM"):
                is_flip = t == T
                m.d.comb += [self.weight.addr.eq(Mux(is_flip, fptr, tptr)),
                             self.weight.re.eq(ch_ok)]
                with m.If(~ch_ok | self.weight.grant):
                    with m.If(ch_ok):
                        m.d.sync += [cap.eq(1), cap_flip.eq(is_flip), cap_b.eq(b),
                                     cap_t.eq(t)]
                        with m.If(is_flip):
                            m.d.sync += fptr.eq(fptr + 1)
                        with m.Else():
                            m.d.sync += tptr.eq(tptr + 1)
                    with m.Else():
                        with m.If(is_flip):
                            m.d.sync += params.flip[b].eq(0)
                        with m.Else():
                            m.d.sync += thresholds[b][t].eq(0)
                    m.d.sync += t.eq(t + 1)
                    with m.If(is_flip):
                        m.d.sync += [t.eq(0), b.eq(b + 1), ch.eq(ch + 1)]
                        with m.If(b == B - 1):
                            m.d.sync += b.eq(0)
                            m.next = "PARAM_SEND"
            with m.State("PARAM_SEND"):
                # The last read's data lands in `params` at the end of the previous cycle
                # at the latest (`cap` is one cycle behind the grant).
                with m.If(~cap):
                    m.d.comb += [unit.i_stream.valid.eq(1), beat.op.eq(Op.LOAD),
                                 beat.group.eq(g), beat.data.params.eq(params)]
                    with m.If(unit.i_stream.ready):
                        m.d.sync += g.eq(g + 1)
                        m.next = "PARAM"
                        with m.If(g == groups_used - 1):
                            m.d.sync += [g.eq(0), ch.eq(0)]
                            m.next = "X"
            with m.State("X"):
                m.d.comb += [self.out.addr.eq(xptr), self.out.re.eq(ch_ok)]
                with m.If(~ch_ok | self.out.grant):
                    with m.If(ch_ok):
                        m.d.sync += [xcap.eq(1), xcap_b.eq(b), xptr.eq(xptr + 1)]
                    with m.Else():
                        m.d.sync += xs[b].eq(0)
                    m.d.sync += [b.eq(b + 1), ch.eq(ch + 1)]
                    with m.If(b == B - 1):
                        m.d.sync += b.eq(0)
                        m.next = "X_SEND"
            with m.State("X_SEND"):
                with m.If(~xcap):
                    m.d.comb += [unit.i_stream.valid.eq(1), beat.op.eq(Op.APPLY),
                                 beat.group.eq(g)]
                    for i in range(B):
                        m.d.comb += beat.data.x[i].eq(xs[i].as_signed())
                    with m.If(unit.i_stream.ready):
                        m.d.sync += g.eq(g + 1)
                        m.next = "X"
                        with m.If(g == groups_used - 1):
                            m.d.sync += [g.eq(0), ch.eq(0), r.eq(r + 1),
                                         src_row.eq(src_row + f.src_stride),
                                         xptr.eq(src_row + f.src_stride)]
                            with m.If(r == f.rows - 1):
                                m.d.sync += issue_done.eq(1)
                                m.next = "IDLE"

        # Packer: the unit's outputs into bit-plane words of the destination row.
        planes = [Signal(W, name=f"plane{j}") for j in range(L)]
        og = Signal(range(ncfg.groups + 1))
        orow = Signal(range(cfg.out_words + 1))
        dst_row = Signal(range(wide))
        j = Signal(range(L + 1))
        packing = Signal()
        flushing = Signal()
        result = unit.o_stream.payload.data.out
        m.d.comb += unit.o_stream.ready.eq(packing & ~flushing)
        with m.If(unit.o_stream.valid & unit.o_stream.ready):
            for jj in range(L):
                bits = Cat(result[i][jj] & (og * B + i < f.channels) for i in range(B))
                m.d.sync += planes[jj].word_select(og[:log_pw] if log_pw else 0, B).eq(bits)
            with m.If(((og[:log_pw] if log_pw else 0) == per_word - 1) | (og == groups_used - 1)):
                m.d.sync += [flushing.eq(1), j.eq(0)]
            with m.Else():
                m.d.sync += og.eq(og + 1)
        plane = Signal(W)
        m.d.comb += plane.eq(planes[0])
        for jj in range(1, L):
            with m.If(j == jj):
                m.d.comb += plane.eq(planes[jj])
        with m.If(flushing):
            m.d.comb += [self.act.addr.eq(dst_row + j * ncw + (og >> log_pw)),
                         self.act.wdata.eq(plane), self.act.we.eq(1)]
            with m.If(self.act.grant):
                m.d.sync += j.eq(j + 1)
                with m.If(j == L - 1):
                    m.d.sync += [flushing.eq(0), og.eq(og + 1)]
                    m.d.sync += [planes[jj].eq(0) for jj in range(L)]
                    with m.If(og == groups_used - 1):
                        m.d.sync += [og.eq(0), orow.eq(orow + 1),
                                     dst_row.eq(dst_row + f.dst_stride)]
                        with m.If(orow == f.rows - 1):
                            m.d.sync += packing.eq(0)
        with m.If(self.start):
            m.d.sync += [og.eq(0), orow.eq(0), dst_row.eq(self.instr.dst_addr),
                         packing.eq(1), flushing.eq(0)]
            m.d.sync += [planes[jj].eq(0) for jj in range(L)]
        m.d.comb += self.busy.eq(~issue_done | packing)
        return m

