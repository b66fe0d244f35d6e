"""Validation helpers and the mixin shared by every lowbit configuration object.

Configurations are frozen dataclasses. Their ``__post_init__`` checks every field with exact
messages (``TypeError`` for a wrong type, ``ValueError`` for a wrong value) so the hardware,
the golden model, the compiler and the energy model can trust them.
"""

import dataclasses
import enum
import hashlib
import json

__all__ = ["ConfigMixin", "check_int", "check_bool", "check_enum", "parse_overrides",
           "apply_overrides", "load_config"]


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
    def from_dict(cls, d):
        """The configuration described by the JSON object ``d`` (the inverse of
        :meth:`to_dict`): fields left out keep their defaults, an optional ``"type"`` must
        name this class, and a field that is itself a configuration is a dict of its own
        (with an optional ``"type"``).

        Raises ``TypeError`` for a ``d`` that is not a dict, ``ValueError`` for an unknown
        key or a wrong ``type``, and the configuration's own errors for bad values.
        """
        return _from_dict(cls, d, cls())

    @classmethod
    def from_overrides(cls, overrides=(), base=None):
        """Build a configuration from ``key=value`` strings (the CLI's ``--set``, see
        :func:`parse_overrides`), dotted keys reaching into unit configurations."""
        base = cls() if base is None else base
        return apply_overrides(base, parse_overrides(overrides))


def _config_fields(config):
    return {f.name: f for f in dataclasses.fields(config) if f.init}


def _from_dict(cls, d, base):
    owner = cls.__name__
    if not isinstance(d, dict):
        raise TypeError(f"{owner} must be given as a JSON object of its parameters, not "
                        f"{type(d).__name__}")
    values = dict(d)
    kind = values.pop("type", owner)
    if kind != owner:
        raise ValueError(f"type must be {owner!r}, not {kind!r}")
    names = _config_fields(base)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{owner} has no parameter(s) {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(sorted(names))})")
    for name, value in values.items():
        inner = getattr(base, name)
        if isinstance(inner, ConfigMixin):
            values[name] = _from_dict(type(inner), value, inner)
    return dataclasses.replace(base, **values)


def parse_overrides(items):
    """``{key: value}`` from ``key=value`` strings (the CLI's ``--set``), in order.

    Values are JSON where they parse (``4``, ``true``, ``[1, 2]``) and strings otherwise
    (``weight-stationary``); ``True``/``False`` are booleans too. ``-`` in a key is ``_``.
    Raises ``ValueError`` for an item without ``=``.
    """
    changes = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, not {item!r}")
        key = key.strip().replace("-", "_")
        text = text.strip()
        if text in ("True", "False"):
            text = text.lower()
        try:
            changes[key] = json.loads(text)
        except json.JSONDecodeError:
            changes[key] = text
    return changes


def apply_overrides(config, changes):
    """``config`` with ``changes`` (``{key: value}``) applied and validated once.

    A dotted key (``xnor_array.rows``) reaches into a field that is itself a configuration;
    plain keys are the configuration's own fields. This is the one override mechanism of
    lowbit: the CLI's ``--set``, the exploration's space files and the tests all use it.

    Raises
    ------
    ValueError
        For an unknown key (naming the known ones) or a key that reaches into a field that
        is not a configuration; the configuration's own ``TypeError`` / ``ValueError``
        for a bad value.
    """
    owner = type(config).__name__
    names = _config_fields(config)
    flat, nested = {}, {}
    for key, value in changes.items():
        head, dot, rest = key.partition(".")
        if dot:
            inner = getattr(config, head, None) if head in names else None
            if not isinstance(inner, ConfigMixin):
                raise ValueError(f"{owner} has no unit configuration {head!r} (in {key})")
            nested.setdefault(head, {})[rest] = value
        elif key not in names:
            raise ValueError(f"{owner} has no parameter {key!r} (known: "
                             f"{', '.join(sorted(names))})")
        else:
            flat[key] = value
    for head, inner_changes in nested.items():
        base = flat.pop(head, getattr(config, head))
        flat[head] = apply_overrides(base, inner_changes)
    return dataclasses.replace(config, **flat) if flat else config


def _noun(cls):
    # "AcceleratorConfig" -> "accelerator configuration", "XNORArrayConfig" -> "XNORArray
    # configuration": how messages name a configuration file's kind.
    stem = cls.__name__.removesuffix("Config")
    return f"{stem.lower() if stem.istitle() else stem} configuration"


def load_config(path, cls):
    """Read a configuration of class ``cls`` from the JSON file ``path`` (as
    :meth:`ConfigMixin.to_dict` or ``save`` writes it); the one configuration loader.

    Raises
    ------
    OSError
        If the file cannot be read.
    TypeError, ValueError
        Text that is not JSON, and the errors of ``cls.from_dict``, each message prefixed
        with ``path``.
    """
    with open(path, encoding="utf-8") as file:
        text = file.read()
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON {_noun(cls)}: {error}") from None
    try:
        return cls.from_dict(values)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{path}: {error}") from None
