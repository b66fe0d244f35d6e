"""Random race-free programs and random raw instruction words, for comparing the gateware
with the ISS (Amaranth's simulator and cocotb share them).

:func:`random_program` draws loads of random words (activations, weights and thresholds
are any bits: padding included), ``GEMM``s of random shapes reading the ``in`` or ``act``
memory and writing thresholded activations or scores, and ``STORE``s of those scores (and
``STATS`` and ``ARGMAX`` of them where the configuration has the unit). Its
wait fields are the *loosest* that keep the program race-free (each waits only for the
latest earlier instruction it conflicts with), so the stages overlap as much as the
program allows and every wait path of the gateware is exercised; the ISS, which runs in
program order, then predicts the gateware exactly, cycles included.

:func:`random_word` draws a raw instruction word: mostly a real opcode with random field
values (out of range ones included), sometimes random bits anywhere.
"""

import numpy as np

from ..isa import NO_WAIT, Buffer, GemmMode, Opcode, instruction_set
from ..program import Program

__all__ = ["random_program", "random_word", "word_stream", "small_configs", "stream"]


def small_configs():
    """Small configurations for simulation: the shapes that matter, quick to simulate."""
    from ..config.accelerator import AcceleratorConfig
    from ..config.xnor_array import XNORArrayConfig

    def make(rows, cols, word, pipeline, out_bits, link, single, queue, pool, latent=(0, 8),
             norm=(0, 8), rank=0):
        return AcceleratorConfig(
            xnor_array=XNORArrayConfig(rows=rows, cols=cols, word=word, max_k=8 * word,
                                       max_act_bits=4, max_weight_bits=1,
                                       pipeline=pipeline),
            max_out_bits=out_bits, max_pool=pool, in_depth=64, act_depth=64, weight_depth=64,
            thresh_depth=32, score_depth=64, weight_single_port=single, queue_depth=queue,
            host_link_bits=link, timeout_cycles=64, latent_depth=latent[0],
            latent_bits=latent[1], norm_channels=norm[0], norm_chunks=norm[1],
            rank_depth=rank)

    # The first and the last are training configurations (a latent memory and UPDATE); the
    # first also has a statistics unit (STATS) of 4 groups, in 4 chunks; the other two have
    # an argmax unit (ARGMAX), with record words of 8 and of 2 class bytes.
    return [make(2, 2, 32, 1, 2, 8, False, 2, 4, (128, 8), (8, 4)),
            make(1, 4, 16, 2, 1, 16, True, 1, 1, rank=64),
            make(3, 1, 16, 0, 3, 8, False, 4, 3, (32, 5), rank=32)]


def _overlap(a, b):
    return a[0] == b[0] and a[1] < b[1] + b[2] and b[1] < a[1] + a[2]


def random_program(config, rng, *, instructions=12):
    """A random race-free :class:`~lowbit.program.Program` and its input words."""
    isa = instruction_set(config)
    instrs, consts, inputs = [], [], []
    gemms = []    # (reads, writes) regions of each GEMM in order
    stores = []   # read regions of each STORE
    latent_words = config.latent_depth
    act_written = []
    word_max = 1 << config.word

    def draw_words(memory, n):
        words = rng.integers(0, word_max, n, dtype=np.uint64)
        if memory == "thresh":
            # Thresholds (the low acc_bits of a lane) mostly within the accumulators' usual
            # range, so that counts vary within a tile and a pooling window; the high bits
            # stay random (the gateware must ignore them).
            typical = min(config.never, 3 * config.word * ((1 << config.xnor_array.max_act_bits)
                                                           - 1) // 2)
            low = rng.integers(0, typical + 1, n, dtype=np.uint64)
            keep = rng.random(n) < 0.8
            mask = np.uint64(config.never)
            words[keep] = (words[keep] & ~mask) | low[keep]
        return words

    def region_fits(memory, first, words):
        return first + words <= config.depth(memory)

    def draw_load():
        buffer = rng.choice([Buffer.IN, Buffer.WEIGHT, Buffer.THRESH]
                            + ([Buffer.RANK] if config.argmax else []))
        name = buffer.name.lower()
        depth = config.depth(name)
        count = int(rng.integers(1, min(depth, 12) + 1))
        addr = int(rng.integers(0, depth - count + 1))
        source = "INPUT" if buffer == Buffer.IN and rng.random() < 0.7 else "CONST"
        words = draw_words(name, count * config.lanes(name))
        (inputs if source == "INPUT" else consts).append(words)
        region = (name, addr, count)
        g = len(gemms)
        # Loosest safe waits: the latest GEMM that reads this region must be done reading
        # (thresholds are read until the GEMM's results are written).
        unread = unwritten = NO_WAIT
        for j in range(g - 1, -1, -1):
            if any(_overlap(region, r) for r in gemms[j][0]):
                if name == "thresh":
                    unwritten = g - (j + 1)
                else:
                    unread = g - (j + 1)
                break
        return dict(opcode="LOAD", buffer=buffer, source=source, addr=addr, count=count,
                    unread=min(unread, NO_WAIT), unwritten=min(unwritten, NO_WAIT))

    def draw_gemm():
        for _ in range(50):
            planes = int(rng.integers(1, config.xnor_array.max_act_bits + 1))
            words = int(rng.integers(1, min(config.max_words, 3) + 1))
            m_tiles, n_tiles = int(rng.integers(1, 4)), int(rng.integers(1, 5))
            mode = GemmMode.SCORES if rng.random() < 0.4 else GemmMode.THRESHOLD
            pool = 1
            if mode == GemmMode.THRESHOLD and config.max_pool > 1 and rng.random() < 0.4:
                pool = int(rng.integers(2, config.max_pool + 1))
            use_act = bool(act_written) and rng.random() < 0.5
            a_name = "act" if use_act else "in"
            a_words = m_tiles * pool * planes * words
            if not region_fits(a_name, 0, a_words):
                continue
            if use_act:
                # Only act words some GEMM wrote (the rest is whatever the memory held).
                _, first, size = act_written[int(rng.integers(len(act_written)))]
                if a_words > size:
                    continue
                a_addr = first + int(rng.integers(0, size - a_words + 1))
            else:
                a_addr = int(rng.integers(0, config.depth(a_name) - a_words + 1))
            b_words = n_tiles * words
            if not region_fits("weight", 0, b_words):
                continue
            b_addr = int(rng.integers(0, config.depth("weight") - b_words + 1))
            out_bits = int(rng.integers(1, config.max_out_bits + 1))
            instr = dict(opcode="GEMM", a_buffer=Buffer.ACT if use_act else Buffer.IN,
                         a_addr=a_addr, b_addr=b_addr, planes=planes, words=words,
                         m_tiles=m_tiles, n_tiles=n_tiles, pool=pool, mode=mode,
                         out_bits=out_bits,
                         dst_addr=0, thr_addr=0, sync=int(use_act), unsent=NO_WAIT)
            regs = isa.regions(instr)
            ok = True
            for k, (memory, _, size, access) in enumerate(regs):
                if memory in ("act", "score", "thresh") and k >= 2:
                    if size > config.depth(memory):
                        ok = False
                        break
                    first = int(rng.integers(0, config.depth(memory) - size + 1))
                    instr["thr_addr" if memory == "thresh" else "dst_addr"] = first
            if not ok:
                continue
            regs = isa.regions(instr)
            reads = [(m, f, s) for m, f, s, acc in regs if acc == "r"]
            writes = [(m, f, s) for m, f, s, acc in regs if acc == "w"]
            if any(_overlap(r, wr) for r in reads for wr in writes):
                continue
            s = len(stores)
            for k in range(s - 1, -1, -1):
                if any(_overlap(wr, stores[k]) for wr in writes):
                    instr["unsent"] = s - (k + 1)
                    break
            gemms.append((reads, writes))
            if mode == GemmMode.THRESHOLD:
                act_written.append(writes[0])
            return instr
        return None

    def draw_update():
        if not config.training:
            return None
        count = int(rng.integers(1, min(latent_words, 6) + 1))
        lat_addr = int(rng.integers(0, latent_words - count + 1))
        w_addr = int(rng.integers(0, config.weight_depth * config.cols - count + 1))
        instr = dict(opcode="UPDATE", source="INPUT" if rng.random() < 0.5 else "CONST",
                     lat_addr=lat_addr, w_addr=w_addr, count=count,
                     grad_bits=int(rng.integers(2, 9)),
                     lr_exponent=int(rng.integers(0, config.max_update_lr + 1)),
                     unread=NO_WAIT, unwritten=NO_WAIT)
        (region,) = [r[:3] for r in isa.regions(instr) if r[0] == "weight"]
        g = len(gemms)
        for j in range(g - 1, -1, -1):   # as a LOAD of weights
            if any(_overlap(region, r) for r in gemms[j][0]):
                instr["unread"] = g - (j + 1)
                break
        words = rng.integers(0, word_max, isa.link_words(instr), dtype=np.uint64)
        (inputs if instr["source"] == "INPUT" else consts).append(words)
        return instr

    def draw_latent():
        if not config.training:
            return None
        count = int(rng.integers(1, min(latent_words, 8) + 1))
        addr = int(rng.integers(0, latent_words - count + 1))
        if rng.random() < 0.5:
            words = rng.integers(0, word_max, count * config.latent_bits, dtype=np.uint64)
            consts.append(words)
            return dict(opcode="LOAD", buffer=Buffer.LATENT, source="CONST", addr=addr,
                        count=count, unread=NO_WAIT, unwritten=NO_WAIT)
        stores.append(("latent", addr, count))
        return dict(opcode="STORE", buffer=Buffer.LATENT, addr=addr, count=count,
                    unwritten=NO_WAIT)

    def scored_region():
        # A region some GEMM wrote scores into, or None.
        scored = [w for _, writes in gemms for w in writes if w[0] == "score"]
        return scored[int(rng.integers(len(scored)))][1:] if scored else None

    def store_stage_read(region):
        # A STORE's or STATS's read of score words: its loosest safe unwritten wait.
        g = len(gemms)
        unwritten = NO_WAIT
        for j in range(g - 1, -1, -1):
            if any(_overlap(region, w) for w in gemms[j][1]):
                unwritten = g - (j + 1)
                break
        stores.append(region)
        return min(unwritten, NO_WAIT)

    def draw_store():
        scored = scored_region()
        if scored is None:
            return None
        first, size = scored
        count = int(rng.integers(1, size + 1))
        addr = first + int(rng.integers(0, size - count + 1))
        return dict(opcode="STORE", buffer=Buffer.SCORE, addr=addr, count=count,
                    unwritten=store_stage_read(("score", addr, count)))

    def draw_stats():
        scored = scored_region() if config.statistics else None
        if scored is None:
            return None
        first, size = scored
        groups = int(rng.integers(1, min(config.norm_groups, size) + 1))
        samples = int(rng.integers(1, size // groups + 1))
        addr = first + int(rng.integers(0, size - samples * groups + 1))
        return dict(opcode="STATS", addr=addr, groups=groups, samples=samples,
                    unwritten=store_stage_read(("score", addr, samples * groups)))

    def draw_argmax():
        scored = scored_region() if config.argmax else None
        if scored is None:
            return None
        first, size = scored
        groups = int(rng.integers(1, min(4, size) + 1))
        samples = int(rng.integers(1, size // groups + 1))
        addr = first + int(rng.integers(0, size - samples * groups + 1))
        # Sometimes more classes than lanes (every lane then counts).
        classes = int(rng.integers(1, groups * config.cols + 3))
        classes = min(classes, config.rank_depth)
        stride = int(rng.integers(1, config.rank_depth // classes + 1))
        rank_addr = int(rng.integers(0, config.rank_depth - classes * stride + 1))
        return dict(opcode="ARGMAX", addr=addr, groups=groups, samples=samples,
                    classes=classes, rank_addr=rank_addr, stride=stride,
                    unwritten=store_stage_read(("score", addr, samples * groups)))

    # Something to compute on first.
    for buffer in isa.load_buffers:
        name = buffer.name.lower()
        words = draw_words(name, config.flat_words(name))
        source = "INPUT" if buffer == Buffer.IN else "CONST"
        (inputs if source == "INPUT" else consts).append(words)
        instrs.append(dict(opcode="LOAD", buffer=buffer, source=source, addr=0,
                           count=config.depth(name), unread=NO_WAIT, unwritten=NO_WAIT))
    while len(instrs) < instructions:
        kind = rng.choice(["load", "gemm", "gemm", "store", "update", "latent", "stats",
                           "argmax"])
        instr = {"load": draw_load, "gemm": draw_gemm, "store": draw_store,
                 "update": draw_update, "latent": draw_latent, "stats": draw_stats,
                 "argmax": draw_argmax}[kind]()
        if instr is not None:
            instrs.append(instr)
    instrs.append(dict(opcode="HALT", status=int(rng.integers(0, 256))))
    constants = np.concatenate(consts) if consts else np.zeros(0, dtype=np.uint64)
    words = np.concatenate(inputs) if inputs else np.zeros(0, dtype=np.uint64)
    return Program(config, instrs, constants), words


def random_word(config, rng, *, max_work=4000):
    """A raw instruction word: a real opcode with random field values (a field's bits are
    random, so out-of-range values and bad enum values occur), or 5% of the time random
    bits. ``GEMM``s whose beats would exceed ``max_work`` are redrawn (to keep simulations
    short; they are still legal or illegal at random)."""
    isa = instruction_set(config)
    if rng.random() < 0.05:
        return int.from_bytes(rng.bytes(isa.bytes), "little")
    op = Opcode(int(rng.integers(0, len(Opcode))))
    if op not in isa.operands:
        # UPDATE on an accelerator without a latent memory: an unknown opcode to it.
        bits = int.from_bytes(rng.bytes(isa.bytes), "little")
        low = isa.layout["opcode"].width
        return (bits >> low << low) | op.value
    layout = isa.raw_operands[op]
    while True:
        fields = {name: int(rng.integers(0, 1 << field.width)) if field.width else 0
                  for name, field in layout}
        if op == Opcode.GEMM:
            work = (fields["m_tiles"] * fields["n_tiles"] * max(fields["pool"], 1)
                    * max(fields["planes"], 1) * max(fields["words"], 1))
            if work > max_work:
                continue
        if op in (Opcode.LOAD, Opcode.STORE) and fields["count"] > 64:
            fields["count"] = int(rng.integers(0, 65))
        if op == Opcode.UPDATE and fields["count"] > 4:
            fields["count"] = int(rng.integers(0, 5))
        if op in (Opcode.STATS, Opcode.ARGMAX) and fields["samples"] > 24:
            fields["samples"] = int(rng.integers(0, 25))
        if op == Opcode.ARGMAX and fields["groups"] > 8:
            fields["groups"] = int(rng.integers(0, 9))
        break
    operands = layout.const(fields).as_bits()
    return isa.raw_layout.const({"opcode": op.value, "operands": operands}).as_bits()


def stream(program, inputs):
    """The host-link bytes of a program (instruction words, each LOAD's and UPDATE's words
    after it)."""
    isa = instruction_set(program.config)
    word_bytes = program.config.word // 8
    parts, pos = [], {"CONST": 0, "INPUT": 0}
    sources = {"CONST": program.constants, "INPUT": np.asarray(inputs, dtype=np.uint64)}
    for instr, word in zip(program.instructions, program.words()):
        parts.append(word.to_bytes(isa.bytes, "little"))
        if isa.takes_data(instr):
            n, src = isa.link_words(instr), instr["source"].name
            parts.append(sources[src][pos[src]:pos[src] + n].astype(f"<u{word_bytes}")
                         .tobytes())
            pos[src] += n
    return b"".join(parts)


def word_stream(config, rng):
    """``(word, bytes)``: a :func:`random_word` run as a program of its own, followed (if it
    decodes as a ``LOAD``) by its data and then by ``HALT``."""
    isa = instruction_set(config)
    word = random_word(config, rng)
    data = word.to_bytes(isa.bytes, "little")
    if isa.raw_layout.from_bits(word).opcode in (Opcode.LOAD.value, Opcode.UPDATE.value):
        try:
            instr = isa.decode(word, regions=False)
        except ValueError:
            pass
        else:
            data += rng.bytes(isa.link_words(instr) * config.word // 8)
    halt = isa.encode({"opcode": "HALT", "status": 0})
    return word, data + halt.to_bytes(isa.bytes, "little")
