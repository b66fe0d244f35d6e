"""PLL settings, computed: the iCE40's SB_PLL40 and the ECP5's EHXPLLL.

:func:`ice40_pll` and :func:`ecp5_pll` search every legal divider setting of the device's
PLL (the ranges of Lattice's iCE40 sysCLOCK and ECP5 sysCLOCK notes, as icepll and ecppll
use them) for the output closest to a wanted frequency, and :class:`PLL` builds the
instance from the chosen :class:`PLLSetting`: no hand-written divider table.
"""

import dataclasses

from amaranth import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

__all__ = ["PLLSetting", "PLLError", "ice40_pll", "ecp5_pll", "pll_setting", "PLL"]

# iCE40 sysCLOCK PLL (SIMPLE feedback): reference and phase-detector range, VCO range.
_ICE40_PFD_MHZ = (10.0, 133.0)
_ICE40_VCO_MHZ = (533.0, 1066.0)
_ICE40_OUT_MHZ = (16.0, 275.0)
# ECP5 EHXPLLL, CLKOP fed back: phase-detector, VCO and output ranges.
_ECP5_PFD_MHZ = (3.125, 400.0)
_ECP5_VCO_MHZ = (400.0, 800.0)
_ECP5_OUT_MHZ = (3.125, 400.0)


class PLLError(ValueError):
    """No legal PLL setting makes the wanted frequency (closely enough)."""


@dataclasses.dataclass(frozen=True)
class PLLSetting:
    """One PLL setting.

    Attributes
    ----------
    family : str
        ``ice40`` or ``ecp5``.
    in_mhz, out_mhz, vco_mhz, pfd_mhz : float
        Reference, output, VCO and phase-detector frequencies.
    dividers : dict
        The instance parameters: ``DIVR``, ``DIVF``, ``DIVQ``, ``FILTER_RANGE`` (iCE40);
        ``CLKI_DIV``, ``CLKFB_DIV``, ``CLKOP_DIV``, ``CLKOP_CPHASE`` (ECP5).
    """

    family: str
    in_mhz: float
    out_mhz: float
    vco_mhz: float
    pfd_mhz: float
    dividers: dict


def _check_mhz(name, value):
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        raise PLLError(f"PLL {name} must be a positive number of MHz, not {value!r}")


def _ice40_filter(pfd_mhz):
    # FILTER_RANGE by phase-detector frequency (the iCE40 PLL's loop filter table).
    for bound, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if pfd_mhz < bound:
            return value
    return 6


def _candidates_ice40(in_mhz):
    for divr in range(16):
        pfd = in_mhz / (divr + 1)
        if not _ICE40_PFD_MHZ[0] <= pfd <= _ICE40_PFD_MHZ[1]:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not _ICE40_VCO_MHZ[0] <= vco <= _ICE40_VCO_MHZ[1]:
                continue
            for divq in range(1, 7):
                out = vco / 2 ** divq
                if _ICE40_OUT_MHZ[0] <= out <= _ICE40_OUT_MHZ[1]:
                    yield PLLSetting("ice40", in_mhz, out, vco, pfd, {
                        "DIVR": divr, "DIVF": divf, "DIVQ": divq,
                        "FILTER_RANGE": _ice40_filter(pfd)})


def _candidates_ecp5(in_mhz):
    for clki in range(1, 129):
        pfd = in_mhz / clki
        if not _ECP5_PFD_MHZ[0] <= pfd <= _ECP5_PFD_MHZ[1]:
            continue
        for clkfb in range(1, 81):
            out = pfd * clkfb
            if not _ECP5_OUT_MHZ[0] <= out <= _ECP5_OUT_MHZ[1]:
                continue
            for clkop in range(128, 0, -1):
                vco = out * clkop
                if _ECP5_VCO_MHZ[0] <= vco <= _ECP5_VCO_MHZ[1]:
                    yield PLLSetting("ecp5", in_mhz, out, vco, pfd, {
                        "CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": clkop,
                        "CLKOP_CPHASE": clkop - 1})
                    break   # the highest legal VCO: the least jitter


def _best(family, candidates, in_mhz, out_mhz, tolerance):
    _check_mhz("input", in_mhz)
    _check_mhz("output", out_mhz)
    best = None
    for setting in candidates(in_mhz):
        # Closest output; among equals, the highest VCO (least jitter), then the highest
        # phase-detector frequency.
        key = (abs(setting.out_mhz - out_mhz), -setting.vco_mhz, -setting.pfd_mhz)
        if best is None or key < best[0]:
            best = (key, setting)
    if best is None:
        raise PLLError(f"the {family} PLL cannot run from a {in_mhz:g} MHz reference")
    setting = best[1]
    if abs(setting.out_mhz - out_mhz) > tolerance * out_mhz:
        raise PLLError(f"the {family} PLL cannot make {out_mhz:g} MHz from {in_mhz:g} MHz "
                       f"(closest: {setting.out_mhz:.4g} MHz, more than {tolerance:.1%} "
                       f"off)")
    return setting


def ice40_pll(in_mhz, out_mhz, *, tolerance=0.01):
    """The SB_PLL40 setting (SIMPLE feedback) whose output is closest to ``out_mhz``.

    ``F_out = F_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)`` with the phase detector at
    10..133 MHz, the VCO at 533..1066 MHz and the output at 16..275 MHz.

    Raises
    ------
    PLLError
        If no setting comes within ``tolerance`` (relative) of ``out_mhz``.
    """
    return _best("iCE40", _candidates_ice40, in_mhz, out_mhz, tolerance)


def ecp5_pll(in_mhz, out_mhz, *, tolerance=0.01):
    """The EHXPLLL setting (CLKOP fed back) whose output is closest to ``out_mhz``.

    ``F_out = F_in * CLKFB_DIV / CLKI_DIV``, VCO ``F_out * CLKOP_DIV`` at 400..800 MHz,
    phase detector 3.125..400 MHz.

    Raises
    ------
    PLLError
        If no setting comes within ``tolerance`` (relative) of ``out_mhz``.
    """
    return _best("ECP5", _candidates_ecp5, in_mhz, out_mhz, tolerance)


def pll_setting(family, in_mhz, out_mhz, **options):
    """:func:`ice40_pll` or :func:`ecp5_pll` by ``family``."""
    if family == "ice40":
        return ice40_pll(in_mhz, out_mhz, **options)
    if family == "ecp5":
        return ecp5_pll(in_mhz, out_mhz, **options)
    raise ValueError(f"no PLL for family {family!r} (ice40 or ecp5)")


class PLL(Elaboratable):
    """The ``sync`` clock domain from a PLL on a board's oscillator.

    The domain is held in reset until the PLL locks and 15 us more (iCE40 block RAM reads
    as zero for about 3 us after configuration). The design's top defines the ``sync``
    domain and a reset-less ``por`` domain (:meth:`domains`); this drives their clocks and
    ``sync``'s reset.

    Parameters
    ----------
    setting : PLLSetting
    clk_resource : str
        The platform's oscillator resource (``clk12``, ``clk25``).

    Attributes
    ----------
    clk : Signal
        The PLL output (the ``sync`` clock), for a clock constraint.
    """

    def __init__(self, setting, clk_resource):
        self.setting = setting
        self.clk_resource = clk_resource
        self.clk = Signal()

    @staticmethod
    def domains():
        """The clock domains the top must define: ``sync`` and ``por`` (the reset
        counter's, reset-less)."""
        return [ClockDomain("sync"), ClockDomain("por", reset_less=True)]

    def elaborate(self, platform):
        m = Module()
        pin = platform.request(self.clk_resource, 0, dir="-")
        reference = Signal()
        lock = Signal()
        d = self.setting.dividers
        if self.setting.family == "ice40":
            # The PAD form: the oscillator's pin (35 on the iCEBreaker) is the PLL's own
            # input, which no input buffer may also use; the PLL passes the reference on.
            m.submodules.pll = Instance(
                "SB_PLL40_PAD", p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
                p_DIVR=d["DIVR"], p_DIVF=d["DIVF"], p_DIVQ=d["DIVQ"],
                p_FILTER_RANGE=d["FILTER_RANGE"],
                io_PACKAGEPIN=pin.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=self.clk, o_LOCK=lock)
            # The reset counter runs on the PLL clock here (the reference is not available
            # to the fabric once the PLL takes its pin).
            reference = self.clk
        else:
            m.submodules.clk_in = clk_in = io.Buffer("i", pin)
            reference = clk_in.i
            m.submodules.pll = Instance(
                "EHXPLLL", a_FREQUENCY_PIN_CLKI=f"{self.setting.in_mhz:g}",
                a_FREQUENCY_PIN_CLKOP=f"{self.setting.out_mhz:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_CLKOP_ENABLE="ENABLED", p_CLKI_DIV=d["CLKI_DIV"],
                p_CLKOP_DIV=d["CLKOP_DIV"], p_CLKOP_CPHASE=d["CLKOP_CPHASE"],
                p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=d["CLKFB_DIV"],
                i_CLKI=reference, i_CLKFB=self.clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0,
                i_PHASESEL1=0, i_PHASEDIR=0, i_PHASESTEP=0, i_PHASELOADREG=0,
                i_PLLWAKESYNC=0, i_ENCLKOP=0, o_CLKOP=self.clk, o_LOCK=lock)
        # Reset until locked and for 15 us more, counted without a reset of its own.
        m.d.comb += ClockSignal("por").eq(reference)
        rate = self.setting.out_mhz if reference is self.clk else self.setting.in_mhz
        delay = max(int(15e-6 * rate * 1e6), 1)
        count = Signal(range(delay + 1))
        ready = Signal()
        with m.If(~lock):
            m.d.por += count.eq(0)
        with m.Elif(count != delay):
            m.d.por += count.eq(count + 1)
        m.d.por += ready.eq(lock & (count == delay))
        m.d.comb += ClockSignal("sync").eq(self.clk)
        m.submodules.reset_sync = ResetSynchronizer(~ready, domain="sync")
        return m
