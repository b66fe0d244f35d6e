"""The board half of the command line: ``lowbit bitstream``, ``lowbit flash`` and the
``board`` backend of ``lowbit run``. :mod:`lowbit.cli` registers these commands."""

import json
import sys
from pathlib import Path

__all__ = ["add_board_commands", "board_transport", "format_bitstream"]


def _fail(command, message, status=1):
    from .errors import UserError  # lowbit.cli.main prints "lowbit COMMAND: error: ..."

    raise UserError(message, status)


def _default_dir(board):
    return Path("build") / "bitstream" / board.name


def format_bitstream(result):
    """A short report of :func:`lowbit.boards.build.build_bitstream` figures."""
    lines = [f"{result['board']} ({result['part']}), accelerator {result['config']}, "
             f"UART {result['baud']} baud ({result['cycles_per_bit']} cycles a bit, "
             f"{result['baud_error']:+.2%}):",
             f"  logic {result['luts']}/{result['luts_available']}  "
             f"BRAM {result['bram']}/{result['bram_available']}  "
             f"SPRAM {result['spram']}  DSP {result['dsp']}"]
    if result.get("fits", True):
        verdict = "meets" if result["meets_timing"] else "MISSES"
        lines.append(f"  Fmax {result['fmax_mhz']} MHz: {verdict} the {result['clock_mhz']:g} "
                     f"MHz PLL clock ({result['osc_mhz']:g} MHz oscillator) with "
                     f"{result['timing_margin']:.0%} margin (slack {result['slack_ns']} ns)")
        lines.append(f"  bitstream {result['bitstream']} ({result['seconds']} s)")
    return "\n".join(lines)


def cmd_bitstream(parser, args):
    """``lowbit bitstream --board NAME [--config FILE] [-o DIR] [--baud N] [--clock-mhz F]
    [--json]``."""
    from .boards.build import BitstreamError, build_bitstream
    from .boards.targets import get_board

    board = get_board(args.board)
    from .cli import configuration
    from .config.accelerator import AcceleratorConfig

    config_path = args.config or board.config_file
    config = configuration(args, AcceleratorConfig, path=board.config_file)
    out_dir = Path(args.output) if args.output else _default_dir(board)
    try:
        result = build_bitstream(board, config, out_dir=out_dir, baud=args.baud,
                                 clock_mhz=args.clock_mhz, config_name=str(config_path))
    except ValueError as error:
        _fail("bitstream", str(error), 2)
    except BitstreamError as error:
        if error.result is not None:
            print(json.dumps(error.result) if args.json else format_bitstream(error.result))
        _fail("bitstream", str(error))
    print(json.dumps(result) if args.json else format_bitstream(result))
    return 0


def cmd_flash(parser, args):
    """``lowbit flash --board NAME [BITSTREAM] [--sram]``."""
    from .boards.flash import FlashError, flash
    from .boards.targets import get_board

    board = get_board(args.board)
    bitstream = Path(args.bitstream) if args.bitstream else \
        _default_dir(board) / board.bitstream
    try:
        output = flash(board, bitstream, sram=args.sram)
    except (FlashError, ValueError) as error:
        _fail("flash", str(error))
    if args.verbose:
        print(output, end="")
    print(f"programmed the {board.title} with {bitstream}")
    return 0


def board_transport(args, config, fail):
    """The transport of ``lowbit run --backend board``: the framed link on ``--port``."""
    from .framing import BoardTransport
    from .runtime import TransportError

    if not args.port:
        fail("--backend board needs --port (the board's serial device, e.g. /dev/ttyUSB1)")
    try:
        return BoardTransport(args.port, args.baud, config=config)
    except (ImportError, TransportError) as error:
        fail(str(error))


def add_board_commands(sub):
    """Register ``bitstream`` and ``flash`` on the CLI's subparsers."""
    from .framing import DEFAULT_BAUD
    from .boards.targets import BOARDS

    boards = sorted(BOARDS)
    p = sub.add_parser("bitstream", help="build a board's bitstream with the YoWASP tools")
    p.add_argument("--board", choices=boards, required=True)
    from .cli import add_config_arguments

    add_config_arguments(p, "the accelerator configuration", "the board's own, "
                         "boards/configs/BOARD.json")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="build folder (default: build/bitstream/BOARD)")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help=f"UART baud rate (default {DEFAULT_BAUD})")
    p.add_argument("--clock-mhz", type=float, metavar="MHZ",
                   help="the PLL's clock (default: the board's, docs/boards.md); the "
                   "build refuses a clock the placed design does not meet with margin")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bitstream)

    p = sub.add_parser("flash", help="program a board with openFPGALoader")
    p.add_argument("--board", choices=boards, required=True)
    p.add_argument("bitstream", nargs="?",
                   help="bitstream file (default: build/bitstream/BOARD/top.bin or top.bit)")
    p.add_argument("--sram", action="store_true",
                   help="load the FPGA only, not its flash (ULX3S)")
    p.add_argument("-v", "--verbose", action="store_true", help="show openFPGALoader's output")
    p.set_defaults(func=cmd_flash)
