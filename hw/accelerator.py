"""The programmable accelerator: host link, instruction fetch and checks, three buffers and
the compute engines, from one :class:`~lowbit.config.accelerator.AcceleratorConfig`.

The front end reads instructions (and each ``LOAD``'s data) from ``i_stream`` and writes
records to ``o_stream`` as ``docs/host_link.md`` specifies. Every instruction is checked
before it runs, the same checks as :meth:`lowbit.isa.InstructionSet.decode` (field ranges
derived from the instruction set's layouts, then the opcode's own rules, then buffer
regions), so a bad instruction has no effect and ends the program with an error status.

Compute instructions (``GEMM_XNOR``, ``NORM``, ``MAXPOOL``) run in their engine while the
front end goes on with the next instructions: a ``LOAD`` or ``STORE`` whose region does
not overlap the running instruction's regions proceeds at once (decoupled load and
compute, as in VTA); one that overlaps, the next compute instruction and ``HALT`` wait.
Buffers are single-ported; the front end has priority on them and an engine waits a cycle
when it collides.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config.accelerator import AcceleratorConfig
from ..isa import Buffer, NormMode, Opcode, Status, instruction_set
from ..isa import _NORM_OUTPUT as NORM_OUTPUT
from .buffer_memory import BufferMemory
from .gemm_lns_engine import GemmLnsEngine
from .gemm_xnor_engine import GemmXnorEngine
from .maxpool_engine import MaxPoolEngine
from .norm_engine import NormEngine

__all__ = ["Accelerator", "RECORD_DATA", "RECORD_STATUS"]

RECORD_DATA = 0x01
RECORD_STATUS = 0x02
COUNTER_BITS = 32


def ceil_div(x, d, limit):
    """``ceil(x / d)`` for a constant ``d`` and ``0 <= x <= limit``, by a multiplication
    with the rounded-up reciprocal (exact for every ``x`` in range, no divider)."""
    n = (limit + d).bit_length()
    shift = n + d.bit_length()
    mult = -(-(1 << shift) // d)
    assert all((v * mult) >> shift == v // d for v in (limit + d - 1, d - 1, d, 2 * d - 1))
    return ((x + d - 1) * mult) >> shift


class Accelerator(wiring.Component):
    """The accelerator, with a host link of ``config.host_link_bits``.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    i_stream : In(stream.Signature(host_link_bits))
        Instructions and ``LOAD`` data from the host, bytes little-endian within a beat.
    o_stream : Out(stream.Signature(host_link_bits))
        ``DATA`` and ``STATUS`` records to the host.

    Raises
    ------
    TypeError
        If ``config`` is not an :class:`AcceleratorConfig`.
    ValueError
        If the configuration has a unit the gateware cannot build yet.
    """

    def __init__(self, config=None):
        config = AcceleratorConfig() if config is None else config
        if not isinstance(config, AcceleratorConfig):
            self._MustUse__silence = True
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        if config.has_xnor_array and config.xnor_array.word != config.word:
            self._MustUse__silence = True
            raise ValueError(f"the XNOR array's word ({config.xnor_array.word}) must equal "
                             f"the buffer word ({config.word})")
        if config.has_lightnorm and config.word % config.lightnorm.block:
            self._MustUse__silence = True
            raise ValueError(f"the norm unit's block ({config.lightnorm.block}) must divide "
                             f"the buffer word ({config.word})")
        if config.has_lns_mac and (config.word // config.lns_mac.bits) % config.lns_mac.lanes:
            self._MustUse__silence = True
            raise ValueError(f"the LNS MAC's lanes ({config.lns_mac.lanes}) must divide the "
                             f"LNS words per buffer word ({config.word // config.lns_mac.bits} "
                             f"= {config.word} // {config.lns_mac.bits})")
        self.config = config
        self.isa = instruction_set(config)
        super().__init__({
            "i_stream": In(stream.Signature(config.host_link_bits)),
            "o_stream": Out(stream.Signature(config.host_link_bits)),
        })

    # Instruction checks, derived from the instruction set --------------------------------

    def _field_checks(self, raw_ops, op):
        """ILLEGAL conditions of ``op``'s fields: ranges and enum values from the layout."""
        bad = []
        for name, field in self.isa.operands[op]:
            value = raw_ops[op][name]
            shape = field.shape
            if isinstance(shape, type) and issubclass(shape, enum.Enum):
                ok = Const(0)
                for member in shape:
                    ok = ok | (value == member.value)
                bad.append(~ok)
            elif isinstance(shape, range) and not name.endswith("addr"):
                # Only the bounds a field's bits can break: each comparison is a carry chain.
                if shape.start > 0:
                    bad.append(value < shape.start)
                if shape.stop - 1 < (1 << len(value)) - 1:
                    bad.append(value > shape.stop - 1)
        return bad

    def _unused_mask(self, op):
        """Bits of the instruction word that ``op`` does not use (must be zero)."""
        used = 0
        opfield = self.isa.layout["opcode"]
        used |= ((1 << opfield.width) - 1) << opfield.offset
        base = self.isa.layout["operands"].offset
        for _, field in self.isa.operands[op]:
            used |= ((1 << field.width) - 1) << (base + field.offset)
        return ((1 << self.isa.width) - 1) & ~used

    def elaborate(self, platform):
        cfg, isa = self.config, self.isa
        W, LB = cfg.word, cfg.host_link_bits
        m = Module()

        # Buffers: single-ported memories, the front end first, then whichever engine asks.
        sizes = {Buffer.ACT: cfg.act_words, Buffer.WEIGHT: cfg.weight_words,
                 Buffer.OUT: cfg.out_words}
        mems, fe = {}, {}
        for buf, depth in sizes.items():
            name = buf.name.lower()
            m.submodules[f"{name}_buffer"] = mem = BufferMemory(depth, W)
            mems[buf] = {"addr": mem.addr, "re": mem.re, "we": mem.we, "wdata": mem.wdata,
                         "rdata": mem.rdata}
            fe[buf] = {"addr": Signal(range(depth), name=f"fe_{name}_addr"),
                       "re": Signal(name=f"fe_{name}_re"), "we": Signal(name=f"fe_{name}_we"),
                       "wdata": Signal(W, name=f"fe_{name}_wdata")}

        engines = {}
        if cfg.has_xnor_array:
            m.submodules.gemm_xnor = engines[Opcode.GEMM_XNOR] = GemmXnorEngine(cfg)
        if cfg.has_lightnorm:
            m.submodules.norm = engines[Opcode.NORM] = NormEngine(cfg)
        if cfg.has_lns_mac:
            m.submodules.gemm_lns = engines[Opcode.GEMM_LNS] = GemmLnsEngine(cfg)
        if cfg.has_maxpool:
            m.submodules.maxpool = engines[Opcode.MAXPOOL] = MaxPoolEngine(cfg)

        for buf, port in mems.items():
            name = buf.name.lower()
            users = [e for e in engines.values() if hasattr(e, name)]
            fe_req = fe[buf]["re"] | fe[buf]["we"]
            # Defaults: the front end's request.
            m.d.comb += [port["addr"].eq(fe[buf]["addr"]), port["wdata"].eq(fe[buf]["wdata"]),
                         port["re"].eq(fe[buf]["re"]), port["we"].eq(fe[buf]["we"])]
            for engine in users:
                eport = getattr(engine, name)
                m.d.comb += [eport.grant.eq(~fe_req), eport.rdata.eq(port["rdata"])]
                with m.If(~fe_req & (eport.re | eport.we)):
                    m.d.comb += [port["addr"].eq(eport.addr), port["wdata"].eq(eport.wdata),
                                 port["re"].eq(eport.re), port["we"].eq(eport.we)]

        busy = Signal()
        m.d.comb += busy.eq(Cat(e.busy for e in engines.values()).any())

        # Host link receive: beats shift in from the top, little-endian.
        # Instruction beats shift straight into `ir` (FETCH below), data beats into `rx`: one
        # word wide, not an instruction wide, and no copy of a whole instruction.
        rx = Signal(W)
        rx_count = Signal(range(max(isa.width, W) // LB + 1))
        take = Signal()  # accept a beat this cycle
        got = Signal()
        m.d.comb += [self.i_stream.ready.eq(take), got.eq(take & self.i_stream.valid)]
        with m.If(got):
            m.d.sync += [rx.eq(Cat(rx[LB:], self.i_stream.payload)), rx_count.eq(rx_count + 1)]
        instr_beats = isa.width // LB
        word_beats = W // LB
        ir = Signal(isa.layout)
        raw = data.View(isa.raw_layout, ir.as_value())
        raw_ops = {op: data.View(isa.raw_operands[op],
                                 ir.operands.as_value()[:isa.raw_operands[op].size])
                   for op in Opcode}
        ops = {op: getattr(ir.operands, op.name.lower()) for op in Opcode}

        # Host link transmit: a record is chosen by kind and sent beat by beat.
        index = Signal(COUNTER_BITS)
        code = Signal(8)
        halt_status = Signal(8)
        cycles = Signal(COUNTER_BITS)
        counters = {name: Signal(COUNTER_BITS, name=f"{name}_busy")
                    for name in ("xnor", "norm", "lns")}
        store_count = Signal(COUNTER_BITS)
        store_word = Signal(W)
        store_next = Signal(W)
        records = {
            1: Cat(Const(RECORD_DATA, 8), Const(0, 24), store_count),
            2: store_word,
            3: Cat(Const(RECORD_STATUS, 8), code, halt_status, Const(0, 8), index, cycles,
                   counters["xnor"], counters["norm"], counters["lns"]),
        }
        tx_kind = Signal(2)
        tx_beat = Signal(range(192 // LB + 1))
        tx_last = Signal()
        beats_of = {kind: len(value) // LB for kind, value in records.items()}
        m.d.comb += self.o_stream.valid.eq(tx_kind != 0)
        with m.Switch(tx_kind):
            for kind, value in records.items():
                with m.Case(kind):
                    chunks = Array(value[i * LB:(i + 1) * LB] for i in range(beats_of[kind]))
                    m.d.comb += [self.o_stream.payload.eq(chunks[tx_beat]),
                                 tx_last.eq(tx_beat == beats_of[kind] - 1)]
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += tx_beat.eq(tx_beat + 1)
            with m.If(tx_last):
                m.d.sync += [tx_beat.eq(0), tx_kind.eq(0)]
        # Free now, or after the beat leaving this cycle (no bubble between records).
        tx_free = (tx_kind == 0) | (self.o_stream.valid & self.o_stream.ready & tx_last)

        # Checks ---------------------------------------------------------------------------
        opcode = raw.opcode
        known = Cat(opcode == op.value for op in Opcode).any()
        illegal = Signal()      # ILLEGAL from the opcode and fields
        unused_bad = Signal()   # ILLEGAL from nonzero unused bits
        illegal_c, unused_c = Const(0), Const(0)
        # Unused bits: each bit is ORed once, in the class of bits unused by the same set of
        # opcodes; an opcode's check ORs its classes. Opcodes of absent units are ILLEGAL
        # anyway and need no check.
        present = [op for op in Opcode if op in (Opcode.HALT, Opcode.LOAD, Opcode.STORE)
                   or op in engines]
        classes = {}
        for bit in range(isa.width):
            owners = frozenset(op for op in present if self._unused_mask(op) >> bit & 1)
            if owners:
                classes.setdefault(owners, []).append(bit)
        class_any = {owners: Cat(ir.as_value()[b] for b in bits).any()
                     for owners, bits in classes.items()}
        for op in Opcode:
            conds = self._field_checks(raw_ops, op)
            unit = {Opcode.GEMM_XNOR: cfg.has_xnor_array, Opcode.NORM: cfg.has_lightnorm,
                    Opcode.GEMM_LNS: cfg.has_lns_mac,
                    Opcode.MAXPOOL: cfg.has_maxpool}.get(op, True)
            if not unit:
                conds.append(Const(1))
            if op == Opcode.GEMM_XNOR:
                x, a = raw_ops[op], cfg.xnor_array
                conds += [x.act_bits > a.max_act_bits, x.weight_bits > a.max_weight_bits,
                          x.act_signed & (x.act_bits < 2),
                          x.weight_signed & (x.weight_bits < 2)]
            if op == Opcode.NORM:
                x, norm = raw_ops[op], cfg.lightnorm
                for nm in NormMode:
                    needs = NORM_OUTPUT[nm]
                    if needs is not None and norm.output != needs:
                        conds.append(x.mode == nm.value)
                stats = x.mode == NormMode.STATISTICS.value
                conds += [stats & (x.param_addr != 0), stats & (x.rows > norm.max_batch)]
                if max(norm.sum_bits, norm.spread_bits) > cfg.word or not norm.statistics:
                    conds.append(stats)
            bad = Const(0)
            for c in conds:
                bad = bad | c
            is_op = opcode == op.value
            illegal_c = illegal_c | (is_op & bad)
            if op in present:
                nonzero = Cat(v for owners, v in class_any.items() if op in owners).any()
                unused_c = unused_c | (is_op & nonzero)
        m.d.comb += [illegal.eq(~known | illegal_c), unused_bad.eq(unused_c)]

        # Regions, one per check cycle through one multiplier: (buffer, addr, rows, row,
        # stride). Row lengths are registered the cycle before (PRECHECK).
        nw_a = Signal(range(8 * cfg.xnor_array.max_words + 1))
        nw_b = Signal.like(nw_a)
        nc = cfg.lightnorm.channels
        norm_row = Signal(range(max(8 * (nc // W + 2), nc * (isa.norm_block_words() + 1)) + 1))
        norm_params = Signal(range(max(cfg.lightnorm.thresholds + 1, 4) * nc + 1))
        pool_rows = Signal(range(16 * cfg.act_words + 1))
        widest = max(sizes.values())
        load_region = (ops[Opcode.LOAD].buffer, ops[Opcode.LOAD].addr, 1,
                       ops[Opcode.LOAD].count, 1)
        store_region = (ops[Opcode.STORE].buffer, ops[Opcode.STORE].addr, 1,
                        ops[Opcode.STORE].count, 1)
        g, n_, p = ops[Opcode.GEMM_XNOR], ops[Opcode.NORM], ops[Opcode.MAXPOOL]
        q = ops[Opcode.GEMM_LNS]
        is_stats = n_.mode == NormMode.STATISTICS
        lns_row = Signal(range(cfg.lns_mac.max_k + 1))
        regions = {
            Opcode.LOAD: [load_region],
            Opcode.STORE: [store_region],
            Opcode.GEMM_XNOR: [(Buffer.ACT, g.a_addr, g.m, nw_a, g.a_stride),
                               (Buffer.WEIGHT, g.b_addr, g.n, nw_b, g.b_stride),
                               (Buffer.OUT, g.c_addr, g.m, g.n, g.c_stride)],
            # STATISTICS writes a row of sums and a row of spreads to the output buffer
            # and has no parameters; the other modes write rows to the activation buffer.
            Opcode.NORM: [(Buffer.OUT, n_.src_addr, n_.rows, n_.channels, n_.src_stride),
                          (Mux(is_stats, Buffer.OUT.value, Buffer.ACT.value), n_.dst_addr,
                           Mux(is_stats, 2, n_.rows), norm_row, n_.dst_stride),
                          (Buffer.WEIGHT, n_.param_addr, 1, norm_params, 1, ~is_stats)],
            Opcode.GEMM_LNS: [(Buffer.ACT, q.a_addr, q.m, lns_row, q.a_stride),
                              (Buffer.WEIGHT, q.b_addr, q.n, lns_row, q.b_stride),
                              (Buffer.OUT, q.c_addr, q.m, q.n, q.c_stride)],
            Opcode.MAXPOOL: [(Buffer.ACT, p.src_addr, pool_rows, p.row_words, p.row_words),
                             (Buffer.ACT, p.dst_addr, p.rows, p.row_words, p.row_words)],
        }
        # An absent unit's opcode is ILLEGAL, which wins over ADDRESS, and never starts: its
        # regions need no checker inputs (this keeps the multiplier's operands narrow).
        regions = {op: regs for op, regs in regions.items()
                   if op in (Opcode.LOAD, Opcode.STORE) or op in engines}
        rix = Signal(range(4))
        r_used = Signal()
        r_buf = Signal(Buffer.as_shape())
        # Each checker input is as wide as its widest source, no wider: the multiplier then
        # fits one iCE40 SB_MAC16 when no region has more than 16-bit rows and strides.
        def widest_of(index):
            return max(Value.cast(reg[index]).shape().width for regs in regions.values()
                       for reg in regs)
        r_addr = Signal(widest_of(1))
        r_rows = Signal(widest_of(2))
        r_row = Signal(widest_of(3))
        r_stride = Signal(widest_of(4))
        with m.Switch(opcode):
            for op, regs in regions.items():
                with m.Case(op.value):
                    for i, (buf, addr, rows, row, stride, *used) in enumerate(regs):
                        with m.If(rix == i):
                            m.d.comb += [r_used.eq(used[0] if used else 1), r_buf.eq(buf),
                                         r_addr.eq(addr),
                                         r_rows.eq(rows), r_row.eq(row), r_stride.eq(stride)]
        # Two stages, one region a cycle: the selected region's `(rows - 1) * stride` is
        # registered (`p_*`), then its end is added up and compared. Selecting, multiplying,
        # adding and comparing in one cycle was the longest path on the iCE40.
        product = (r_rows - 1) * r_stride
        p_used, p_buf = Signal(), Signal(Buffer.as_shape())
        p_addr, p_row = Signal.like(r_addr), Signal.like(r_row)
        p_product = Signal(product.shape())
        p_short = Signal()  # the stride is shorter than a row
        size = Signal(range(widest + 1))
        with m.Switch(p_buf):
            for buf, depth in sizes.items():
                with m.Case(buf.value):
                    m.d.comb += size.eq(depth)
        r_end = Signal(range((1 << len(p_addr)) + (1 << len(p_product)) + (1 << len(p_row))))
        m.d.comb += r_end.eq(p_addr + p_product + p_row)
        r_bad = p_used & ((p_addr >= size) | p_short | (r_end > size))
        address_bad = Signal()
        # Regions of the running compute instruction, per buffer (for LOAD/STORE hazards).
        hull = {buf: (Signal(range(widest + 1), name=f"{buf.name.lower()}_lo"),
                      Signal(range(widest + 1), name=f"{buf.name.lower()}_hi"))
                for buf in sizes}
        new_hull = {buf: (Signal(range(widest + 1), name=f"new_{buf.name.lower()}_lo"),
                          Signal(range(widest + 1), name=f"new_{buf.name.lower()}_hi"))
                    for buf in sizes}

        # The region's buffer's new hull, selected first: one pair of comparators.
        cur_lo = Signal.like(new_hull[Buffer.ACT][0])
        cur_hi = Signal.like(new_hull[Buffer.ACT][1])
        with m.Switch(p_buf):
            for buf in sizes:
                with m.Case(buf.value):
                    m.d.comb += [cur_lo.eq(new_hull[buf][0]), cur_hi.eq(new_hull[buf][1])]
        lower, higher = p_addr < cur_lo, r_end > cur_hi

        # The front end ----------------------------------------------------------------------
        in_program = Signal()
        idle_count = Signal(range(cfg.timeout_cycles + 1))
        waiting_input = Signal()
        count = Signal(range(widest + 1))  # words moved by LOAD/STORE
        ptr = Signal(range(widest + 1))
        word_ready = Signal()
        reading = Signal()
        started = Signal()  # an engine was started last cycle (its busy is not up yet)
        m.d.sync += started.eq(0)
        running = busy | started
        op_buf = Mux(opcode == Opcode.LOAD.value, ops[Opcode.LOAD].buffer.as_value(),
                     ops[Opcode.STORE].buffer.as_value())
        lo = Mux(opcode == Opcode.LOAD.value, ops[Opcode.LOAD].addr, ops[Opcode.STORE].addr)
        hi = lo + Mux(opcode == Opcode.LOAD.value, ops[Opcode.LOAD].count,
                      ops[Opcode.STORE].count)
        # The buffer's hull is selected first, so one pair of comparators serves all three.
        hazard = Signal()
        op_lo, op_hi = Signal.like(hull[Buffer.ACT][0]), Signal.like(hull[Buffer.ACT][1])
        with m.Switch(op_buf):
            for buf in sizes:
                with m.Case(buf.value):
                    m.d.comb += [op_lo.eq(hull[buf][0]), op_hi.eq(hull[buf][1])]
        m.d.comb += hazard.eq(running & (lo < op_hi) & (op_lo < hi))

        with m.If(got):
            m.d.sync += idle_count.eq(0)
        with m.Elif(waiting_input & (idle_count != cfg.timeout_cycles)):
            m.d.sync += idle_count.eq(idle_count + 1)
        timed_out = idle_count == cfg.timeout_cycles

        # Counters: stop at the status record; idle link cycles with no work do not count.
        counting = Signal()
        link_stall = (waiting_input & ~self.i_stream.valid) | \
            (self.o_stream.valid & ~self.o_stream.ready)
        with m.If(counting & ~(link_stall & ~running)):
            m.d.sync += cycles.eq(cycles + 1)
        beat_of = {"xnor": Opcode.GEMM_XNOR, "norm": Opcode.NORM, "lns": Opcode.GEMM_LNS}
        for name, op in beat_of.items():
            if op in engines:
                with m.If(counting & engines[op].beat):
                    m.d.sync += counters[name].eq(counters[name] + 1)

        def start_engine(op):
            engine = engines[op]
            m.d.comb += [engine.start.eq(1), engine.instr.eq(ops[op])]
            m.d.sync += started.eq(1)
            for buf in sizes:
                m.d.sync += [hull[buf][0].eq(new_hull[buf][0]), hull[buf][1].eq(new_hull[buf][1])]

        def finish(status):
            m.d.sync += [code.eq(status), counting.eq(0)]

        with m.FSM():
            with m.State("FETCH"):
                m.d.comb += [take.eq(1), waiting_input.eq(in_program)]
                with m.If(got & ~in_program):
                    m.d.sync += [in_program.eq(1), counting.eq(1), index.eq(0), cycles.eq(0),
                                 halt_status.eq(0)]
                    m.d.sync += [c.eq(0) for c in counters.values()]
                with m.If(got):
                    m.d.sync += ir.eq(Cat(ir.as_value()[LB:], self.i_stream.payload))
                with m.If(got & (rx_count == instr_beats - 1)):
                    m.d.sync += rx_count.eq(0)
                    m.next = "PRECHECK"
                with m.Elif(in_program & timed_out):
                    m.d.sync += rx_count.eq(0)
                    finish(Status.TRUNCATED)
                    m.next = "DRAIN_ENGINES"
            with m.State("PRECHECK"):
                x = ops[Opcode.GEMM_XNOR]
                block = cfg.lightnorm.block
                norm_groups = (n_.channels + block - 1) >> (block.bit_length() - 1)
                log_w = W.bit_length() - 1
                nw = (x.k + W - 1) >> log_w
                norm = cfg.lightnorm
                m.d.sync += [
                    nw_a.eq(x.act_bits * nw), nw_b.eq(x.weight_bits * nw),
                    norm_row.eq(Mux(is_stats, n_.channels, Mux(
                        n_.mode == NormMode.NORMALISE, norm_groups * isa.norm_block_words(),
                        norm.levels * ((n_.channels + W - 1) >> log_w)))),
                    norm_params.eq(Mux(n_.mode == NormMode.NORMALISE,
                                       2 * n_.channels + 2 * norm_groups,
                                       n_.channels * (norm.thresholds + 1))),
                    pool_rows.eq(p.rows * p.window),
                    lns_row.eq(ceil_div(q.k, cfg.word // cfg.lns_mac.bits, cfg.lns_mac.max_k)),
                    rix.eq(0), address_bad.eq(0), p_used.eq(0),
                ]
                for buf in sizes:
                    m.d.sync += [new_hull[buf][0].eq(widest), new_hull[buf][1].eq(0)]
                m.next = "CHECK"
            with m.State("CHECK"):
                # Region `rix` enters the first stage while region `rix - 1` is checked
                # (`p_used` is 0 in the first cycle and for a fourth, absent, region).
                m.d.sync += [rix.eq(rix + 1), p_used.eq(r_used), p_buf.eq(r_buf),
                             p_addr.eq(r_addr), p_row.eq(r_row), p_product.eq(product),
                             p_short.eq((r_rows > 1) & (r_stride < r_row))]
                with m.If(r_bad):
                    m.d.sync += address_bad.eq(1)
                with m.Switch(p_buf):
                    for buf in sizes:
                        with m.Case(buf.value):
                            with m.If(p_used & lower):
                                m.d.sync += new_hull[buf][0].eq(p_addr)
                            with m.If(p_used & higher):
                                m.d.sync += new_hull[buf][1].eq(r_end)
                with m.If(rix == 3):
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                # As the instruction set's decode: any ILLEGAL fault wins over ADDRESS.
                with m.If(illegal | unused_bad):
                    finish(Status.ILLEGAL)
                    m.next = "DRAIN_ENGINES"
                with m.Elif(address_bad):
                    finish(Status.ADDRESS)
                    m.next = "DRAIN_ENGINES"
                with m.Else():
                    with m.Switch(opcode):
                        with m.Case(Opcode.LOAD.value):
                            m.d.sync += [ptr.eq(ops[Opcode.LOAD].addr), count.eq(0)]
                            m.next = "LOAD_WAIT"
                        with m.Case(Opcode.STORE.value):
                            m.d.sync += [ptr.eq(ops[Opcode.STORE].addr), count.eq(0),
                                         store_count.eq(ops[Opcode.STORE].count)]
                            m.next = "STORE_WAIT"
                        with m.Case(Opcode.HALT.value):
                            m.d.sync += halt_status.eq(ops[Opcode.HALT].status)
                            m.next = "HALT"
                        with m.Default():
                            m.next = "COMPUTE_WAIT"
            with m.State("COMPUTE_WAIT"):
                with m.If(~running):
                    with m.Switch(opcode):
                        for op in engines:
                            with m.Case(op.value):
                                start_engine(op)
                    m.d.sync += index.eq(index + 1)
                    m.next = "FETCH"
            with m.State("LOAD_WAIT"):
                with m.If(~hazard):
                    m.next = "LOAD"
            with m.State("LOAD"):
                buf_sel = ops[Opcode.LOAD].buffer
                # Take beats until every word of this LOAD has arrived.
                m.d.comb += [take.eq(count + word_ready < ops[Opcode.LOAD].count),
                             waiting_input.eq(take)]
                with m.If(got & (rx_count == word_beats - 1)):
                    m.d.sync += [word_ready.eq(1), rx_count.eq(0)]
                with m.If(word_ready):
                    with m.Switch(buf_sel):
                        for buf in sizes:
                            with m.Case(buf):
                                m.d.comb += [fe[buf]["addr"].eq(ptr), fe[buf]["we"].eq(1),
                                             fe[buf]["wdata"].eq(rx[-W:])]
                    m.d.sync += [word_ready.eq(got & (rx_count == word_beats - 1)),
                                 ptr.eq(ptr + 1), count.eq(count + 1)]
                    with m.If(count == ops[Opcode.LOAD].count - 1):
                        m.d.sync += index.eq(index + 1)
                        m.next = "FETCH"
                with m.Elif(timed_out):
                    m.d.sync += rx_count.eq(0)
                    finish(Status.TRUNCATED)
                    m.next = "DRAIN_ENGINES"
            with m.State("STORE_WAIT"):
                with m.If(~hazard & tx_free):
                    m.d.sync += tx_kind.eq(1)
                    m.next = "STORE_READ"
            with m.State("STORE_READ"):
                with m.Switch(ops[Opcode.STORE].buffer):
                    for buf in sizes:
                        with m.Case(buf):
                            m.d.comb += [fe[buf]["addr"].eq(ptr), fe[buf]["re"].eq(1)]
                m.d.sync += [reading.eq(1), ptr.eq(ptr + 1)]
                m.next = "STORE_SEND"
            with m.State("STORE_SEND"):
                with m.If(reading):
                    with m.Switch(ops[Opcode.STORE].buffer):
                        for buf in sizes:
                            with m.Case(buf):
                                m.d.sync += store_next.eq(mems[buf]["rdata"])
                    m.d.sync += reading.eq(0)
                with m.Elif(tx_free):
                    # store_word is on the link until tx_free: the next word waits aside.
                    m.d.sync += [tx_kind.eq(2), store_word.eq(store_next), count.eq(count + 1)]
                    m.next = "STORE_READ"
                    with m.If(count == store_count - 1):
                        m.d.sync += index.eq(index + 1)
                        m.next = "FETCH"
            with m.State("HALT"):
                with m.If(~running):
                    finish(Status.OK)
                    m.next = "STATUS"
            with m.State("DRAIN_ENGINES"):
                with m.If(~running):
                    m.next = "STATUS"
            with m.State("STATUS"):
                with m.If(tx_free):
                    m.d.sync += tx_kind.eq(3)
                    m.next = "STATUS_SENT"
            with m.State("STATUS_SENT"):
                with m.If(tx_free):
                    m.d.sync += [in_program.eq(0), idle_count.eq(0)]
                    with m.If(code == Status.OK):
                        m.next = "FETCH"
                    with m.Else():
                        m.next = "DISCARD"
            with m.State("DISCARD"):
                # After an error, drop input until the host has been quiet for a timeout.
                m.d.comb += [take.eq(1), waiting_input.eq(1)]
                m.d.sync += rx_count.eq(0)
                with m.If(timed_out):
                    m.next = "FETCH"
        return m
