"""Energy of the per-element part of a training step (everything but its products): the
LightNorm statistics and affine, the norm's backward product, the softmax gradient, the
gradient requantisation and the LNS-Madam update, from operation counts and the energy
model's 45 nm table, beside the same step in fp32 arithmetic.

Arithmetic only (no memory traffic), per step of ``config.batch`` samples. Each operation
is charged the table's entry of its width: an ``int_add`` of its register width, an 8-bit
multiply for a BFP mantissa product. The fp32 step is charged conservatively in fp32's
favour: the exponential as one multiply-add, plain SGD (one multiply-add a weight) where
Adam needs several, batch norm as five multiply-adds a value. The products of both are
:func:`lowbit.device_training.training_macs`' MACs.
"""

import collections

__all__ = ["host_operations", "fp32_operations", "operations_energy"]


def _layers(config):
    return list(zip(config.sizes[:-1], config.sizes[1:]))


def host_operations(config, update=True, stats_on_chip=()):
    """``{(part, operation): count}`` of one step's per-element work in lowbit's formats;
    ``operation`` is ``("int_add", bits)`` or ``("int_mul", 8 | 32)``. ``update=False``
    leaves the LNS-Madam update out (a training configuration runs it on the accelerator,
    where the energy model counts it), ``stats_on_chip`` (layer indices) those layers'
    batch statistics (the accelerator's statistics unit computed them)."""
    n = config.batch
    ops = collections.Counter()
    for layer, (fan_in, width) in enumerate(_layers(config)):
        norm = config.norm_config(layer)
        values, weights = n * width, fan_in * width
        # Statistics: the sum, and the chunk max and min (compares are subtractions).
        if layer not in stats_on_chip:
            ops["statistics", ("int_add", norm.sum_bits)] += values
            ops["statistics", ("int_add", norm.input_width)] += 2 * values
        # y = scale * x + offset: an 8-bit mantissa product and the accumulator's add.
        ops["norm affine", ("int_mul", 8)] += values
        ops["norm affine", ("int_add", norm.acc_width)] += values
        # dZ = scale * dY, aligned (a rounding add) and requantised (another).
        ops["norm backward", ("int_mul", 8)] += values
        ops["norm backward", ("int_add", 32)] += values
        ops["requantisation", ("int_add", 16)] += values + weights
        if layer > 0:
            ops["requantisation", ("int_add", 16)] += n * fan_in   # dX
        # LNS-Madam: the step's rounding add, the code add, the saturation compare.
        if update:
            ops["update", ("int_add", config.weight_bits)] += 3 * weights
    classes = config.sizes[-1]
    # Softmax: the exponent's product with log2(e), the sum, the division (a 32-bit
    # multiply's worth), per logit.
    ops["softmax", ("int_mul", 8)] += n * classes
    ops["softmax", ("int_add", 32)] += n * classes
    ops["softmax", ("int_mul", 32)] += n * classes
    return ops


def fp32_operations(config):
    """The same step in fp32 arithmetic, ``{(part, operation): count}`` with operations
    ``("fp_add", 32)`` and ``("fp_mul", 32)``: products, batch norm (statistics, apply,
    backward through the statistics), softmax, SGD."""
    from .device_training import training_macs

    n = config.batch
    ops = collections.Counter()
    macs = training_macs(config) * n
    ops["products", ("fp_mul", 32)] += macs
    ops["products", ("fp_add", 32)] += macs
    for fan_in, width in _layers(config):
        values = n * width
        ops["batch norm", ("fp_mul", 32)] += 5 * values
        ops["batch norm", ("fp_add", 32)] += 5 * values
        ops["update", ("fp_mul", 32)] += fan_in * width
        ops["update", ("fp_add", 32)] += fan_in * width
    classes = config.sizes[-1]
    ops["softmax", ("fp_mul", 32)] += 2 * n * classes
    ops["softmax", ("fp_add", 32)] += 2 * n * classes
    return ops


def _energy(tech, operation):
    kind, bits = operation
    if kind == "int_add":
        return tech.int_add(bits)
    if kind == "int_mul":
        return tech[f"int_mul_{8 if bits <= 8 else 32}"]
    return tech[f"{kind}_{bits}"]


def operations_energy(ops, tech=None):
    """pJ per part of ``ops`` (:func:`host_operations` or :func:`fp32_operations`)."""
    from . import energy

    tech = energy.default_technology() if tech is None else tech
    out = collections.defaultdict(float)
    for (part, operation), count in ops.items():
        out[part] += count * _energy(tech, operation)
    return dict(out)
