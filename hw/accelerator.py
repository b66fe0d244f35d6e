"""The full-rate accelerator: host link, three decoupled stages, five memories (six in a
training configuration), the PE array and the result stage, from one
:class:`~lowbit.config.accelerator.AcceleratorConfig`.

* The **front end** fetches instruction words from ``i_stream``, checks each (the checks of
  :meth:`lowbit.isa.InstructionSet.decode` without the region checks: addresses wrap),
  runs ``LOAD`` itself (a memory word is assembled from the link and written in one cycle)
  and, in a training configuration, ``UPDATE`` (latent words through a
  :class:`~lowbit.hw.madam_update.MadamUpdate` as their gradients arrive), pushes ``GEMM``
  and ``STORE`` into their stages' queues and, at ``HALT``, waits for both stages and sends
  the ``STATUS`` record.
* The **execute stage** pops a ``GEMM`` when its waits hold and issues one beat per cycle:
  one ``rows``-lane word of the ``in`` or ``act`` memory and one ``cols``-lane word of the
  ``weight`` memory, addresses from counters (no multiplier). A tile starts only when the
  result stage will be free at its end, so the array never stops.
* The **store stage** pops a ``STORE`` when its wait holds and sends a ``DATA`` record;
  with a statistics unit (``norm_channels > 0``) it also runs ``STATS``: score words
  through a :class:`~lowbit.hw.lightnorm.LightNorm`, their statistics out as a record.

The stages keep their order through six counters (``GEMM``s dispatched, started, done
reading, done writing; ``STORE``s dispatched and done) and the wait fields of
:mod:`lowbit.isa`; :class:`lowbit.timing.Timing` is this module's schedule, cycle for cycle.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..config.accelerator import AcceleratorConfig
from ..config.madam import MadamUpdateConfig
from ..config.lightnorm import Op as NormOp
from ..isa import (DATA_HEADER, STATS_LANES, STATUS_RECORD, Buffer, GemmMode, Opcode, Record,
                   Status, argmax_bytes, instruction_set)
from .core_memory import CoreMemory
from .lightnorm import LightNorm
from .madam_update import MadamUpdate
from .pe_array import PEArray
from .result_stage import ResultStage, tile_context

__all__ = ["Accelerator"]

#: Width of the stage counters: more than twice the most instructions ever outstanding.
COUNT_BITS = 6
COUNTER_BITS = 32
#: Entries of the tile-context delay line: one block RAM's depth (256 x 16 on the iCE40).
CTX_LINE_DEPTH = 256


class Accelerator(wiring.Component):
    """The accelerator, with a host link of ``config.host_link_bits``.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    i_stream : In(stream.Signature(host_link_bits))
        Instructions and ``LOAD`` data from the host, little-endian.
    o_stream : Out(stream.Signature(host_link_bits))
        ``DATA`` and ``STATUS`` records to the host.

    Raises
    ------
    TypeError
        If ``config`` is not an :class:`AcceleratorConfig` (before anything is built).
    """

    def __new__(cls, config=None, *args, **kwargs):
        # Checked before the object exists, so a refused one leaves nothing behind.
        if config is not None and not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        return super().__new__(cls)

    def __init__(self, config=None):
        config = AcceleratorConfig() if config is None else config
        self.config = config
        self.isa = instruction_set(config)
        super().__init__({
            "i_stream": In(stream.Signature(config.host_link_bits)),
            "o_stream": Out(stream.Signature(config.host_link_bits)),
        })

    # Checks derived from the instruction set ----------------------------------------------

    def _illegal(self, m, ir):
        """A signal: the instruction in ``ir`` is one the gateware refuses (ILLEGAL)."""
        isa = self.isa
        raw = data.View(isa.raw_layout, ir.as_value())
        operands = ir.as_value()[isa.layout["operands"].offset:]
        bad_any = Const(0)
        for op in isa.opcodes:
            view = data.View(isa.raw_operands[op], operands[:isa.raw_operands[op].size])
            conds = []
            for name, field in isa.operands[op]:
                value = view[name]
                shape = field.shape
                if isinstance(shape, type) and issubclass(shape, enum.Enum):
                    allowed = list(shape)
                    if op == Opcode.LOAD and name == "buffer":
                        allowed = isa.load_buffers
                    if op == Opcode.STORE and name == "buffer":
                        allowed = isa.store_buffers
                    if op == Opcode.GEMM and name == "a_buffer":
                        allowed = (Buffer.IN, Buffer.ACT)
                    ok = Const(0)
                    for member in allowed:
                        ok = ok | (value == member.value)
                    conds.append(~ok)
                elif isinstance(shape, range):
                    if shape.start > 0:
                        conds.append(value < shape.start)
                    if shape.stop - 1 < (1 << len(value)) - 1:
                        conds.append(value > shape.stop - 1)
            fields = {name: view[name] for name, _ in isa.operands[op]}
            conds += [rule(fields) for _, rule in isa.field_rules(op)]
            mask = isa.unused_mask(op)
            unused = Cat(ir.as_value()[b] for b in range(isa.width) if mask >> b & 1)
            if len(unused):
                conds.append(unused.any())
            bad = Const(0)
            for c in conds:
                bad = bad | c
            bad_any = bad_any | ((raw.opcode == op.value) & bad)
        known = Const(0)
        for op in isa.opcodes:
            known = known | (raw.opcode == op.value)
        illegal = Signal()
        m.d.comb += illegal.eq(~known | bad_any)
        return illegal

    def _update_unit(self, m, mems, uo, cnt, outstanding, stores_idle):
        """The datapath of ``UPDATE`` (a training configuration): the latent word's bit
        planes shifted past a :class:`MadamUpdate` of ``link / 8`` lanes, one gradient byte
        a lane per link beat, and the updated planes shifted into a second register. The
        front end's states drive it through the returned signals: ``read`` (the latent
        word's read), ``latch``, ``feed`` (a gradient beat taken); it reports
        ``waits_met``, ``last_beat``, ``collected`` (every lane of the word is back: the
        word and its signs are written in this cycle) and ``last_word``."""
        cfg = self.config
        C, W, LB, LT = cfg.cols, cfg.word, cfg.host_link_bits, cfg.latent_bits
        n = LB // 8
        per_word = W // n
        mcfg = MadamUpdateConfig(lanes=n, bits=LT, grad_bits=8, lr_headroom=6)
        m.submodules.madam = mu = MadamUpdate(mcfg)
        sig = {name: Signal(name=f"upd_{name}") for name in ("read", "latch", "feed")}
        lptr = Signal(range(cfg.latent_depth))
        wptr = Signal(range(cfg.weight_depth * C))
        left = Signal(range(cfg.latent_depth + 1))
        lr = Signal(range(mcfg.max_lr_exponent + 1))
        lat = Signal(LT * W)    # the word's planes, shifted down n bits a beat
        new = Signal(LT * W)    # the updated planes, shifted in from the top
        beat = Signal(range(per_word))
        outs = Signal(range(per_word))
        last_beat, collected = Signal(), Signal()
        g_read = outstanding(cnt["g_disp"], cnt["g_read"])
        g_written = outstanding(cnt["g_disp"], cnt["g_written"])
        waits_met = Signal()
        m.d.comb += waits_met.eq((g_read <= uo.unread) & (g_written <= uo.unwritten)
                                 & stores_idle)
        # A grad_bits-bit mantissa in an 8-bit field: the same rounding with the exponent
        # raised by 8 - grad_bits (lowbit.golden.training.madam_update's shift is
        # grad_bits - 1 - lr).
        start = [lptr.eq(uo.lat_addr), wptr.eq(uo.w_addr), left.eq(uo.count),
                 lr.eq(uo.lr_exponent + 8 - uo.grad_bits)]
        with m.If(sig["read"]):
            m.d.comb += [mems["latent"].raddr.eq(lptr), mems["latent"].re.eq(1)]
            # `outs` restarts too: a word cut short by a timeout left a partial count.
            m.d.sync += [beat.eq(0), last_beat.eq(per_word == 1), outs.eq(0)]
        with m.If(sig["latch"]):
            m.d.sync += lat.eq(mems["latent"].rdata)
        planes = [lat[p * W:(p + 1) * W] for p in range(LT)]
        beat_in = mu.i_stream.payload
        m.d.comb += [mu.i_stream.valid.eq(sig["feed"]), beat_in.lr_exponent.eq(lr),
                     mu.o_stream.ready.eq(1)]
        payload = self.i_stream.payload
        for i in range(n):
            m.d.comb += [beat_in.w[i].sign.eq(planes[0][i]),
                         beat_in.w[i].code.eq(Cat(planes[p][i] for p in range(1, LT))),
                         beat_in.grad[i].eq(payload[8 * i:8 * (i + 1)])]
        with m.If(sig["feed"]):
            m.d.sync += [lat.eq(Cat(Cat(p[n:], Const(0, n)) for p in planes)), beat.eq(beat + 1),
                         last_beat.eq(beat == per_word - 2)]
        out = mu.o_stream.payload
        new_planes = [new[p * W:(p + 1) * W] for p in range(LT)]
        with m.If(mu.o_stream.valid):
            fresh = [Cat(out.w[i].sign for i in range(n))] + [
                Cat(out.w[i].code[p - 1] for i in range(n)) for p in range(1, LT)]
            m.d.sync += [new.eq(Cat(Cat(q[n:], f) for q, f in zip(new_planes, fresh))),
                         outs.eq(outs + 1), collected.eq(outs == per_word - 1)]
            with m.If(outs == per_word - 1):
                m.d.sync += outs.eq(0)
        lane_bits = (C - 1).bit_length()
        # The write hangs off the `collected` flip-flop, not off the state machine: its
        # select of the weight memory's write port (shared with LOAD) was the ECP5's
        # critical path through the state decode.
        with m.If(collected):
            signs = ~new_planes[0]    # bit 1 = +1
            m.d.comb += [mems["latent"].waddr.eq(lptr), mems["latent"].wdata.eq(new),
                         mems["latent"].we.eq(1),
                         mems["weight"].waddr.eq(wptr[lane_bits:]),
                         mems["weight"].wdata.eq(Cat(signs for _ in range(C))),
                         mems["weight"].we.eq(Const(1, C) << wptr[:lane_bits])]
            m.d.sync += [collected.eq(0), lptr.eq(lptr + 1), wptr.eq(wptr + 1),
                         left.eq(left - 1)]
        return {**sig, "start": start, "waits_met": waits_met, "last_beat": last_beat,
                "collected": collected, "last_word": left == 1}

    def _stats_unit(self, m, mems, wq, s_ok, s_head, s_stats, sto, storing, s_rptr,
                    s_words_left, s_reads_left, s_last_word):
        """The datapath of ``STATS`` in the store stage: score words read in order (sample
        major, ``groups`` a sample) into a small queue with their ``STAT`` flags, then
        through a :class:`~lowbit.hw.lightnorm.LightNorm` (statistics in its memory, one
        word per group); each group's result (emitted on the last sample's beat) goes into
        the store stage's word queue as two words of ``cols`` lanes, the sums, then the
        spreads (the unit's result held for the second), and out as a ``STORE``'s words
        do. The unit's back-pressure holds the queue, and the reads stop
        while it is full, so nothing is lost when the link is slow."""
        cfg = self.config
        C, W, K = cfg.cols, cfg.word, cfg.norm_chunks
        ncfg = cfg.norm
        iw, depth = ncfg.input_width, cfg.score_depth
        log_k = (K - 1).bit_length()
        m.submodules.stats = nu = LightNorm(ncfg)
        reading = Signal()
        half = Signal()                            # the group's sums are in the word queue
        g = Signal(range(cfg.norm_groups))
        groups_m1 = Signal(range(cfg.norm_groups))
        last_g = Signal()                          # g == groups - 1
        left = Signal(range(depth + 1))            # samples left, this one included
        first, new, last_s = Signal(), Signal(), Signal()
        rem = Signal(range(depth + 1))             # samples left in this chunk, this one too
        k = Signal(range(K + 1))                   # chunks started
        base = Signal(range((depth >> log_k) + 1))
        extra = Signal(range(K))
        hd = s_head.op.stats
        with m.If(s_ok):
            m.d.sync += s_stats.eq(s_head.stats)
            with m.If(s_head.stats):
                hb = hd.samples >> log_k
                he = hd.samples & (K - 1)
                m.d.sync += [sto.eq(hd), reading.eq(1), g.eq(0), groups_m1.eq(hd.groups - 1),
                             last_g.eq(hd.groups == 1), left.eq(hd.samples),
                             last_s.eq(hd.samples == 1), first.eq(1), new.eq(1),
                             base.eq(hb), extra.eq(he), rem.eq(hb + (he != 0)), k.eq(1),
                             s_words_left.eq(hd.groups * STATS_LANES), s_reads_left.eq(0),
                             s_last_word.eq(0), s_rptr.eq(hd.addr), half.eq(0)]
        ctl = data.StructLayout({"group": range(cfg.norm_groups), "first": 1, "chunk": 1,
                                 "last": 1})
        entry = data.StructLayout({"x": data.ArrayLayout(iw, C), "ctl": ctl})
        m.submodules.stats_beats = bq = fifo.SyncFIFO(width=entry.size, depth=4)
        inflight = Signal()
        beat_ctl = Signal(ctl)
        read = Signal()
        m.d.comb += read.eq(storing & s_stats & reading & (bq.level + inflight < 4))
        m.d.sync += inflight.eq(read)
        with m.If(read):
            m.d.comb += [mems["score"].raddr.eq(s_rptr), mems["score"].re.eq(1)]
            m.d.sync += [beat_ctl.group.eq(g), beat_ctl.first.eq(first),
                         beat_ctl.chunk.eq(new), beat_ctl.last.eq(last_s),
                         s_rptr.eq(s_rptr + 1), g.eq(g + 1), last_g.eq(g + 1 == groups_m1)]
            with m.If(last_g):
                m.d.sync += [g.eq(0), last_g.eq(groups_m1 == 0), first.eq(0),
                             left.eq(left - 1), last_s.eq(left == 2)]
                with m.If(last_s):
                    m.d.sync += reading.eq(0)
                # The array_split rule: the first `extra` chunks have base + 1 samples.
                with m.If(rem == 1):
                    m.d.sync += [new.eq(1), rem.eq(base + (k < extra)), k.eq(k + 1)]
                with m.Else():
                    m.d.sync += [new.eq(0), rem.eq(rem - 1)]
        push = Signal(entry)
        rdata = mems["score"].rdata
        m.d.comb += [push.ctl.eq(beat_ctl), bq.w_data.eq(push), bq.w_en.eq(inflight)]
        m.d.comb += [push.x[i].eq(rdata[i * W:i * W + iw]) for i in range(C)]
        head = data.View(entry, bq.r_data)
        beat = nu.i_stream.payload
        m.d.comb += [nu.i_stream.valid.eq(bq.r_rdy), bq.r_en.eq(nu.i_stream.ready),
                     beat.op.eq(NormOp.STAT), beat.group.eq(head.ctl.group),
                     beat.first.eq(head.ctl.first), beat.chunk.eq(head.ctl.chunk),
                     beat.last.eq(head.ctl.last)]
        m.d.comb += [beat.data.x[i].eq(head.x[i].as_signed()) for i in range(C)]
        stats = nu.o_stream.payload.data.stats
        sums, spreads = Signal(C * W), Signal(C * W)
        for i in range(C):
            m.d.comb += [sums[i * W:(i + 1) * W].eq(stats[i].sum),
                         spreads[i * W:(i + 1) * W].eq(stats[i].spread)]
        m.d.comb += nu.o_stream.ready.eq(wq.w_rdy & half)
        with m.If(s_stats):
            m.d.comb += [wq.w_data.eq(Mux(half, spreads, sums)),
                         wq.w_en.eq(nu.o_stream.valid & wq.w_rdy)]
            with m.If(nu.o_stream.valid & wq.w_rdy):
                m.d.sync += half.eq(~half)

    def _argmax_unit(self, m, mems, wq, wq_depth, s_ok, s_head, s_argmax, a_words, s_rptr,
                     s_words_left, s_reads_left, s_last_word):
        """The datapath of ``ARGMAX`` in the store stage: a lane step a cycle, ``groups x
        cols`` a sample (the score word read a step ahead), each looking up its class's
        rank in the ``rank`` memory; a cycle later the comparison keeps the first class of
        the largest rank and, on a sample's last step, writes its byte into the record
        word, which goes into the store stage's word queue a cycle after its last byte.
        A step that completes a word waits until the queue will have room for it, so a
        slow link holds the unit and nothing is lost."""
        cfg = self.config
        C, W = cfg.cols, cfg.word
        depth = cfg.score_depth
        per = argmax_bytes(cfg)
        log_per = per.bit_length() - 1
        abits = max(1, (cfg.rank_depth - 1).bit_length())
        rank = mems["rank"]
        ha = s_head.op.argmax
        reading, primed = Signal(), Signal()
        i = Signal(range(C))                       # the lane of this step
        g = Signal(range(depth))                   # the score word of the sample
        groups_m1 = Signal(range(depth))
        last_g = Signal()                          # g == groups - 1
        left = Signal(range(depth + 1))            # samples left, this one included
        last_s = Signal()
        pos = Signal(range(per))                   # the sample's byte in its record word
        c = Signal(8)                              # the class of this step
        classes_m1 = Signal(8)
        valid = Signal()                           # c < classes
        cbase = Signal(abits)                      # rank_addr + c * stride (mod depth)
        rank_addr, stride = Signal(abits), Signal(abits)
        with m.If(s_ok):
            m.d.sync += s_argmax.eq(s_head.argmax)
            with m.If(s_head.argmax):
                n_words = (ha.samples + per - 1) >> log_per
                m.d.sync += [reading.eq(1), primed.eq(0), s_rptr.eq(ha.addr), i.eq(0),
                             g.eq(0), groups_m1.eq(ha.groups - 1), last_g.eq(ha.groups == 1),
                             left.eq(ha.samples), last_s.eq(ha.samples == 1), pos.eq(0),
                             c.eq(0), classes_m1.eq(ha.classes - 1), valid.eq(1),
                             cbase.eq(ha.rank_addr), rank_addr.eq(ha.rank_addr),
                             stride.eq(ha.stride), a_words.eq(n_words),
                             s_words_left.eq(n_words), s_last_word.eq(n_words == 1),
                             s_reads_left.eq(0)]
        # The comparison stage (c_*) and the push stage (p_push), a cycle apart.
        c_go, c_valid, c_first, c_end, c_done = (Signal(name=f"c_{n}") for n in
                                                 ("go", "valid", "first", "end", "done"))
        c_class = Signal(8)
        c_pos = Signal.like(pos)
        p_push = Signal()
        end_s = (i == C - 1) & last_g
        completes = end_s & (last_s | (pos == per - 1))
        room = wq.level + (c_go & c_end & c_done) + p_push < wq_depth
        go = Signal()
        m.d.comb += go.eq(reading & primed & (~completes | room))
        with m.If(reading & ~primed):
            m.d.comb += mems["score"].re.eq(1)
            m.d.sync += [s_rptr.eq(s_rptr + 1), primed.eq(1)]
        lanes = [mems["score"].rdata[k * W:k * W + min(abits, W)] for k in range(C)]
        acc = Array(lanes)[i] if C > 1 else lanes[0]
        m.d.comb += rank.raddr.eq(cbase + acc)
        m.d.sync += c_go.eq(go)
        with m.If(go):
            m.d.comb += rank.re.eq(1)
            m.d.sync += [c_valid.eq(valid), c_class.eq(c), c_first.eq(c == 0),
                         c_end.eq(end_s), c_done.eq(completes), c_pos.eq(pos),
                         i.eq(i + 1), c.eq(c + 1), cbase.eq(cbase + stride),
                         valid.eq(valid & (c != classes_m1))]
            with m.If(i == C - 1):
                # The next score word (the next group's, or the next sample's first).
                m.d.comb += mems["score"].re.eq(1)
                m.d.sync += [s_rptr.eq(s_rptr + 1), g.eq(g + 1),
                             last_g.eq(g + 1 == groups_m1)]
                with m.If(last_g):
                    m.d.sync += [g.eq(0), last_g.eq(groups_m1 == 0)]
            with m.If(end_s):
                m.d.sync += [c.eq(0), cbase.eq(rank_addr), valid.eq(1), left.eq(left - 1),
                             last_s.eq(left == 2), pos.eq(pos + 1)]
                with m.If(last_s):
                    m.d.sync += reading.eq(0)
        best = Signal(8)
        best_rank = Signal(cfg.rank_bits)
        got = rank.rdata
        take = c_go & c_valid & (c_first | (got > best_rank))
        chosen = Mux(take, c_class, best)
        with m.If(take):
            m.d.sync += [best.eq(c_class), best_rank.eq(got)]
        word = Signal(C * W)
        m.d.sync += p_push.eq(c_go & c_end & c_done)
        with m.If(p_push):
            # Cleared as it goes into the queue: the next word's bytes start from zero
            # (a byte written in this cycle is kept: the write below wins).
            m.d.sync += word.eq(0)
            with m.If(s_argmax):
                m.d.comb += [wq.w_data.eq(word), wq.w_en.eq(1)]
        with m.If(c_go & c_end):
            byte = word[:8] if per == 1 else word.word_select(c_pos, 8)
            m.d.sync += byte.eq(chosen)

    def elaborate(self, platform):
        cfg, isa = self.config, self.isa
        R, C, W, LB = cfg.rows, cfg.cols, cfg.word, cfg.host_link_bits
        PL = cfg.xnor_array.pipeline
        m = Module()

        # Memories ------------------------------------------------------------------------
        mems = {}
        for name in cfg.memories:
            # A training configuration's UPDATE writes one lane of a weight word.
            mems[name] = m.submodules[f"{name}_memory"] = CoreMemory(
                cfg.depth(name), cfg.rank_bits if name == "rank" else cfg.lanes(name) * W,
                single_port=name == "weight" and cfg.weight_single_port,
                lanes=C if name == "weight" and cfg.training else 1)
        #: The memories by name, once elaborated (a simulation reads them).
        self.memories = mems
        m.submodules.array = pe = PEArray(cfg)
        m.submodules.result = rs = ResultStage(cfg)
        m.d.comb += [
            mems["thresh"].raddr.eq(rs.thr_raddr), mems["thresh"].re.eq(rs.thr_re),
            rs.thr_rdata.eq(mems["thresh"].rdata),
            mems["act"].waddr.eq(rs.act_waddr), mems["act"].we.eq(rs.act_we),
            mems["act"].wdata.eq(rs.act_wdata),
            mems["score"].waddr.eq(rs.score_waddr), mems["score"].we.eq(rs.score_we),
            mems["score"].wdata.eq(rs.score_wdata),
        ]

        # Stage counters (modulo 2^COUNT_BITS) --------------------------------------------
        cnt = {name: Signal(COUNT_BITS, name=f"n_{name}")
               for name in ("g_disp", "g_start", "g_read", "g_written", "s_disp", "s_done")}
        m.d.sync += cnt["g_written"].eq(cnt["g_written"] + rs.written)
        self.counters = cnt  # a simulation may watch them

        def outstanding(a, b):
            # a - b, with a snapshot `a` that later completions may have overtaken (then 0):
            # the counters are never more than 2^(COUNT_BITS - 1) apart.
            diff = Signal(COUNT_BITS)
            m.d.comb += diff.eq(a - b)
            return Mux(diff[-1], 0, diff)

        # Queues ------------------------------------------------------------------------------
        gemm_ops, store_ops = isa.operands[Opcode.GEMM], isa.operands[Opcode.STORE]
        g_entry = data.StructLayout({"op": gemm_ops, "stores": COUNT_BITS})
        # The store queue holds STOREs and, with a statistics unit, STATS (``stats`` set).
        # With an argmax unit it holds ARGMAX too (``argmax`` set).
        stats_ops = isa.operands.get(Opcode.STATS)
        argmax_ops = isa.operands.get(Opcode.ARGMAX)
        s_kinds = {"store": store_ops, **({"stats": stats_ops} if stats_ops else {}),
                   **({"argmax": argmax_ops} if argmax_ops else {})}
        s_union = len(s_kinds) > 1     # else the entry is the STORE and the count, as it was
        if s_union:
            s_entry = data.StructLayout({
                "op": data.UnionLayout(s_kinds), **{kind: 1 for kind in s_kinds
                                                    if kind != "store"},
                "gemms": COUNT_BITS})
        else:
            s_entry = data.StructLayout({"op": store_ops, "gemms": COUNT_BITS})
        m.submodules.gemm_queue = gq = fifo.SyncFIFO(width=g_entry.size, depth=cfg.queue_depth)
        m.submodules.store_queue = sq = fifo.SyncFIFO(width=s_entry.size,
                                                      depth=cfg.queue_depth)
        g_head = data.View(g_entry, gq.r_data)
        s_head = data.View(s_entry, sq.r_data)

        # Counters of the status record.
        cycles = Signal(COUNTER_BITS)
        beats = Signal(COUNTER_BITS)
        holds = Signal(COUNTER_BITS)
        counting = Signal()

        # The execute stage -------------------------------------------------------------------
        f = Signal(gemm_ops)
        running = Signal()
        p = Signal(range(cfg.xnor_array.max_act_bits))
        w = Signal(range(cfg.max_words))
        ct = Signal(range(cfg.weight_depth + 1))
        rt = Signal(range(max(cfg.in_depth, cfg.act_depth) + 1))
        a_depth = max(cfg.in_depth, cfg.act_depth)
        a_ptr, a_tile = Signal(range(a_depth)), Signal(range(a_depth))
        b_ptr, b_tile = Signal(range(cfg.weight_depth)), Signal(range(cfg.weight_depth))
        thr_tile = Signal(range(cfg.thresh_depth))
        dst_depth = max(cfg.act_depth, cfg.score_depth)
        dst_rt, dst_tile = Signal(range(dst_depth)), Signal(range(dst_depth))
        field = Signal(range(W // C))
        qi = Signal(range(cfg.max_pool))   # the tile's place in its pooling window
        lead = Signal(range(cfg.xnor_array.max_act_bits * cfg.max_words + PL + 2))
        reserve = Signal(range(cfg.xnor_array.max_act_bits * cfg.max_words + PL + 2
                               + max(cfg.max_thresholds, R) + 1))
        ahead = Signal.like(reserve)   # cycles until the result stage takes a capture
        lead_p1 = Signal(range(cfg.xnor_array.max_act_bits * cfg.max_words + PL + 3))
        reserve_gt = Signal()          # reserve > lead: a tile just started would hold
        behind = Signal()              # ahead > lead, registered (the hold's verdict)
        fresh = Signal()               # the cycle after a pop
        m.d.sync += fresh.eq(0)
        thr_count = Signal(range(cfg.max_thresholds + 1))
        out_words = Signal(range(cfg.weight_depth + 1))
        rt_step = Signal(range(max(cfg.max_out_bits, R) * (cfg.weight_depth + 1) + 1))
        tile_step = Signal(range(dst_depth + 1))

        words_m1, planes_m1 = Signal.like(w), Signal.like(p)
        n_tiles_m1, m_tiles_m1 = Signal.like(ct), Signal.like(rt)
        pool_m1 = Signal.like(qi)
        # Whether the column and row tile counters are at their last values, kept in flags
        # set when the counters move (an equality of the wide counters sat on the UP5K
        # board's critical path, through the end-of-GEMM test into the counters' enables).
        last_ct, last_rt = Signal(), Signal()
        head_ok = Signal()
        waits_held = Signal()
        hg = g_head.op
        unsent = outstanding(g_head.stores, cnt["s_done"])
        # The head's waits are checked a cycle ahead and the verdict registered: the pop
        # then depends on two flip-flops, not on the queue's read data through a counter
        # difference and a comparison (the UP5K's critical path). Both counters only
        # move towards the waits holding, so last cycle's verdict still holds; a pop
        # clears it, as the next entry has not been checked.
        m.d.sync += waits_held.eq(gq.r_rdy & ~head_ok
                                  & (~hg.sync | (cnt["g_written"] == cnt["g_start"]))
                                  & (unsent <= hg.unsent))
        m.d.comb += head_ok.eq(waits_held & ~running)
        log_fields = (W // C).bit_length() - 1
        with m.If(head_ok):
            m.d.comb += gq.r_en.eq(1)
            m.d.sync += [f.eq(hg), running.eq(1), fresh.eq(1),
                         cnt["g_start"].eq(cnt["g_start"] + 1),
                         p.eq(0), w.eq(0), ct.eq(0), rt.eq(0), a_ptr.eq(hg.a_addr),
                         a_tile.eq(hg.a_addr), b_ptr.eq(hg.b_addr), b_tile.eq(hg.b_addr),
                         thr_tile.eq(hg.thr_addr), dst_rt.eq(hg.dst_addr),
                         dst_tile.eq(hg.dst_addr), field.eq(0), qi.eq(0)]
        # The cycle after the pop, no beat is issued and the sizes are the new GEMM's.
        with m.If(fresh):
            m.d.sync += [last_ct.eq(n_tiles_m1 == 0), last_rt.eq(m_tiles_m1 == 0)]
        # The head's per-instruction sizes, computed while the stage is idle (the head is
        # the entry the next pop takes): off the pop's path.
        with m.If(~running):
            nb = hg.planes * hg.words          # per instruction, not on an address path
            threshold = hg.mode == GemmMode.THRESHOLD
            count = (Const(1, cfg.max_out_bits + 1) << hg.out_bits) - 1
            nwo = (hg.n_tiles + (W // C) - 1) >> log_fields
            # The counters' last values, so that the end-of-tile tests are equalities
            # without a subtraction in front.
            m.d.sync += [words_m1.eq(hg.words - 1), planes_m1.eq(hg.planes - 1),
                         n_tiles_m1.eq(hg.n_tiles - 1), m_tiles_m1.eq(hg.m_tiles - 1),
                         pool_m1.eq(hg.pool - 1)]
            m.d.sync += [
                lead.eq(nb + 1 + PL), lead_p1.eq(nb + 2 + PL),
                reserve.eq(nb + PL + Mux(threshold, count + hg.out_bits - 1, R)),
                # reserve - lead = D - 1, D the cycles the result stage keeps a tile.
                reserve_gt.eq(Mux(threshold, count + hg.out_bits - 1, R) > 1),
                thr_count.eq(count), out_words.eq(nwo),
                rt_step.eq(Mux(threshold, hg.out_bits * nwo, R * hg.n_tiles)),
                tile_step.eq(Mux(threshold, nwo, hg.n_tiles)),
            ]

        tile_start = (p == 0) & (w == 0)
        # Whether the result stage would still be busy when this tile lands (ahead > lead),
        # decided a cycle early from what `ahead` becomes: the hold then waits on flip-flops,
        # not on a comparison. While the stage is idle `lead` already holds the head's
        # value (loaded every idle cycle, the head stable since its check).
        # A popped GEMM spends one cycle with `lead` and `behind` settling before its first
        # tile (`fresh`).
        hold = running & ~fresh & tile_start & behind
        issue = Signal()
        m.d.comb += issue.eq(running & ~fresh & ~hold)
        last_word, last_plane = w == words_m1, p == planes_m1
        tile_end = last_word & last_plane
        # The last tile of a pooling window (every tile without pooling).
        last_q = Const(1) if cfg.max_pool == 1 else qi == pool_m1
        with m.If(issue & tile_start):
            m.d.sync += [ahead.eq(reserve), behind.eq(reserve_gt)]
        with m.Elif(ahead != 0):
            m.d.sync += [ahead.eq(ahead - 1), behind.eq(ahead > lead_p1)]
        with m.Else():
            m.d.sync += behind.eq(0)
        # Every beat and hold of the program's GEMMs, those that run on after an error too.
        with m.If(hold):
            m.d.sync += holds.eq(holds + 1)
        with m.If(issue):
            m.d.sync += beats.eq(beats + 1)

        use_act = f.a_buffer == Buffer.ACT
        m.d.comb += [
            mems["in"].raddr.eq(a_ptr), mems["act"].raddr.eq(a_ptr),
            mems["in"].re.eq(issue & ~use_act), mems["act"].re.eq(issue & use_act),
            mems["weight"].raddr.eq(b_ptr), mems["weight"].re.eq(issue),
        ]
        ctx = Signal(tile_context(cfg))
        m.d.comb += [
            ctx.scores.eq(f.mode == GemmMode.SCORES), ctx.out_bits.eq(f.out_bits),
            ctx.thr_addr.eq(thr_tile), ctx.dst_addr.eq(dst_tile), ctx.field.eq(field),
            ctx.complete.eq(((field == (W // C) - 1) | last_ct) & last_q),
            ctx.step.eq(tile_step), ctx.last.eq(last_ct & last_rt & last_q),
            ctx.merge.eq(qi != 0),
        ]
        with m.If(issue):
            m.d.sync += [w.eq(w + 1), a_ptr.eq(a_ptr + 1), b_ptr.eq(b_ptr + 1)]
            with m.If(last_word):
                m.d.sync += [w.eq(0), p.eq(p + 1), b_ptr.eq(b_tile)]
            with m.If(tile_end & ~last_q):
                # Within a pooling window: the window's next row tile follows on in the
                # operand memory (a_ptr runs on), against the same column tile's weights.
                m.d.sync += [p.eq(0), qi.eq(qi + 1), b_ptr.eq(b_tile)]
            with m.If(tile_end & last_q):
                m.d.sync += [p.eq(0), qi.eq(0), ct.eq(ct + 1), field.eq(field + 1),
                             last_ct.eq(ct + 1 == n_tiles_m1)]
                # The next column tile re-reads this row block; its weights follow on.
                m.d.sync += [a_ptr.eq(a_tile), b_tile.eq(b_tile + f.words),
                             b_ptr.eq(b_tile + f.words), thr_tile.eq(thr_tile + thr_count)]
                with m.If(f.mode == GemmMode.THRESHOLD):
                    with m.If(ctx.complete):
                        m.d.sync += dst_tile.eq(dst_tile + 1)
                with m.Else():
                    m.d.sync += dst_tile.eq(dst_tile + 1)
                with m.If(last_ct):
                    m.d.sync += [ct.eq(0), rt.eq(rt + 1), field.eq(0), a_ptr.eq(a_ptr + 1),
                                 last_ct.eq(n_tiles_m1 == 0), last_rt.eq(rt + 1 == m_tiles_m1),
                                 a_tile.eq(a_ptr + 1), b_tile.eq(f.b_addr), b_ptr.eq(f.b_addr),
                                 thr_tile.eq(f.thr_addr), dst_rt.eq(dst_rt + rt_step),
                                 dst_tile.eq(dst_rt + rt_step)]
                    with m.If(last_rt):
                        m.d.sync += running.eq(0)
                        m.d.sync += cnt["g_read"].eq(cnt["g_read"] + 1)

        # Operands: RAM output, one register, then the array (2 cycles after the address).
        a_reg = Signal(R * W)
        b_reg = Signal(C * W)
        use_act_1 = Signal()
        m.d.sync += use_act_1.eq(use_act)
        m.d.sync += [a_reg.eq(Mux(use_act_1, mems["act"].rdata, mems["in"].rdata)),
                     b_reg.eq(mems["weight"].rdata)]
        ctl_layout = data.StructLayout({"valid": 1, "first": 1, "dbl": 1, "last": 1})
        stage0 = Signal(ctl_layout)
        m.d.comb += [stage0.valid.eq(issue), stage0.first.eq(tile_start),
                     stage0.dbl.eq((w == 0) & (p != 0)), stage0.last.eq(tile_end)]
        line = [stage0]
        for i in range(2):
            reg = Signal(ctl_layout, name=f"ctl_{i}")
            m.d.sync += reg.eq(line[-1])
            line.append(reg)
        beat = line[2]
        # The tile context reaches the result stage 2 + pipeline cycles after its beat, by a
        # delay line in block RAM: written every cycle, read 1 + pipeline entries behind.
        # As flip-flops it would cost a logic cell per bit and stage (about 140 on the UP5K).
        ctx_line = Memory(shape=tile_context(cfg), depth=CTX_LINE_DEPTH, init=[],
                          attrs={"no_rw_check": 1})
        m.submodules.ctx_line = ctx_line
        ctx_w, ctx_r = ctx_line.write_port(), ctx_line.read_port()
        ctx_wptr = Signal(range(CTX_LINE_DEPTH))
        ctx_rptr = Signal(range(CTX_LINE_DEPTH), init=CTX_LINE_DEPTH - 1 - PL)
        m.d.sync += [ctx_wptr.eq(ctx_wptr + 1), ctx_rptr.eq(ctx_rptr + 1)]
        m.d.comb += [ctx_w.addr.eq(ctx_wptr), ctx_w.data.eq(ctx), ctx_w.en.eq(1),
                     ctx_r.addr.eq(ctx_rptr)]
        m.d.comb += [
            pe.valid.eq(beat.valid), pe.first.eq(beat.first), pe.dbl.eq(beat.dbl),
            pe.last.eq(beat.last),
            pe.a.eq(a_reg), pe.b.eq(b_reg),
            rs.capture.eq(pe.capture), rs.tile.eq(pe.tile), rs.ctx.eq(ctx_r.data),
        ]

        # The store stage ----------------------------------------------------------------------
        o_by_store = Signal()
        o_payload = Signal(LB)
        o_valid = Signal()
        storing = Signal()
        so = Signal(store_ops)
        s_ok = Signal()
        pending = outstanding(s_head.gemms, cnt["g_written"])
        hs = s_head.op.store if s_union else s_head.op   # the head as a STORE
        s_unwritten = hs.unwritten
        if stats_ops:
            s_unwritten = Mux(s_head.stats, s_head.op.stats.unwritten, s_unwritten)
        if argmax_ops:
            s_unwritten = Mux(s_head.argmax, s_head.op.argmax.unwritten, s_unwritten)
        # As for the GEMM queue: the head's wait is checked a cycle before the pop.
        s_ready = Signal()
        m.d.sync += s_ready.eq(sq.r_rdy & ~s_ok & (pending <= s_unwritten))
        m.d.comb += s_ok.eq(s_ready & ~storing)
        header_beats, lane_beats = DATA_HEADER.size // LB, W // LB
        word_beats = C * lane_beats
        # The STORE reads the latent memory (a training configuration; else never).
        s_lat = Signal() if cfg.training else Const(0)
        # The store stage runs a STATS (a configuration with a statistics unit).
        s_stats = Signal() if stats_ops else Const(0)
        # The store stage runs an ARGMAX (a configuration with an argmax unit).
        s_argmax = Signal() if argmax_ops else Const(0)
        s_depth, s_lanes = cfg.score_depth, C
        s_count = so.count * C
        word_beats_of = word_beats
        lat_beats = word_beats
        if cfg.training:
            lat_beats = cfg.latent_bits * lane_beats
            s_depth, s_lanes = max(s_depth, cfg.latent_depth), max(C, cfg.latent_bits)
            s_count = Mux(s_lat, so.count * cfg.latent_bits, s_count)
            word_beats_of = Mux(s_lat, lat_beats, word_beats)
        if stats_ops:
            # A STATS record sends, per group, a word of cols sums and one of cols spreads:
            # score-memory words to the store stage.
            sto = Signal(stats_ops)
            s_depth = max(s_depth, STATS_LANES * cfg.norm_groups)
            s_count = Mux(s_stats, sto.groups * (STATS_LANES * C), s_count)
        if argmax_ops:
            # An ARGMAX record's words are cols-lane words of class bytes.
            a_words = Signal(range(cfg.score_depth + 1))
            s_count = Mux(s_argmax, a_words * C, s_count)
        # The header's bytes are picked by beat from the latched STORE (no shift register).
        s_header = Signal(DATA_HEADER)
        m.d.comb += [s_header.kind.eq(Record.DATA), s_header.count.eq(s_count)]
        s_beat = Signal(range(max(header_beats, word_beats, lat_beats)))
        s_in_header = Signal()
        s_first, s_last_beat, s_last_word = Signal(), Signal(), Signal()
        s_words_left = Signal(range(s_depth + 1))   # memory words still to send
        s_reads_left = Signal(range(s_depth + 1))
        s_rptr = Signal(range(s_depth))
        # Two words in hand keep the link busy when a word takes 3 or more beats.
        wq_depth = isa.store_words_depth
        m.submodules.store_words = wq = fifo.SyncFIFO(width=s_lanes * W, depth=wq_depth)
        inflight = Signal()
        shifter = Signal(s_lanes * W)
        with m.If(s_ok):
            m.d.comb += sq.r_en.eq(1)
            m.d.sync += [so.eq(hs), storing.eq(1), s_in_header.eq(1), s_beat.eq(0),
                         s_last_beat.eq(header_beats == 1),
                         s_last_word.eq(hs.count == 1),
                         s_words_left.eq(hs.count), s_reads_left.eq(hs.count),
                         s_rptr.eq(hs.addr)]
            if cfg.training:
                latent = hs.buffer == Buffer.LATENT
                for kind in ("stats", "argmax"):
                    if kind in s_kinds:
                        latent = latent & ~s_head[kind]
                m.d.sync += s_lat.eq(latent)
        read_now = storing & (s_reads_left != 0) & (wq.level + inflight < wq_depth)
        m.d.comb += [mems["score"].raddr.eq(s_rptr),
                     mems["score"].re.eq(read_now & ~s_lat if cfg.training else read_now),
                     wq.w_data.eq(mems["score"].rdata), wq.w_en.eq(inflight)]
        if stats_ops:
            self._stats_unit(m, mems, wq, s_ok, s_head, s_stats, sto, storing, s_rptr,
                             s_words_left, s_reads_left, s_last_word)
        if argmax_ops:
            self._argmax_unit(m, mems, wq, wq_depth, s_ok, s_head, s_argmax, a_words,
                              s_rptr, s_words_left, s_reads_left, s_last_word)
        if cfg.training:
            # The latent memory's read port is the store stage's while it stores (an
            # UPDATE waits for every STORE before it), else UPDATE's (below).
            with m.If(storing):
                m.d.comb += [mems["latent"].raddr.eq(s_rptr),
                             mems["latent"].re.eq(read_now & s_lat)]
            with m.If(s_lat):   # constant through a STORE, its last read included
                m.d.comb += wq.w_data.eq(mems["latent"].rdata)
        m.d.sync += inflight.eq(read_now)
        with m.If(read_now):
            m.d.sync += [s_rptr.eq(s_rptr + 1), s_reads_left.eq(s_reads_left - 1)]
        # The beat's position is kept in flags updated one beat ahead (``s_first``, the
        # word's first beat, taken from the FIFO; ``s_last_beat``, the header's or word's
        # last; ``s_last_word``), so a sent beat reaches the counters through one or two
        # LUTs: this was the UP5K's critical path with the comparisons of the counters.
        # The status record is sent only once every stage has been idle (``busy``), so the
        # store stage's own valid is the link's while it stores.
        s_valid = Signal()
        m.d.comb += s_valid.eq(storing & (s_in_header | ~s_first | wq.r_rdy))
        sent = s_valid & self.o_stream.ready
        with m.If(storing):
            m.d.comb += [o_by_store.eq(1), o_valid.eq(s_valid)]
            with m.If(s_in_header):
                with m.Switch(s_beat):
                    for k in range(header_beats):
                        with m.Case(k):
                            m.d.comb += o_payload.eq(s_header.as_value()[k * LB:(k + 1) * LB])
                with m.If(sent):
                    m.d.sync += [s_beat.eq(s_beat + 1),
                                 s_last_beat.eq(s_beat == header_beats - 2)]
                    with m.If(s_last_beat):
                        m.d.sync += [s_in_header.eq(0), s_beat.eq(0), s_first.eq(1),
                                     s_last_beat.eq(word_beats_of == 1)]
            with m.Else():
                m.d.comb += o_payload.eq(Mux(s_first, wq.r_data[:LB], shifter[:LB]))
                with m.If(sent):
                    m.d.sync += [s_beat.eq(s_beat + 1), shifter.eq(shifter >> LB),
                                 s_first.eq(0), s_last_beat.eq(s_beat == word_beats_of - 2)]
                    with m.If(s_first):
                        m.d.comb += wq.r_en.eq(1)
                        m.d.sync += shifter.eq(wq.r_data >> LB)
                    with m.If(s_last_beat):
                        m.d.sync += [s_beat.eq(0), s_words_left.eq(s_words_left - 1),
                                     s_first.eq(1), s_last_beat.eq(word_beats_of == 1),
                                     s_last_word.eq(s_words_left == 2)]
                        with m.If(s_last_word):
                            m.d.sync += [storing.eq(0), cnt["s_done"].eq(cnt["s_done"] + 1)]

        # The front end ------------------------------------------------------------------------
        ir = Signal(isa.layout)
        raw = data.View(isa.raw_layout, ir.as_value())
        ops = {op: getattr(ir.operands, op.name.lower()) for op in isa.opcodes}
        # The verdict of the instruction check is registered: a CHECK cycle between the last
        # fetch beat and DECODE keeps the field checks off the queue's write path.
        illegal = Signal()
        m.d.sync += illegal.eq(self._illegal(m, ir))
        take = Signal()
        got = Signal()
        m.d.comb += [self.i_stream.ready.eq(take), got.eq(take & self.i_stream.valid)]
        fetch_beats = isa.width // LB
        LT = cfg.latent_bits if cfg.training else 0   # lanes of a latent word
        beat_no = Signal(range(max(fetch_beats, max(R, C, LT) * lane_beats,
                                   STATUS_RECORD.size // LB) + 1))
        in_program = Signal()
        index = Signal(COUNTER_BITS)
        code = Signal(8)
        halt = Signal(8)
        idle = Signal(range(cfg.timeout_cycles + 1))
        waiting = Signal()   # the front end wants input
        # ``idle == timeout_cycles``, kept in a flip-flop set as the counter gets there (its
        # comparison fed the state machine: the iCEBreaker board's critical path).
        timed_out = Signal()
        with m.If(got):
            m.d.sync += [idle.eq(0), timed_out.eq(0)]
        with m.Elif(waiting & ~timed_out):
            m.d.sync += [idle.eq(idle + 1), timed_out.eq(idle == cfg.timeout_cycles - 1)]
        # Whether any stage has work, registered: HALT and the cycle counter look at last
        # cycle's verdict (off the counters' comparison paths). Once the front end stops
        # dispatching, a stage that is idle stays idle, so the lag only delays the end.
        busy = Signal()
        m.d.sync += busy.eq(running | storing | rs.busy | gq.r_rdy | sq.r_rdy
                            | (cnt["g_written"] != cnt["g_disp"])
                            | (cnt["s_done"] != cnt["s_disp"]))
        stall = waiting & ~self.i_stream.valid & ~busy
        with m.If(counting & ~stall):
            m.d.sync += cycles.eq(cycles + 1)

        # LOAD: a memory word assembled beat by beat, written the cycle after it completes.
        widest = max(R, C, LT) * W
        sreg = Signal(widest)
        loadable = max(cfg.depth(b.name.lower()) for b in isa.load_buffers)
        lptr = Signal(range(loadable))
        lwords = Signal(range(loadable + 1))
        lwrite = Signal()
        lbuf = Signal(Buffer)
        lwaddr = Signal.like(lptr)
        m.d.sync += lwrite.eq(0)
        for buf in isa.load_buffers:
            name = buf.name.lower()
            lanes, enables = cfg.lanes(name), mems[name].lanes
            m.d.comb += [mems[name].waddr.eq(lwaddr), mems[name].wdata.eq(sreg[-lanes * W:]),
                         mems[name].we.eq(Mux(lwrite & (lbuf == buf), (1 << enables) - 1, 0))]
        lo = ops[Opcode.LOAD]
        g_pending = outstanding(cnt["g_disp"], cnt["g_read"])
        g_unwritten = outstanding(cnt["g_disp"], cnt["g_written"])
        waits_met = (g_pending <= lo.unread) & (g_unwritten <= lo.unwritten)
        if cfg.weight_single_port:
            waits_met = waits_met & ((lo.buffer != Buffer.WEIGHT) | (g_pending == 0))
        stores_idle = cnt["s_done"] == cnt["s_disp"]
        if cfg.training:
            # The latent memory's read port serves STORE: its writers wait for them.
            waits_met = waits_met & ((lo.buffer != Buffer.LATENT) | stores_idle)
        if cfg.argmax:
            # The rank memory's read port serves ARGMAX: its writer waits for them.
            waits_met = waits_met & ((lo.buffer != Buffer.RANK) | stores_idle)
        # A LOAD's waits are checked in one cycle and acted on in the next (the counters
        # only move towards them holding while the front end waits).
        load_ok = Signal()
        # The beat's position in the LOAD, kept one beat ahead (as the store stage's): the
        # last beat's effects (the word's write, the next instruction) hang off two flags.
        l_last_beat, l_last_word = Signal(), Signal()
        word_of = Signal(range(max(R, C, LT) * lane_beats + 1))
        m.d.comb += word_of.eq(Mux(lo.buffer == Buffer.IN, R * lane_beats, C * lane_beats))
        if cfg.training:
            with m.If(lo.buffer == Buffer.LATENT):
                m.d.comb += word_of.eq(LT * lane_beats)
        if cfg.argmax:
            with m.If(lo.buffer == Buffer.RANK):
                m.d.comb += word_of.eq(lane_beats)

        status = Signal(STATUS_RECORD)
        status_beats = STATUS_RECORD.size // LB
        o_status = Signal()
        m.d.comb += [self.o_stream.valid.eq(o_valid),
                     self.o_stream.payload.eq(o_payload)]
        # The record's bytes are picked by beat from the (frozen) registers they report.
        m.d.comb += [status.kind.eq(Record.STATUS), status.code.eq(code), status.halt.eq(halt),
                     status.index.eq(index), status.cycles.eq(cycles),
                     status.array_beats.eq(beats), status.tile_holds.eq(holds)]
        with m.If(o_status):
            m.d.comb += o_valid.eq(1)
            with m.Switch(beat_no):
                for k in range(status_beats):
                    with m.Case(k):
                        m.d.comb += o_payload.eq(status.as_value()[k * LB:(k + 1) * LB])

        def finish(value):
            m.d.sync += [code.eq(value), counting.eq(0)]

        if cfg.training:
            upd = self._update_unit(m, mems, ops[Opcode.UPDATE], cnt, outstanding,
                                    stores_idle)

        # The store queue's entry, filled by STORE or STATS at decode (with STATS only: the
        # entry of a configuration without them is the STORE and the count, as it was).
        if s_union:
            s_push = Signal(s_entry)
            m.d.comb += sq.w_data.eq(s_push)
        with m.FSM():
            with m.State("FETCH"):
                m.d.comb += [take.eq(1), waiting.eq(in_program)]
                with m.If(got):
                    m.d.sync += [ir.eq(Cat(ir.as_value()[LB:], self.i_stream.payload)),
                                 beat_no.eq(beat_no + 1)]
                    with m.If(~in_program):
                        m.d.sync += [in_program.eq(1), counting.eq(1), index.eq(0),
                                     cycles.eq(0), beats.eq(0), holds.eq(0), halt.eq(0)]
                    with m.If(beat_no == fetch_beats - 1):
                        m.d.sync += beat_no.eq(0)
                        m.next = "CHECK"
                with m.Elif(in_program & timed_out):
                    m.d.sync += beat_no.eq(0)
                    finish(Status.TRUNCATED)
                    m.next = "DRAIN"
            with m.State("CHECK"):
                m.next = "DECODE"
            with m.State("DECODE"):
                with m.If(illegal):
                    finish(Status.ILLEGAL)
                    m.next = "DRAIN"
                with m.Else():
                    with m.Switch(raw.opcode):
                        with m.Case(Opcode.HALT.value):
                            m.d.sync += halt.eq(ops[Opcode.HALT].status)
                            m.next = "HALT"
                        if cfg.training:
                            with m.Case(Opcode.UPDATE.value):
                                m.d.sync += [*upd["start"], load_ok.eq(0), beat_no.eq(0)]
                                m.next = "UPD_WAIT"
                        with m.Case(Opcode.LOAD.value):
                            m.d.sync += [lptr.eq(lo.addr), lwords.eq(lo.count), lbuf.eq(lo.buffer),
                                         beat_no.eq(0), load_ok.eq(0),
                                         l_last_beat.eq(word_of == 1),
                                         l_last_word.eq(lo.count == 1)]
                            m.next = "LOAD_WAIT"
                        # A GEMM, STORE or STATS goes into its stage's queue with a
                        # snapshot of the other stage's dispatch count.
                        pushes = [(Opcode.GEMM, gq, "g_disp", "s_disp"),
                                  (Opcode.STORE, sq, "s_disp", "g_disp")]
                        pushes += [(Opcode[kind.upper()], sq, "s_disp", "g_disp")
                                   for kind in s_kinds if kind != "store"]
                        for op, queue, mine, other in pushes:
                            with m.Case(op.value):
                                if queue is gq or not s_union:
                                    m.d.comb += queue.w_data.eq(Cat(ops[op].as_value(),
                                                                    cnt[other]))
                                else:
                                    kind = op.name.lower()
                                    m.d.comb += [s_push.op[kind].eq(ops[op]),
                                                 s_push.gemms.eq(cnt[other])]
                                    if kind != "store":
                                        m.d.comb += s_push[kind].eq(1)
                                m.d.comb += queue.w_en.eq(1)
                                with m.If(queue.w_rdy):
                                    m.d.sync += [cnt[mine].eq(cnt[mine] + 1),
                                                 index.eq(index + 1)]
                                    m.next = "FETCH"
            with m.State("LOAD_WAIT"):
                m.d.sync += load_ok.eq(waits_met)
                with m.If(load_ok):
                    m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += [take.eq(1), waiting.eq(1)]
                with m.If(got):
                    m.d.sync += [sreg.eq(Cat(sreg[LB:], self.i_stream.payload)),
                                 beat_no.eq(beat_no + 1),
                                 l_last_beat.eq(beat_no == word_of - 2)]
                    with m.If(l_last_beat):
                        m.d.sync += [beat_no.eq(0), lwrite.eq(1), lwaddr.eq(lptr),
                                     lptr.eq(lptr + 1), lwords.eq(lwords - 1),
                                     l_last_beat.eq(word_of == 1),
                                     l_last_word.eq(lwords == 2)]
                        with m.If(l_last_word):
                            m.d.sync += index.eq(index + 1)
                            m.next = "FETCH"
                with m.Elif(timed_out):
                    m.d.sync += beat_no.eq(0)
                    finish(Status.TRUNCATED)
                    m.next = "DRAIN"
            if cfg.training:
                # UPDATE: per latent word a read, a latch, the gradient beats, the update
                # unit's two stages and the write (lowbit.timing: beats + 5 cycles).
                with m.State("UPD_WAIT"):
                    m.d.sync += load_ok.eq(upd["waits_met"])
                    with m.If(load_ok):
                        m.next = "UPD_READ"
                with m.State("UPD_READ"):
                    m.d.comb += upd["read"].eq(1)
                    m.next = "UPD_LATCH"
                with m.State("UPD_LATCH"):
                    m.d.comb += upd["latch"].eq(1)
                    m.next = "UPD_DATA"
                with m.State("UPD_DATA"):
                    m.d.comb += [take.eq(1), waiting.eq(1), upd["feed"].eq(got)]
                    with m.If(got & upd["last_beat"]):
                        m.next = "UPD_DRAIN"
                    with m.Elif(~got & timed_out):
                        m.d.sync += beat_no.eq(0)
                        finish(Status.TRUNCATED)
                        m.next = "DRAIN"
                with m.State("UPD_DRAIN"):
                    with m.If(upd["collected"]):    # the word is written in this cycle
                        with m.If(upd["last_word"]):
                            m.d.sync += index.eq(index + 1)
                            m.next = "FETCH"
                        with m.Else():
                            m.next = "UPD_READ"
            with m.State("HALT"):
                with m.If(~busy):
                    finish(Status.OK)
                    m.next = "STATUS"
            with m.State("DRAIN"):
                with m.If(~busy):
                    m.next = "STATUS"
            with m.State("STATUS"):
                m.d.sync += beat_no.eq(0)
                m.next = "STATUS_SEND"
            with m.State("STATUS_SEND"):
                m.d.comb += o_status.eq(1)
                with m.If(self.o_stream.ready):
                    m.d.sync += beat_no.eq(beat_no + 1)
                    with m.If(beat_no == status_beats - 1):
                        m.d.sync += [beat_no.eq(0), in_program.eq(0), idle.eq(0),
                                     timed_out.eq(0)]
                        with m.If(code == Status.OK):
                            m.next = "FETCH"
                        with m.Else():
                            m.next = "DISCARD"
            with m.State("DISCARD"):
                m.d.comb += [take.eq(1), waiting.eq(1)]
                with m.If(timed_out):
                    m.next = "FETCH"
        return m
