"""Validation helpers and the mixin shared by every lowbit configuration object.

Configurations are frozen dataclasses. Their ``__post_init__`` checks every field with exact
messages (``TypeError`` for a wrong type, ``ValueError`` for a wrong value) so the hardware,
the golden model, the compiler and the energy model can trust them.
"""

import dataclasses
import enum
import hashlib
import json

__all__ = ["ConfigMixin", "check_int", "check_bool", "check_enum"]


def check_int(owner, name, value, *, minimum=None, maximum=None):
    """Check that ``value`` is an ``int`` (not a ``bool``) within ``[minimum, maximum]``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{owner} {name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{owner} {name} must be at least {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{owner} {name} must be at most {maximum}, not {value}")
    return value


def check_bool(owner, name, value):
    """Check that ``value`` is a ``bool``."""
    if not isinstance(value, bool):
        raise TypeError(f"{owner} {name} must be a bool, not {value!r}")
    return value


def check_enum(owner, name, value, enum_type):
    """Return ``value`` as a member of ``enum_type``; accepts the member or its value."""
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in enum_type)
        raise ValueError(f"{owner} {name} must be one of {choices}, not {value!r}") from None


class ConfigMixin:
    """Common behaviour of lowbit's frozen configuration dataclasses."""

    def replace(self, **changes):
        """Return a copy with ``changes`` applied (and validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """The fields as plain JSON-compatible values."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = value.value if isinstance(value, enum.Enum) else value
        return out

    def fingerprint(self):
        """A short stable hash of the configuration (names caches, stamps programs)."""
        text = json.dumps({"type": type(self).__name__, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_overrides(cls, overrides=(), base=None):
        """Build a configuration from ``key=value`` strings (the CLI's ``--set``).

        Values are parsed as JSON where they can be (``4``, ``true``) and kept as strings
        otherwise (``weight-stationary``). Unknown keys raise ``ValueError``.
        """
        base = cls() if base is None else base
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        changes = {}
        for item in overrides:
            key, sep, text = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep:
                raise ValueError(f"expected key=value, not {item!r}")
            if key not in names:
                known = ", ".join(sorted(names))
                raise ValueError(f"{cls.__name__} has no parameter {key!r} (known: {known})")
            try:
                changes[key] = json.loads(text)
            except json.JSONDecodeError:
                changes[key] = text
        return dataclasses.replace(base, **changes)
