"""The ISS's cycle model (lowbit.timing) against the gateware's own cycle counter: within 5%
on every test program, the busy counters exactly."""

import numpy as np
import pytest

from lowbit.config.lightnorm import LightNormConfig
from lowbit.runtime import ISSTransport, Runtime
from lowbit.sim import accelerator_programs as P
from lowbit.sim.amaranth_transport import AmaranthTransport

CONFIG = P.small_config(has_lns_mac=True)
BFP = CONFIG.replace(lightnorm=LightNormConfig(channels=16, block=4, output="bfp"))
MULTI = CONFIG.replace(lightnorm=LightNormConfig(channels=16, block=4,
                                                 output="multithreshold", act_bits=2))


def _programs():
    rng = np.random.default_rng(0)
    yield "load/store", CONFIG, P.load_store(CONFIG, rng)
    for shape in [(3, 3, 40, 1, 0, 1, 0), (3, 5, 70, 2, 0, 1, 0), (2, 3, 33, 1, 0, 3, 1),
                  (5, 2, 64, 4, 1, 2, 0), (1, 1, 9, 8, 1, 8, 1), (4, 4, 256, 1, 0, 1, 0),
                  (8, 6, 200, 1, 0, 1, 0)]:
        yield f"gemm {shape}", CONFIG, P.gemm(CONFIG, rng, *shape)[:2]
    yield "norm threshold", CONFIG, P.norm_threshold(CONFIG, rng, 3, 16)
    yield "norm partial group", CONFIG, P.norm_threshold(CONFIG, rng, 2, 5)
    yield "norm requantise", MULTI, P.norm_threshold(MULTI, rng, 2, 13)
    yield "norm statistics", CONFIG, P.norm_statistics(CONFIG, rng, 12, 5)
    yield "norm normalise", BFP, P.norm_normalise(BFP, rng, 3, 7)
    yield "maxpool", CONFIG, P.maxpool(CONFIG, rng, 2, 2, 3)
    yield "gemm lns", CONFIG, P.gemm_lns(CONFIG, rng, 3, 2, 64)
    yield "mlp", CONFIG, P.binary_mlp(CONFIG, rng, 3, [64, 16, 16, 10])
    for seed in range(4):
        yield f"random {seed}", CONFIG, P.random_program(CONFIG, np.random.default_rng(seed),
                                                         blocks=4)


PROGRAMS = list(_programs())


@pytest.mark.parametrize("name,config,job", PROGRAMS, ids=[p[0] for p in PROGRAMS])
def test_iss_cycles_within_5_percent_of_the_rtl(name, config, job):
    program, inputs = job
    with ISSTransport(config) as iss, AmaranthTransport(config) as rtl:
        model = Runtime(config, iss).run(program, inputs).stats
        measured = Runtime(config, rtl).run(program, inputs).stats
    assert abs(model["cycles"] - measured["cycles"]) <= 0.05 * measured["cycles"], \
        (model["cycles"], measured["cycles"])
    for counter in ("xnor_busy", "norm_busy", "lns_busy"):
        assert model[counter] == measured[counter], counter
