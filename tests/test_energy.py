"""The energy model (lowbit.energy): action counts of small hand-written programs on the
full-rate core against hand-computed numbers, totals from the table's own entries, layers,
comparisons, table overrides and their errors, and ``lowbit energy``."""

import json
import math
import re

import numpy as np
import pytest

from lowbit import energy as E
from lowbit.cli import main
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.isa import NO_WAIT, instruction_set
from lowbit.iss import ISS
from lowbit.program import Program

# A 2 x 2 array of 32-bit PEs: every memory word is 2 lanes = 64 bits. K <= 128 with 4
# planes: the largest accumulator is 15 x 4 x 32 = 1920, so 11-bit accumulators.
CONFIG = AcceleratorConfig(
    xnor_array=XNORArrayConfig(rows=2, cols=2, word=32, max_k=128, max_act_bits=4,
                               max_weight_bits=1, pipeline=2),
    max_out_bits=2, in_depth=64, act_depth=64, weight_depth=256, thresh_depth=64,
    score_depth=64)
TECH = E.default_technology()
W = NO_WAIT

# The measured entries, as Horowitz's ISSCC 2014 table gives them (pJ).
DRAM_64 = 1300.0
HOST_BYTE = DRAM_64 / 8
GATE = 0.03 / (8 * 5)                       # int_add_8 over 8 full adders of 5 gates
XNOR_BIT = 6 * GATE                         # an XNOR and one full adder of the tree
ADD_11 = 0.03 + (0.05 - 0.03) * 3 / 8       # 11 bits: between the 8- and 16-bit adds
# Memories of 64-bit words: 64 words are 512 bytes, 256 words 2 KB. Below 8 KB the 8 KB
# read energy (10 pJ) scales with the 8 -> 32 KB slope (10 -> 20 pJ over 4x: size^0.5).
SRAM_64 = 10.0 * (512 / 8192) ** 0.5        # 2.5 pJ
SRAM_256 = 10.0 * (2048 / 8192) ** 0.5      # 5 pJ
INSTR = 12  # bytes of one instruction word of CONFIG: a 4-bit opcode and 63-bit GEMM, to 96
STATUS = 20                                 # kind, code, halt, reserved, index, 3 counters
DATA = 8                                    # a DATA record's header


def load(buffer, count, source="CONST", addr=0):
    return dict(opcode="LOAD", buffer=buffer, source=source, addr=addr, count=count,
                unread=W, unwritten=W)


def gemm(**fields):
    base = dict(opcode="GEMM", a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=1,
                m_tiles=1, n_tiles=1, mode="SCORES", out_bits=1, dst_addr=0, thr_addr=0,
                sync=0, unsent=W)
    return {**base, **fields}


def store(count, addr=0):
    return dict(opcode="STORE", buffer="SCORE", addr=addr, count=count, unwritten=0)


HALT = dict(opcode="HALT", status=0)


def program_of(instrs, metadata=None):
    # Constants: as many words as the CONST loads take (count x 2 lanes), all zero.
    words = sum(2 * i["count"] for i in instrs
                if i["opcode"] == "LOAD" and i["source"] == "CONST")
    return Program(CONFIG, instrs, np.zeros(words, dtype=np.uint64), metadata)


def scores_program(metadata=None):
    # One row tile (2 rows) of 2-plane, 2-word activations against 3 column tiles: 12
    # beats; the scores of 2 rows x 3 tiles (6 words) stored.
    return program_of([
        load("IN", 4, "INPUT"),                 # 1 tile x 2 planes x 2 words
        load("WEIGHT", 6),                      # 3 tiles x 2 words
        gemm(planes=2, words=2, n_tiles=3),
        store(6),
        HALT], metadata)


def two_layer_program(metadata=None):
    # Layer 0: 2 row tiles of 3-plane, 1-word inputs x 2 column tiles, 2-bit outputs (3
    # thresholds per channel); its 4 channels are layer 1's 2-plane inputs of 1 word (4
    # elements). Layer 1: 2 row tiles x 1 column tile, scores.
    return program_of([
        load("IN", 6, "INPUT"),                 # 2 tiles x 3 planes x 1 word
        load("WEIGHT", 2),                      # 2 tiles x 1 word
        load("THRESH", 6),                      # 2 tiles x 3 thresholds
        gemm(planes=3, m_tiles=2, n_tiles=2, mode="THRESHOLD", out_bits=2),
        load("WEIGHT", 1, addr=2),
        gemm(a_buffer="ACT", planes=2, m_tiles=2, b_addr=2, sync=1),
        store(4),                               # 2 tiles x 2 rows x 1 column tile
        HALT], metadata)


# The technology table -------------------------------------------------------------------

def test_default_table_holds_the_reference_entries():
    assert TECH["int_add_8"] == 0.03 and TECH["int_add_32"] == 0.1
    assert TECH["int_mul_8"] == 0.2 and TECH["int_mul_32"] == 3.1
    assert TECH["fp_add_32"] == 0.9 and TECH["fp_mul_32"] == 3.7
    assert TECH["fp_add_16"] == 0.4 and TECH["fp_mul_16"] == 1.1
    assert TECH["sram_read_64b_8kb"] == 10 and TECH["sram_read_64b_1mb"] == 100
    assert "Horowitz" in TECH.source and "ISSCC 2014" in TECH.source
    derived = TECH.derived(CONFIG)
    for name in ("gate", "xnor_popcount_bit", "host_byte", "int_add_11", "sram_in",
                 "sram_weight", "sram_score", "mac_binary", "mac_fp32"):
        pj, how = derived[name]
        assert pj > 0 and how
    assert derived["sram_weight"][0] == pytest.approx(SRAM_256)
    assert "256 x 64 bits = 2 KB" in derived["sram_weight"][1]


def test_derived_entries_by_hand():
    assert TECH.gate == pytest.approx(GATE)
    assert TECH.xnor_popcount_bit == pytest.approx(XNOR_BIT)
    assert TECH.int_add(24) == pytest.approx(0.05 + 0.05 * 8 / 16)
    assert TECH.int_add(11) == pytest.approx(ADD_11)
    assert TECH.int_add(4) == pytest.approx(0.015)
    assert TECH.int_mul(8) == pytest.approx(0.2) and TECH.int_mul(32) == pytest.approx(3.1)
    assert TECH.sram_access(64, 64) == pytest.approx(SRAM_64)
    # 64 KB (16384 x 32 bits): between 32 KB (20 pJ) and 1 MB (100 pJ).
    slope = math.log(5) / math.log(32)
    assert TECH.sram_access(16384, 32) == pytest.approx(20 * 2 ** slope / 2)
    assert TECH.host_byte == pytest.approx(HOST_BYTE)


# Action counts ----------------------------------------------------------------------------

def test_counts_of_a_scores_gemm_by_hand():
    program = scores_program()
    per = E.count_program(program)
    # The GEMM: 3 tiles x 2 planes x 2 words = 12 beats, each an activation word and a
    # weight word; 4 PEs x 32 bits per beat; the 2 x 3 score words written.
    assert dict(per[2]) == {"instructions": 1, "host_bytes_in": INSTR, "array_beats": 12,
                            "tiles": 3, "array_macs": 3 * 4 * 2 * 32,
                            "xnor_bit_ops": 12 * 4 * 32, "acc_adds": 12 * 4,
                            "in_reads": 12, "weight_reads": 12, "score_writes": 6}
    # LOAD: memory words written, 2 lanes of 4 bytes each over the link.
    assert dict(per[0]) == {"instructions": 1, "host_bytes_in": INSTR + 4 * 2 * 4,
                            "in_writes": 4}
    assert dict(per[1]) == {"instructions": 1, "host_bytes_in": INSTR + 6 * 2 * 4,
                            "weight_writes": 6}
    # STORE: 6 score words read, a DATA record of 12 lanes sent.
    assert dict(per[3]) == {"instructions": 1, "host_bytes_in": INSTR, "score_reads": 6,
                            "host_bytes_out": DATA + 6 * 2 * 4}
    assert dict(per[4]) == {"instructions": 1, "host_bytes_in": INSTR,
                            "host_bytes_out": STATUS}


def test_counts_of_a_two_layer_program_by_hand():
    program = two_layer_program()
    total = E.Actions.total(E.count_program(program))
    # Layer 0: 4 tiles x 3 planes = 12 beats; 3 threshold words per tile; 4 x 4 outputs
    # compared 3 times; 2 row tiles x 2 planes x 1 word of activations written.
    # Layer 1: 2 tiles x 2 planes = 4 beats from the act memory; 2 x 2 score words.
    assert total["array_beats"] == 12 + 4
    assert total["in_reads"] == 12 and total["act_reads"] == 4
    assert total["weight_reads"] == 16
    assert total["thresh_reads"] == 12 and total["threshold_compares"] == 48
    assert total["act_writes"] == 4 and total["score_writes"] == 4
    assert total["score_reads"] == 4
    assert (total["in_writes"], total["weight_writes"], total["thresh_writes"]) == (6, 3, 6)
    assert total["xnor_bit_ops"] == 16 * 4 * 32 and total["acc_adds"] == 16 * 4
    assert total["host_bytes_in"] == 8 * INSTR + (6 + 2 + 6 + 1) * 2 * 4
    assert total["host_bytes_out"] == DATA + 4 * 2 * 4 + STATUS
    # The simulator's own counts of the same run agree.
    result = ISS(CONFIG).run(program, np.zeros(12, dtype=np.uint64))
    assert result.counters["array_beats"] == total["array_beats"]
    assert (result.bytes_in, result.bytes_out) == (total["host_bytes_in"],
                                                   total["host_bytes_out"])


def test_total_of_a_scores_gemm_by_hand():
    est = E.estimate(scores_program())
    compute = 1536 * XNOR_BIT + 48 * ADD_11
    memory = (4 + 12) * SRAM_64 + (6 + 12) * SRAM_256 + (6 + 6) * SRAM_64
    host = (5 * INSTR + (4 + 6) * 8 + DATA + 48 + STATUS) * HOST_BYTE
    assert est.batch == 1
    assert est.total_pj == pytest.approx(compute + memory + host)
    comps = est.components()
    assert comps["xnor_array"] == pytest.approx(compute)
    assert comps["in_memory"] == pytest.approx(16 * SRAM_64)
    assert comps["weight_memory"] == pytest.approx(18 * SRAM_256)
    assert comps["host_link"] == pytest.approx(host)
    assert comps["result_stage"] == comps["act_memory"] == comps["thresh_memory"] == 0
    shares = est.shares()
    assert sum(shares.values()) == pytest.approx(1)
    assert shares["host"] == pytest.approx(host / (compute + memory + host))
    assert sum(i["total_pj"] for i in est.per_instruction()) == pytest.approx(est.total_pj)


def test_total_of_thresholds_by_hand():
    est = E.estimate(two_layer_program())
    compute = 16 * 4 * 32 * XNOR_BIT + 16 * 4 * ADD_11 + 48 * ADD_11
    memory = SRAM_64 * (6 + 12 + 4 + 4 + 6 + 12 + 4 + 4) + SRAM_256 * (3 + 16)
    host = (8 * INSTR + 15 * 8 + DATA + 32 + STATUS) * HOST_BYTE
    assert est.total_pj == pytest.approx(compute + memory + host)
    assert est.components()["result_stage"] == pytest.approx(48 * ADD_11)


def test_a_changed_entry_changes_exactly_the_expected_totals():
    program = two_layer_program()
    base = E.estimate(program)
    # Bytes on the host link, by hand (not from the counter under test): 8 instructions,
    # 15 memory words of 8 bytes in; a DATA record of 4 words of 8 bytes and the STATUS
    # record out.
    moved = 8 * INSTR + 15 * 8 + DATA + 4 * 8 + STATUS
    dearer = E.estimate(program, TECH.replace(dram_access_64b=2600.0))
    assert dearer.total_pj == pytest.approx(base.total_pj + moved * 1300 / 8)
    for name, value in dearer.components().items():
        if name != "host_link":
            assert value == pytest.approx(base.components()[name])
    # fp32 multiplies: the accelerator and the other datapaths stay; fp32 pays 1 pJ more
    # per MAC (the array's: 6 tiles x 4 PEs x 32) and per thresholded output (16).
    before, after = E.compare(program), E.compare(program, TECH.replace(fp_mul_32=4.7))
    assert E.estimate(program, TECH.replace(fp_mul_32=4.7)).total_pj == base.total_pj
    assert after["fp32"]["total_pj"] == pytest.approx(before["fp32"]["total_pj"]
                                                      + 6 * 4 * 32 + 16)
    for name in before:
        if name != "fp32":
            assert after[name]["total_pj"] == before[name]["total_pj"]


def test_a_program_without_gemm_and_the_batch():
    program = program_of([load("IN", 2, "INPUT"), HALT], metadata={"batch": 2,
                                                                   "batches": 3})
    est = E.estimate(program)
    assert [(layer["name"], layer["instructions"]) for layer in est.per_layer] == [
        ("program", [0, 1])]
    # Six inferences per run.
    run = 2 * SRAM_64 + (2 * INSTR + 2 * 8 + STATUS) * HOST_BYTE
    assert est.batch == 6
    assert est.total_pj == pytest.approx(run / 6)
    with pytest.raises(ValueError, match="^program metadata batches must be a positive "
                                         "integer, not 0$"):
        E.estimate(program_of([HALT], metadata={"batches": 0}))


# Layers -----------------------------------------------------------------------------------

def test_layers_from_the_dataflow():
    found = E.layers(two_layer_program())
    # The second weight LOAD is read by the second GEMM: it belongs to layer 1.
    assert [layer.instructions for layer in found] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [(layer.act_bits, layer.weight_bits) for layer in found] == [(3, 1), (2, 1)]
    # Two GEMMs of one shape over different rows: one layer.
    program = program_of([load("IN", 2, "INPUT"), load("WEIGHT", 1), gemm(),
                          gemm(a_addr=1, dst_addr=2), store(4), HALT])
    assert [layer.instructions for layer in E.layers(program)] == [[0, 1, 2, 3, 4, 5]]


def test_layers_from_metadata_and_the_resident_preamble():
    tagged = two_layer_program(metadata={"layers": [
        {"name": "hidden", "instructions": [0, 1, 2, 3], "act_bits": 3, "weight_bits": 1},
        {"name": "out", "instructions": [4, 5, 6]}]})
    est = E.estimate(tagged)
    # The HALT, in no layer, makes a last one.
    assert [layer["name"] for layer in est.per_layer] == ["hidden", "out", "other"]
    assert [layer["instructions"] for layer in est.per_layer] == [[0, 1, 2, 3], [4, 5, 6],
                                                                  [7]]
    assert est.total_pj == pytest.approx(E.estimate(two_layer_program()).total_pj)
    # A resident preamble (the first three LOADs) runs once per call: left out.
    resident = two_layer_program(metadata={
        "layers": [{"name": "all", "instructions": list(range(8))}],
        "resident": {"instructions": 3}})
    est = E.estimate(resident)
    assert est.per_layer[0]["instructions"] == [3, 4, 5, 6, 7]
    preamble = (14 * 2 * 4 + 3 * INSTR) * HOST_BYTE + SRAM_64 * 12 + SRAM_256 * 2
    assert est.total_pj == pytest.approx(E.estimate(two_layer_program()).total_pj
                                         - preamble)
    total, fp32 = E.per_inference(resident)
    assert total == pytest.approx(est.total_pj)
    assert fp32 == pytest.approx(E.compare(resident)["fp32"]["total_pj"])
    with pytest.raises(ValueError, match="another accelerator configuration"):
        E.per_inference(resident, AcceleratorConfig())


@pytest.mark.parametrize("layers,message", [
    ([{"name": "a", "instructions": [0, 5]}], r"layer 0 names instruction 5, the program "
                                              r"has 5"),
    ([{"instructions": [0]}, {"instructions": [0, 1]}], "puts instruction 0 in two layers"),
    ([{"name": "a", "instructions": "0-2"}], "layer 0 must be a dict with an 'instructions' "
                                             "list"),
])
def test_bad_metadata_layers(layers, message):
    with pytest.raises(ValueError, match=message):
        E.estimate(scores_program(metadata={"layers": layers}))


# Comparisons ------------------------------------------------------------------------------

def test_compare_by_hand_on_a_scores_gemm():
    # fp32: the array's 768 MACs at fp_mul_32 + fp_add_32; the 2-plane activations' reads
    # and loads 16 times as many words, the binary weights' 32 times; the scores, the
    # instructions and the records as they are.
    fp32 = E.compare(scores_program())["fp32"]
    compute = 768 * (3.7 + 0.9)
    memory = 16 * (12 + 4) * SRAM_64 + 32 * (12 + 6) * SRAM_256 + (6 + 6) * SRAM_64
    host = 5 * INSTR + 16 * 4 * 8 + 32 * 6 * 8 + DATA + 48 + STATUS
    assert fp32["compute_pj"] == pytest.approx(compute)
    assert fp32["memory_pj"] == pytest.approx(memory)
    assert fp32["host_pj"] == pytest.approx(host * HOST_BYTE)
    assert fp32["total_pj"] == pytest.approx(compute + memory + host * HOST_BYTE)
    assert fp32["hypothetical"] and not E.compare(scores_program())["binary"]["hypothetical"]
    # Binary: one pass per MAC, half the activation words.
    binary = E.compare(scores_program())["binary"]
    assert binary["compute_pj"] == pytest.approx(768 * (XNOR_BIT + ADD_11 / 32))
    assert binary["memory_pj"] == pytest.approx(0.5 * 16 * SRAM_64 + 18 * SRAM_256
                                                + 12 * SRAM_64)


def test_compare_costs_thresholded_outputs():
    got = E.compare(two_layer_program())
    # 16 outputs: an fp32 batch norm each, an int8 requantisation (int_mul(16) by the
    # power law through the 8- and 32-bit multiplies, a 32-bit add), 3 compares as built.
    exponent = math.log(3.1 / 0.2) / math.log(4)
    macs = 6 * 4 * 32
    assert got["fp32"]["compute_pj"] == pytest.approx(macs * 4.6 + 16 * 4.6)
    assert got["int8"]["compute_pj"] == pytest.approx(
        macs * 0.3 + 16 * (0.2 * 2 ** exponent + 0.1))
    assert got["binary"]["compute_pj"] == pytest.approx(macs * (XNOR_BIT + ADD_11 / 32)
                                                        + 48 * ADD_11)


def test_seed_claims_orders_of_magnitude():
    # Binary networks: operations "at least two orders of magnitude" cheaper than float.
    # One binary MAC: an XNOR and a popcount full adder (6 gates of int_add_8 / 40) and
    # 1/32 of an 11-bit accumulator add.
    binary = E.mac_energy(TECH, "binary", CONFIG)
    assert binary == pytest.approx(XNOR_BIT + ADD_11 / 32)
    fp32 = E.mac_energy(TECH, "fp32", CONFIG)
    assert fp32 == pytest.approx(3.7 + 0.9)
    assert fp32 / binary > 100
    assert E.mac_energy(TECH, "int8") == pytest.approx(0.2 + 0.1)


# Technology files -------------------------------------------------------------------------

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


# The command line -------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path):
    program = two_layer_program()
    prog_path, config_path = tmp_path / "two.lbp", tmp_path / "config.json"
    program.save(prog_path)
    CONFIG.save(config_path)
    return program, ["energy", str(prog_path), "--config", str(config_path)]


def test_cli_json_and_plot(tmp_path, files, capsys):
    program, base = files
    png, svg = tmp_path / "e.png", tmp_path / "e.svg"
    assert main(base + ["--json", "--compare", "--plot", str(png)]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["total_pj"] == pytest.approx(E.estimate(program).total_pj)
    assert [layer["name"] for layer in rep["per_layer"]] == ["layer 0", "layer 1"]
    assert rep["per_layer"][0]["actions"]["threshold_compares"] == 48
    assert sum(layer["total_pj"] for layer in rep["per_layer"]) == pytest.approx(
        rep["total_pj"])
    assert set(rep["compare"]) == {"binary", "int8", "fp32"}
    assert rep["compare"]["binary"] < rep["compare"]["int8"] < rep["compare"]["fp32"]
    assert [i["opcode"] for i in rep["per_instruction"]] == [
        "LOAD", "LOAD", "LOAD", "GEMM", "LOAD", "GEMM", "STORE", "HALT"]
    assert rep["energy_per_action_pj"]["acc_adds"] == pytest.approx(ADD_11)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(base + ["--compare", "--plot", str(svg)]) == 0
    out = capsys.readouterr().out
    assert "per inference" in out and "layer 1" in out and f"wrote {svg}" in out
    assert "fp32" in out and "(hypothetical)" in out
    assert b"<svg" in svg.read_bytes()[:400]


def test_cli_tech_file_and_errors(tmp_path, files, capsys):
    program, base = files
    dearer = _write(tmp_path, TECH.replace(dram_access_64b=2600.0).to_toml())
    assert main(base + ["--json", "--tech", str(dearer)]) == 0
    assert json.loads(capsys.readouterr().out)["total_pj"] > E.estimate(program).total_pj
    bad = _write(tmp_path, TECH.to_toml().replace("fp_add_16 = 0.4\n", ""))
    cases = [
        (base + ["--tech", str(bad)],
         f"lowbit energy: error: {bad}: missing key(s) energy_pj.fp_add_16"),
        (base + ["--plot", "e.pdf"],
         "lowbit energy: error: --plot needs a .png or .svg file name, not 'e.pdf'"),
        (["energy", str(tmp_path / "none.lbp")],
         f"lowbit energy: error: cannot read {tmp_path / 'none.lbp'}: No such file"),
        # The gateware activity count is gone with the old core.
        (base + ["--rtl"], "unrecognized arguments: --rtl"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_cli_refuses_a_program_for_another_configuration(tmp_path, capsys):
    # The program embeds its configuration: no --config needed; another one is refused.
    from lowbit.config.accelerator import AcceleratorConfig

    path, other = tmp_path / "g.lbp", tmp_path / "default.json"
    scores_program().save(path)
    assert main(["energy", str(path), "--json"]) == 0
    capsys.readouterr()
    AcceleratorConfig().save(other)
    with pytest.raises(SystemExit) as info:
        main(["energy", str(path), "--config", str(other)])
    assert info.value.code == 2
    assert (f"lowbit energy: error: {path} was built for accelerator configuration "
            f"{CONFIG.fingerprint()}, --config {other} gives "
            f"{AcceleratorConfig().fingerprint()}") in capsys.readouterr().err


def test_cli_reports_bad_metadata(tmp_path, capsys):
    path, config = tmp_path / "m.lbp", tmp_path / "c.json"
    scores_program(metadata={"layers": [{"instructions": [9]}]}).save(path)
    CONFIG.save(config)
    with pytest.raises(SystemExit) as info:
        main(["energy", str(path), "--config", str(config)])
    assert info.value.code == 2
    assert (f"lowbit energy: error: {path}: program metadata layer 0 names instruction 9, "
            f"the program has 5") in capsys.readouterr().err
