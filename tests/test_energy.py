"""The energy model (lowbit.energy, issue 8): hand-computed totals from the table's own
entries, static action counts against the RTL's (Amaranth simulator), table overrides and
their errors, the seeds' orders of magnitude, and ``lowbit energy``."""

import json
import math
import re

import numpy as np
import pytest

from lowbit import energy as E
from lowbit.cli import main
from lowbit.config.lightnorm import LightNormConfig
from lowbit.config.lns import LNSMacConfig
from lowbit.isa import instruction_set
from lowbit.program import Program
from lowbit.sim import accelerator_programs as P
from lowbit.sim.activity import measure

CONFIG = P.small_config()
TECH = E.default_technology()

# The measured entries, as REFERENCE.md section 5 gives them (pJ).
INT_ADD = {8: 0.03, 16: 0.05, 32: 0.1}
DRAM_64 = 1300.0


def sram_small():
    # 512 words x 32 bits = 2 KB: 8 KB's 10 pJ scaled by (2/8)^slope, slope of 8 -> 32 KB
    # (10 -> 20 pJ over 4x: 0.5), times 32/64 bits.
    return 10.0 * (2 / 8) ** 0.5 * 32 / 64


def sram_out():
    # The 128-word output buffer: 512 bytes.
    return 10.0 * (0.5 / 8) ** 0.5 * 32 / 64


def test_default_table_holds_the_reference_entries():
    assert TECH["int_add_8"] == 0.03 and TECH["int_add_32"] == 0.1
    assert TECH["int_mul_8"] == 0.2 and TECH["int_mul_32"] == 3.1
    assert TECH["fp_add_32"] == 0.9 and TECH["fp_mul_32"] == 3.7
    assert TECH["fp_add_16"] == 0.4 and TECH["fp_mul_16"] == 1.1
    assert TECH["sram_read_64b_8kb"] == 10 and TECH["sram_read_64b_1mb"] == 100
    assert "Horowitz" in TECH.source and "ISSCC 2014" in TECH.source
    derived = TECH.derived(CONFIG)
    for name in ("gate", "xnor_popcount_bit", "host_byte", "bfp_mul", "lns_product",
                 "sram_act_32b", "mac_fp32"):
        pj, how = derived[name]
        assert pj > 0 and how


def test_derived_entries_by_hand():
    gate = 0.03 / (8 * 5)
    assert TECH.gate == pytest.approx(gate)
    assert TECH.xnor_popcount_bit == pytest.approx(gate * 6)
    assert TECH.int_add(24) == pytest.approx(0.05 + 0.05 * 8 / 16)
    assert TECH.int_add(4) == pytest.approx(0.015)
    assert TECH.int_mul(8) == pytest.approx(0.2) and TECH.int_mul(32) == pytest.approx(3.1)
    assert TECH.sram_access(512, 32) == pytest.approx(sram_small())
    # 64 KB (the default 16384 x 32-bit buffers): between 32 KB (20) and 1 MB (100).
    slope = math.log(5) / math.log(32)
    assert TECH.sram_access(16384, 32) == pytest.approx(20 * 2 ** slope / 2)
    assert TECH.host_byte == pytest.approx(DRAM_64 / 8)


def _load_store_program():
    instrs = [dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=2),
              dict(opcode="STORE", buffer="ACT", addr=0, count=2),
              dict(opcode="HALT", status=0)]
    return Program(CONFIG, instrs)


def test_hand_computed_load_store():
    program = _load_store_program()
    ib = instruction_set(CONFIG).bytes
    bytes_in = 3 * ib + 2 * 4
    bytes_out = (8 + 2 * 4) + (8 + 16)  # DATA record, STATUS record
    expected = 2 * sram_small() + 2 * sram_small() + (bytes_in + bytes_out) * DRAM_64 / 8
    est = E.estimate(program)
    assert est.total_pj == pytest.approx(expected)
    assert est.batch == 1
    comps = est.components()
    assert comps["act_buffer"] == pytest.approx(4 * sram_small())
    assert comps["host_link"] == pytest.approx((bytes_in + bytes_out) * 162.5)


def _gemm_program(m, n, k):
    rng = np.random.default_rng(1)
    program, inputs, _ = P.gemm(CONFIG, rng, m, n, k)
    return program, inputs


def test_hand_computed_binary_gemm():
    # 3 x 3 outputs of K = 40 on the 2 x 2 x 32 array: 4 tiles of 2 words, 8 beats; each
    # beat works all 4 PEs over 32 bits and adds into 4 25-bit accumulators. The engine
    # reads a word per tile row (or column) present: 6 of each per word.
    program, _ = _gemm_program(3, 3, 40)
    counts = E.Actions.total(E.count_program(program))
    assert counts["xnor_beats"] == 8 and counts["xnor_macs"] == 3 * 3 * 40
    assert counts["xnor_passes"] == 4
    assert counts["act_reads"] == 12 and counts["weight_reads"] == 12
    gate = 0.03 / 40
    acc_add = 0.05 + 0.05 * (25 - 16) / 16
    compute = 8 * 4 * (32 * 6 * gate + acc_add)
    ib = instruction_set(CONFIG).bytes
    act, weight = 3 * 2, 3 * 2                       # words loaded
    bytes_in = len(program) * ib + (act + weight) * 4
    bytes_out = 3 * (8 + 3 * 4) + 24
    memory = (act + weight + 12 + 12) * sram_small() + (9 + 9) * sram_out()
    expected = compute + memory + (bytes_in + bytes_out) * 162.5
    assert E.estimate(program).total_pj == pytest.approx(expected)


def test_changed_entry_changes_exactly_the_expected_totals():
    rng = np.random.default_rng(2)
    program, _ = P.binary_mlp(CONFIG, rng, 3, [40, 16, 10])
    base = E.estimate(program)
    counts = E.Actions.total(E.count_program(program))
    host_bytes = counts["host_bytes_in"] + counts["host_bytes_out"]
    dearer = TECH.replace(dram_access_64b=2600.0)
    est = E.estimate(program, dearer)
    assert est.total_pj == pytest.approx(base.total_pj + host_bytes * 1300 / 8)
    for name, value in est.components().items():
        if name != "host_link":
            assert value == pytest.approx(base.components()[name])
    # fp32 multiplies: the design and every datapath but fp32 stay; fp32 pays 1 pJ more per
    # MAC and per batch-norm value (its batch norm is x * a + b in fp32).
    before, after = E.compare(program), E.compare(program, TECH.replace(fp_mul_32=4.7))
    assert E.estimate(program, TECH.replace(fp_mul_32=4.7)).total_pj == base.total_pj
    multiplies = 3 * (40 * 16 + 16 * 10) + 3 * 16
    assert counts["xnor_macs"] + counts["norm_values_threshold"] == multiplies
    assert after["fp32"]["total_pj"] == pytest.approx(before["fp32"]["total_pj"]
                                                      + multiplies)
    for name in before:
        if name != "fp32":
            assert after[name]["total_pj"] == before[name]["total_pj"]


def _configs():
    return {
        "sign": CONFIG,
        "requantise": CONFIG.replace(lightnorm=LightNormConfig(
            channels=16, block=4, output="multithreshold", act_bits=2)),
        "bfp": CONFIG.replace(lightnorm=LightNormConfig(channels=16, block=4, output="bfp")),
        "lns": CONFIG.replace(has_lns_mac=True, lns_mac=LNSMacConfig(lanes=2)),
    }


def _programs():
    rng = np.random.default_rng(5)
    c = _configs()
    return {
        "load_store": (CONFIG, P.load_store(CONFIG, rng)),
        "gemm_binary_partial_tiles": (CONFIG, _gemm_program(3, 5, 70)),
        "gemm_uint2_int3": (CONFIG, P.gemm(CONFIG, rng, 3, 2, 33, 2, 0, 3, 1, a_pad=1)[:2]),
        "threshold": (CONFIG, P.norm_threshold(CONFIG, rng, 2, 10, dst_pad=1)),
        "requantise": (c["requantise"], P.norm_threshold(c["requantise"], rng, 3, 13)),
        "statistics": (CONFIG, P.norm_statistics(CONFIG, rng, 5, 11, src_pad=1)),
        "normalise": (c["bfp"], P.norm_normalise(c["bfp"], rng, 3, 11)),
        "lns": (c["lns"], P.gemm_lns(c["lns"], rng, 2, 3, 21, a_pad=1)),
        "maxpool": (CONFIG, P.maxpool(CONFIG, rng, 2, 2, 3)),
        "mlp": (CONFIG, P.binary_mlp(CONFIG, rng, 3, [40, 16, 10])),
        "random_a": (c["lns"], P.random_program(c["lns"], np.random.default_rng(7), 4)),
        "random_b": (c["lns"], P.random_program(c["lns"], np.random.default_rng(8), 4)),
    }


@pytest.mark.parametrize("name", list(_programs()))
def test_static_counts_equal_rtl_activity(name):
    # Ten hand-written programs and two random ones (blocks of the same builders).
    config, (program, inputs) = _programs()[name]
    _, activity = measure(config, program, inputs, idle=0.1, stall=0.1)
    static = E.Actions.total(E.count_program(program)).activity()
    assert activity.activity() == static
    # Something happened beyond the link (every program moves buffer words).
    assert sum(static[k] for k in E.ACTIVITY if k.endswith(("_reads", "_writes"))) > 0


def test_layers_from_the_dataflow():
    rng = np.random.default_rng(3)
    program, _ = P.binary_mlp(CONFIG, rng, 3, [40, 16, 10])
    # LOAD x, LOAD w0, LOAD t0, GEMM, NORM, LOAD w1, GEMM, STORE, HALT
    found = E.layers(program)
    assert [layer.instructions for layer in found] == [[0, 1, 2, 3, 4], [5, 6, 7, 8]]
    assert (found[0].act_bits, found[0].weight_bits) == (1, 1)


def test_layers_from_metadata_and_batch():
    program = _load_store_program()
    tagged = Program(CONFIG, program.instructions, metadata={
        "batch": 2, "layers": [{"name": "in", "instructions": [0]},
                               {"name": "out", "instructions": [1]}]})
    est = E.estimate(tagged)
    # The HALT, in no layer, makes a last one.
    assert [layer["name"] for layer in est.per_layer] == ["in", "out", "other"]
    assert [layer["instructions"] for layer in est.per_layer] == [[0], [1], [2]]
    assert est.total_pj == pytest.approx(E.estimate(program).total_pj / 2)
    total, fp32 = E.per_inference(tagged)
    assert total == pytest.approx(est.total_pj)
    assert fp32 == pytest.approx(E.compare(tagged)["fp32"]["total_pj"])


@pytest.mark.parametrize("layers,message", [
    ([{"name": "a", "instructions": [0, 3]}], r"layer 0 names instruction 3, the program "
                                              r"has 3"),
    ([{"instructions": [0]}, {"instructions": [0, 1]}], "puts instruction 0 in two layers"),
    ([{"name": "a", "instructions": "0-2"}], "layer 0 must be a dict with an 'instructions' "
                                             "list"),
])
def test_bad_metadata_layers(layers, message):
    program = Program(CONFIG, _load_store_program().instructions,
                      metadata={"layers": layers})
    with pytest.raises(ValueError, match=message):
        E.estimate(program)


def test_seed_claims_orders_of_magnitude():
    # BDNN: binary ops "at least two orders of magnitude" below float; XNOR-Net: 58x fewer
    # high-precision operations. One binary MAC: an XNOR and a popcount full adder (6
    # gates of int_add_8 / 40) and 1/32 of a 25-bit accumulator add.
    binary = E.mac_energy(TECH, "binary", CONFIG)
    assert binary == pytest.approx(6 * 0.03 / 40 + (0.05 + 0.05 * 9 / 16) / 32)
    fp32 = E.mac_energy(TECH, "fp32", CONFIG)
    assert fp32 == pytest.approx(3.7 + 0.9)
    assert fp32 / binary > 100
    # LNS-Madam: "more than 90%" saved against fp32, for 8-bit LNS at K = 256.
    lns = E.mac_energy(TECH, "lns8")
    assert 1 - lns / fp32 > 0.9
    assert E.mac_energy(TECH, "int8") == pytest.approx(0.2 + 0.1)


def _write(tmp_path, text):
    path = tmp_path / "tech.toml"
    path.write_text(text)
    return path


def test_table_round_trips(tmp_path):
    path = _write(tmp_path, TECH.replace(int_add_8=0.06).to_toml())
    loaded = E.Technology.load(path)
    assert loaded["int_add_8"] == 0.06 and loaded["fp_mul_32"] == 3.7
    assert loaded.derivation == TECH.derivation


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace("int_mul_8 = 0.2\n", ""), r"missing key\(s\) energy_pj.int_mul_8"),
    (lambda t: t.replace("int_mul_8 = 0.2", "int_mul_8 = -0.2"),
     r"energy_pj.int_mul_8 must not be negative, not -0.2"),
    (lambda t: t.replace("int_mul_8 = 0.2", 'int_mul_8 = "cheap"'),
     r"energy_pj.int_mul_8 must be a number, not 'cheap'"),
    (lambda t: t.replace("int_mul_8 = 0.2", "int_mul_8 = 0.2\nint_mul_4 = 0.05"),
     r"unknown key\(s\) energy_pj.int_mul_4 \(known: "),
    (lambda t: t.replace("host_dram_per_byte = 1.0", "host_dram_per_byte = true"),
     r"derivation.host_dram_per_byte must be a number, not True"),
    (lambda t: "colour = 1\n" + t, r"unknown key\(s\) colour \(known: "),
    (lambda t: t.replace("[energy_pj]", "[energy_pj"), r"not a TOML file"),
])
def test_bad_technology_files(tmp_path, edit, message):
    path = _write(tmp_path, edit(TECH.to_toml()))
    with pytest.raises(E.TechError, match=f"^{re.escape(str(path))}: {message}"):
        E.Technology.load(path)


def test_cli_json_plot_and_errors(tmp_path, capsys):
    rng = np.random.default_rng(4)
    program, _ = P.binary_mlp(CONFIG, rng, 3, [40, 16, 10])
    prog_path, config_path = tmp_path / "mlp.lbp", tmp_path / "config.json"
    program.save(prog_path)
    CONFIG.save(config_path)
    png, svg = tmp_path / "e.png", tmp_path / "e.svg"
    base = ["energy", str(prog_path), "--config", str(config_path)]
    assert main(base + ["--json", "--compare", "--plot", str(png)]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["total_pj"] == pytest.approx(E.estimate(program).total_pj)
    assert [layer["name"] for layer in rep["per_layer"]] == ["layer 0", "layer 1"]
    assert sum(layer["total_pj"] for layer in rep["per_layer"]) == pytest.approx(
        rep["total_pj"])
    assert set(rep["compare"]) >= {"binary", "int8", "fp32", "lns8", "bitserial2"}
    assert rep["compare"]["binary"] < rep["compare"]["int8"] < rep["compare"]["fp32"]
    assert [i["opcode"] for i in rep["per_instruction"]] == [
        i["opcode"].name for i in program.instructions]
    assert sum(i["total_pj"] for i in rep["per_instruction"]) == pytest.approx(
        rep["total_run_pj"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(base + ["--plot", str(svg)]) == 0
    out = capsys.readouterr().out
    assert "per inference" in out and "layer 1" in out and f"wrote {svg}" in out
    assert b"<svg" in svg.read_bytes()[:400]
    # The same program on the gateware: the measured activity is the counted one.
    assert main(base + ["--json", "--rtl"]) == 0
    rtl = json.loads(capsys.readouterr().out)["rtl"]
    assert all(static == measured for static, measured in rtl["activity"].values())
    assert rtl["activity"]["xnor_beats"][1] > 0
    assert rtl["total_pj"] == pytest.approx(rep["total_pj"])
    # A changed table through --tech, and a bad one.
    dearer = _write(tmp_path, TECH.replace(dram_access_64b=2600.0).to_toml())
    assert main(base + ["--json", "--tech", str(dearer)]) == 0
    assert json.loads(capsys.readouterr().out)["total_pj"] > rep["total_pj"]
    bad = _write(tmp_path, TECH.to_toml().replace("fp_add_16 = 0.4\n", ""))
    with pytest.raises(SystemExit) as info:
        main(base + ["--tech", str(bad)])
    assert info.value.code == 2
    assert f"lowbit energy: error: {bad}: missing key(s) energy_pj.fp_add_16" in \
        capsys.readouterr().err


def test_collisions_only_add_rtl_reads():
    # A LOAD into the weight buffer while a GEMM runs: when the front end takes the weight
    # buffer in a cycle in which the engine read an activation word for the same slot, the
    # engine reads that word again. The static counts are the collision-free ones: the RTL
    # reads at most one activation word more per word the front end wrote meanwhile, and
    # everything else is equal.
    rng = np.random.default_rng(0)
    program, inputs, _ = P.gemm(CONFIG, rng, 4, 4, 96)
    extra = rng.integers(0, 2 ** 32, 60, dtype=np.uint64)
    instrs = list(program.instructions)
    instrs.insert(3, dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=400,
                          count=60))
    assert instrs[2]["opcode"].name == "GEMM_XNOR"
    busy = Program(CONFIG, instrs, np.concatenate([program.constants, extra]))
    _, activity = measure(CONFIG, busy, inputs)
    static = E.Actions.total(E.count_program(busy)).activity()
    measured = activity.activity()
    assert static["act_reads"] <= measured["act_reads"] <= static["act_reads"] + 60
    del static["act_reads"], measured["act_reads"]
    assert measured == static


def test_compare_by_hand_on_a_gemm():
    # fp32 on the 3 x 3 x 40 binary GEMM: 360 MACs at fp_mul_32 + fp_add_32; activation
    # and weight words (loaded, and read by the engine) 32 times as many; the outputs, the
    # instructions and the records as they are.
    program, _ = _gemm_program(3, 3, 40)
    ib = instruction_set(CONFIG).bytes
    compute = 360 * (3.7 + 0.9)
    memory = 32 * (6 + 6 + 12 + 12) * sram_small() + (9 + 9) * sram_out()
    host = len(program) * ib + 32 * (6 + 6) * 4 + 3 * (8 + 3 * 4) + 24
    fp32 = E.compare(program)["fp32"]
    assert fp32["compute_pj"] == pytest.approx(compute)
    assert fp32["memory_pj"] == pytest.approx(memory)
    assert fp32["host_pj"] == pytest.approx(host * 162.5)
    assert fp32["total_pj"] == pytest.approx(compute + memory + host * 162.5)
    assert fp32["hypothetical"] and not E.compare(program)["binary"]["hypothetical"]


def test_compare_norm_by_hand():
    rng = np.random.default_rng(6)
    program, _ = P.norm_threshold(CONFIG, rng, 3, 10)
    got = E.compare_norm(program)
    values = 3 * 10
    gate = 0.03 / 40
    int_add = {6: 0.03 * 6 / 8, 17: 0.05 + 0.05 / 16, 19: 0.05 + 0.05 * 3 / 16,
               28: 0.05 + 0.05 * 12 / 16, 16: 0.05}
    # Sign output: one threshold compare of input_width + 1 = 17 bits per value.
    assert got["values"] == values
    assert got["as_built_pj"] == pytest.approx(values * int_add[17])
    # BFP (m = 8, e = 6): int_mul(8) + int_add(6), then a 19-bit add and a shifter of
    # ceil(log2 19) = 5 levels of 8 two-gate muxes.
    bfp = 0.2 + int_add[6] + int_add[19] + 2 * gate * 8 * 5
    assert got["lightnorm_bfp_pj"] == pytest.approx(values * bfp)
    assert got["fp32_pj"] == pytest.approx(values * (3.7 + 0.9))
    # Statistics: a 28-bit sum (16-bit inputs, max_batch 4096) and two 16-bit compares.
    assert got["lightnorm_statistics_pj"] == pytest.approx(values * (int_add[28]
                                                                     + 2 * int_add[16]))
    assert got["fp32_statistics_pj"] == pytest.approx(values * (2 * 0.9 + 3.7))


def test_cli_refuses_a_program_for_another_configuration(tmp_path, capsys):
    program, _ = _gemm_program(1, 1, 8)
    path = tmp_path / "g.lbp"
    program.save(path)
    with pytest.raises(SystemExit) as info:
        main(["energy", str(path)])
    assert info.value.code == 2
    assert "program was built for accelerator configuration" in capsys.readouterr().err
