"""Configuration of the whole programmable accelerator: which units it has, their
configurations, its on-chip buffers and its host link (issue 5).

The instruction set (:mod:`lowbit.isa`), the program format (:mod:`lowbit.program`), the
instruction-set simulator (:mod:`lowbit.iss`) and, later, the gateware controller all read
this one object. Its :meth:`~AcceleratorConfig.fingerprint` stamps every program, so a
program built for one configuration is refused by another.

Buffers hold ``word``-bit words:

* the **activation** buffer holds packed operand rows (``A`` of a GEMM, the outputs of the
  norm unit);
* the **weight** buffer holds packed weight rows (``B`` of a GEMM) and norm-unit
  parameters;
* the **output** buffer holds one signed accumulator value per word (``C`` of a GEMM).

The default buffers fit an iCE40UP5K: the activation and weight buffers take two 16-bit
wide SPRAMs each (16384 words of 32 bits), the output buffer eight 4-kbit EBRs (1024 words
of 32 bits). The units keep their own defaults, except the norm unit, which thresholds to
+-1 (what a binary network needs between layers) for up to 256 channels. The default
accelerator as a whole does not fit an iCE40UP5K's logic; ``configs/up5k.json`` does
(``docs/accelerator_synthesis.md``).
"""

import dataclasses
import json

from .base import ConfigMixin, check_bool, check_int
from .lightnorm import LightNormConfig
from .lns import LNSMacConfig
from .xnor_array import XNORArrayConfig

__all__ = ["AcceleratorConfig"]

#: Largest buffer (words) a configuration may ask for: 2^20 words is far beyond any target
#: lowbit supports and keeps address fields at most 20 bits wide.
MAX_BUFFER_WORDS = 1 << 20


@dataclasses.dataclass(frozen=True)
class AcceleratorConfig(ConfigMixin):
    """Parameters of the accelerator, its instruction set and its simulator.

    Parameters
    ----------
    xnor_array : XNORArrayConfig
        Configuration of the XNOR-popcount array (``GEMM_XNOR``).
    lightnorm : LightNormConfig
        Configuration of the norm unit (``NORM``). The default thresholds to +-1 (``sign``
        output, what a binary network needs between layers) for up to 256 channels.
    lns_mac : LNSMacConfig
        Configuration of the LNS multiply-add unit (``GEMM_LNS``).
    has_xnor_array, has_lightnorm, has_lns_mac : bool
        Whether the unit is built. An absent unit's instructions are illegal, and its
        configuration does not enter the fingerprint (it builds nothing). At least one unit
        must be present.
    has_maxpool : bool
        Whether the ``MAXPOOL`` engine is built (default ``True``). Without it ``MAXPOOL``
        is illegal, as an absent unit's instructions are; an MLP does not need it, and on an
        iCE40UP5K its ~400 logic cells matter (``docs/accelerator_synthesis.md``).
    word : int
        Width in bits of a buffer word: 8, 16, 32 or 64.
    act_words, weight_words, out_words : int
        Sizes of the activation, weight and output buffers in words (1..2^20).
    host_link_bits : int
        Width of the host link's streams in bits: 8 (a UART), 16, 32 or 64, at most
        ``word`` (a data word is whole link beats).
    timeout_cycles : int
        Cycles without host-link input after which an incomplete program is abandoned with
        the ``TRUNCATED`` status (16..2^32-1; see ``docs/host_link.md``).

    Raises
    ------
    TypeError, ValueError
        With an exact message naming the parameter, for any invalid value.
    """

    xnor_array: XNORArrayConfig = dataclasses.field(default_factory=XNORArrayConfig)
    lightnorm: LightNormConfig = dataclasses.field(
        default_factory=lambda: LightNormConfig(channels=256, output="sign"))
    lns_mac: LNSMacConfig = dataclasses.field(default_factory=LNSMacConfig)
    has_xnor_array: bool = True
    has_lightnorm: bool = True
    has_lns_mac: bool = True
    has_maxpool: bool = True
    word: int = 32
    act_words: int = 16384
    weight_words: int = 16384
    out_words: int = 1024
    host_link_bits: int = 8
    timeout_cycles: int = 1 << 20

    def __post_init__(self):
        owner = "AcceleratorConfig"
        for name, cls in (("xnor_array", XNORArrayConfig), ("lightnorm", LightNormConfig),
                          ("lns_mac", LNSMacConfig)):
            value = getattr(self, name)
            if not isinstance(value, cls):
                raise TypeError(f"{owner} {name} must be a {cls.__name__}, not {value!r}")
        for name in ("has_xnor_array", "has_lightnorm", "has_lns_mac", "has_maxpool"):
            check_bool(owner, name, getattr(self, name))
        if not (self.has_xnor_array or self.has_lightnorm or self.has_lns_mac):
            raise ValueError(f"{owner} needs at least one unit: has_xnor_array, has_lightnorm "
                             f"and has_lns_mac are all False")
        check_int(owner, "word", self.word)
        if self.word not in (8, 16, 32, 64):
            raise ValueError(f"{owner} word must be 8, 16, 32 or 64, not {self.word}")
        for name in ("act_words", "weight_words", "out_words"):
            check_int(owner, name, getattr(self, name), minimum=1, maximum=MAX_BUFFER_WORDS)
        check_int(owner, "host_link_bits", self.host_link_bits)
        if self.host_link_bits not in (8, 16, 32, 64):
            raise ValueError(f"{owner} host_link_bits must be 8, 16, 32 or 64, not "
                             f"{self.host_link_bits}")
        if self.host_link_bits > self.word:
            raise ValueError(f"{owner} host_link_bits {self.host_link_bits} must not exceed "
                             f"word {self.word}")
        check_int(owner, "timeout_cycles", self.timeout_cycles, minimum=16,
                  maximum=(1 << 32) - 1)
        # The output buffer keeps one accumulator value per word: a narrower word would
        # silently drop the top bits of a dot product.
        if self.has_xnor_array and self.xnor_array.accumulator_width > self.word:
            raise ValueError(
                f"{owner} word {self.word} cannot hold the XNOR array's "
                f"{self.xnor_array.accumulator_width}-bit accumulators")
        if self.has_lns_mac and self.lns_mac.bits > self.word:
            raise ValueError(f"{owner} word {self.word} cannot hold the LNS MAC's "
                             f"{self.lns_mac.bits}-bit operands")
        if self.has_lns_mac and self.lns_mac.out_width > self.word:
            raise ValueError(
                f"{owner} word {self.word} cannot hold the LNS MAC's "
                f"{self.lns_mac.out_width}-bit dot products")

    @property
    def buffer_words(self):
        """Sizes of the buffers in words, by name (``act``, ``weight``, ``out``)."""
        return {"act": self.act_words, "weight": self.weight_words, "out": self.out_words}

    def to_dict(self):
        """The fields as plain JSON-compatible values, nested configurations as dicts.

        An absent unit's configuration is ``None``: it builds nothing, so two accelerators
        that differ only there are the same accelerator (and share a fingerprint).
        """
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, ConfigMixin):
                present = getattr(self, f"has_{field.name}")
                value = {"type": type(value).__name__, **value.to_dict()} if present else None
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, d):
        """The configuration described by ``d``, the inverse of :meth:`to_dict`.

        Fields left out keep their defaults. A unit configuration is a dict with a ``type``
        key naming its class (``"XNORArrayConfig"``) and that class's fields, or ``None``
        for an absent unit (which then keeps its default configuration: it builds nothing).

        Raises
        ------
        TypeError
            If ``d`` or a unit configuration is not a dict (or ``None``).
        ValueError
            For an unknown key, a unit configuration without ``type`` or of the wrong type,
            a ``None`` unit that the configuration says is present, and any field the
            configurations themselves reject (with their own messages).
        """
        owner = cls.__name__
        if not isinstance(d, dict):
            raise TypeError(f"{owner}.from_dict needs a dict, not {d!r}")
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"{owner} has no parameter(s) {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(sorted(fields))})")
        values = dict(d)
        for name in ("xnor_array", "lightnorm", "lns_mac"):
            if name not in values:
                continue
            value = values[name]
            unit_cls = type(fields[name].default_factory())
            expected = unit_cls.__name__
            if value is None:
                # to_dict writes None for an absent unit; its configuration is unused.
                if values.get(f"has_{name}", fields[f"has_{name}"].default) is not False:
                    raise ValueError(f"{owner} {name} is None but has_{name} is not false")
                del values[name]
                continue
            if not isinstance(value, dict):
                raise TypeError(f"{owner} {name} must be a dict with a 'type' key or None, "
                                f"not {value!r}")
            if "type" not in value:
                raise ValueError(f"{owner} {name} has no 'type' key (expected "
                                 f"{expected!r})")
            kind = value["type"]
            if kind != expected:
                raise ValueError(f"{owner} {name} type must be {expected!r}, not {kind!r}")
            unit_fields = {field.name for field in dataclasses.fields(unit_cls)}
            params = {k: v for k, v in value.items() if k != "type"}
            unknown = sorted(set(params) - unit_fields)
            if unknown:
                raise ValueError(f"{kind} has no parameter(s) "
                                 f"{', '.join(map(repr, unknown))} (known: "
                                 f"{', '.join(sorted(unit_fields))})")
            values[name] = unit_cls(**params)
        return cls(**values)

    @classmethod
    def load(cls, path):
        """Read a configuration from the JSON file ``path`` (as written by :meth:`save`).

        Raises ``ValueError`` (text that is not JSON) and the errors of :meth:`from_dict`,
        their messages prefixed with ``path``; ``OSError`` if the file cannot be read.
        """
        with open(path, encoding="utf-8") as file:
            text = file.read()
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not a JSON accelerator configuration: {error}") \
                from None
        except (TypeError, ValueError) as error:
            raise type(error)(f"{path}: {error}") from None

    def save(self, path):
        """Write the configuration to ``path`` as JSON (:meth:`to_dict`), for :meth:`load`
        and ``lowbit run --config``."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.to_dict(), file, indent=2)
            file.write("\n")
