"""Activity counts of the accelerator's gateware on Amaranth's simulator (issue 8): the
dynamic side of the energy model (:mod:`lowbit.energy`).

:class:`ActivityTransport` is an :class:`~lowbit.sim.amaranth_transport.AmaranthTransport`
that also watches, every clock cycle, only the design's stable interfaces:

* each :class:`~lowbit.hw.buffer_memory.BufferMemory` port: a read is a cycle with ``re``
  and not ``we`` (the memory does the write when both are high), a write a cycle with
  ``we``;
* each engine's (:class:`~lowbit.hw.buffer_port.Engine`) ``start`` pulses and ``beat``
  pulses; a ``NORM`` engine's beats are attributed to the mode of the instruction it was
  last started with;
* the host link: beats taken on ``i_stream`` and sent on ``o_stream``, in bytes.

The counts use the action names of :class:`lowbit.energy.Actions`, so a run's
:attr:`ActivityTransport.activity` compares directly with the static counts of
:func:`lowbit.energy.count_program`. The buffer memories and engines are found by walking
the elaborated design for ``BufferMemory`` and ``Engine`` instances (their ``origins``; a
memory's buffer is its submodule name without ``_buffer``, an engine's opcode its
``opcode``), so internal signals of ``hw/accelerator.py`` and the engines can change
without breaking the monitor.
"""

from amaranth.hdl import Const, Fragment

from ..energy import Actions
from ..hw.buffer_memory import BufferMemory
from ..hw.buffer_port import Engine
from ..isa import NormMode, Opcode
from .amaranth_transport import AmaranthTransport

__all__ = ["ActivityTransport", "design_parts", "measure"]

# Action name of one accepted beat, per engine opcode (NORM: per mode, below).
_BEAT_ACTION = {Opcode.GEMM_XNOR: "xnor_beats", Opcode.GEMM_LNS: "lns_beats"}


def design_parts(fragment):
    """The ``BufferMemory`` instances (by buffer name: ``act``, ``weight``, ``out``) and the
    ``Engine`` instances (by opcode) of an elaborated accelerator ``fragment``."""
    memories, engines = {}, {}

    def walk(frag, name):
        for origin in frag.origins or ():
            if isinstance(origin, BufferMemory):
                # The accelerator names them <buffer>_buffer; the buffer is what matters.
                memories[name.removesuffix("_buffer")] = origin
            elif isinstance(origin, Engine):
                engines[origin.opcode] = origin
        for sub, sub_name, _ in frag.subfragments:
            walk(sub, str(sub_name))

    walk(fragment, "top")
    return memories, engines


class ActivityTransport(AmaranthTransport):
    """An Amaranth-simulator transport that counts the accelerator's actions.

    Parameters are those of :class:`~lowbit.sim.amaranth_transport.AmaranthTransport`
    but ``vcd``.

    Raises
    ------
    RuntimeError
        If the design does not have the ``act``, ``weight`` and ``out`` buffer memories.

    Attributes
    ----------
    activity : Actions
        Counts since the transport was opened (or since :meth:`reset_activity`):
        ``<buffer>_reads`` / ``<buffer>_writes`` per buffer, ``xnor_beats``,
        ``lns_beats``, ``norm_beats_<mode>`` (by ``NormMode``), ``engine_starts_<opcode>``,
        ``host_bytes_in`` and ``host_bytes_out``.
    """

    def __init__(self, config, *, idle=0.0, stall=0.0, seed=0, max_cycles=200_000):
        super().__init__(config, idle=idle, stall=stall, seed=seed, max_cycles=max_cycles)
        self.activity = Actions()
        self._sim.add_testbench(self._monitor, background=True)

    def _design(self):
        # The simulator runs a design elaborated here, so that the memories and engines
        # watched are the very objects simulated (every elaboration makes new ones).
        fragment = Fragment.get(self.dut, None)
        self.memories, self.engines = design_parts(fragment)
        if set(self.memories) != {"act", "weight", "out"}:
            raise RuntimeError(f"expected the act, weight and out buffer memories in the "
                               f"design, found {sorted(self.memories)}")
        return fragment

    def reset_activity(self):
        """Start counting afresh (between programs on one transport)."""
        self.activity = Actions()

    async def _monitor(self, ctx):
        dut = self.dut
        link_bytes = self.config.host_link_bits // 8
        buffers = sorted(self.memories)
        engines = sorted(self.engines.items(), key=lambda item: item[0].value)
        probes = [dut.i_stream.valid, dut.i_stream.ready, dut.o_stream.valid,
                  dut.o_stream.ready]
        for name in buffers:
            probes += [self.memories[name].re, self.memories[name].we]
        for _, engine in engines:
            # An engine without a unit (MAXPOOL) has no beat: a constant 0 keeps the layout.
            probes += [engine.start, engine.beat if engine.counts_beats else Const(0)]
        norm = self.engines.get(Opcode.NORM)
        if norm is not None:
            probes.append(norm.instr.as_value())
        norm_mode = NormMode.STATISTICS
        while True:
            # Values of the cycle that just ended (sampled at its clock edge).
            values = (await ctx.tick().sample(*probes))[2:]
            counts = self.activity
            if values[0] and values[1]:
                counts["host_bytes_in"] += link_bytes
            if values[2] and values[3]:
                counts["host_bytes_out"] += link_bytes
            pos = 4
            for name in buffers:
                re, we = values[pos], values[pos + 1]
                pos += 2
                if we:
                    counts[f"{name}_writes"] += 1
                elif re:
                    counts[f"{name}_reads"] += 1
            for op, engine in engines:
                start, beat = values[pos], values[pos + 1]
                pos += 2
                if start:
                    counts[f"engine_starts_{op.name.lower()}"] += 1
                    if engine is norm:
                        norm_mode = norm.instr.shape().from_bits(values[-1]).mode
                if beat and engine.counts_beats:
                    action = _BEAT_ACTION.get(op, f"norm_beats_{norm_mode.name.lower()}")
                    counts[action] += 1


def measure(config, program, inputs=(), **link):
    """Run ``program`` on the gateware (Amaranth simulator) through the host
    :class:`~lowbit.runtime.Runtime`; return ``(RunResult, Actions)``."""
    from ..runtime import Runtime

    with ActivityTransport(config, **link) as transport:
        result = Runtime(config, transport).run(program, inputs)
        return result, transport.activity
