"""Golden model of the LNS-Madam update unit, :class:`lowbit.hw.madam_update.MadamUpdate`:
the beat-level form of :func:`lowbit.golden.training.madam_update`, the rule the training
step applies (so the unit computes exactly the training step's update)."""

import numpy as np

from ..config.madam import MadamUpdateConfig
from .lns import LNSTensor
from .training import madam_update

__all__ = ["MadamUpdate"]


class MadamUpdate:
    """Beat-level golden model of :class:`lowbit.hw.madam_update.MadamUpdate`.

    Parameters
    ----------
    config : MadamUpdateConfig
        The configuration the gateware is built from.
    """

    def __init__(self, config=None):
        config = MadamUpdateConfig() if config is None else config
        if not isinstance(config, MadamUpdateConfig):
            raise TypeError(f"config must be a MadamUpdateConfig, not {config!r}")
        self.config = config

    def step(self, beat):
        """The output beat (``result_layout`` dict) of one input beat (``beat_layout``
        dict)."""
        cfg = self.config
        latent = LNSTensor(sign=np.array([w["sign"] for w in beat["w"]], dtype=np.int64),
                           code=np.array([w["code"] for w in beat["w"]], dtype=np.int64),
                           scale_exp=0, bits=cfg.bits)
        lr = min(int(beat["lr_exponent"]), cfg.max_lr_exponent)
        new = madam_update(latent, np.array(beat["grad"], dtype=np.int64), cfg.grad_bits, lr)
        return {"w": [{"code": int(c), "sign": int(s)} for c, s in zip(new.code, new.sign)]}

    def run(self, beats):
        """The output beats of ``beats``, in order (one each)."""
        return [self.step(beat) for beat in beats]

    def beats(self, latent, grad, lr_exponent):
        """Beats updating every weight of ``latent`` (an :class:`LNSTensor` of this
        configuration's ``bits``) by the mantissas ``grad`` (same shape), in row-major order;
        the last beat's unused lanes carry code 0 and gradient 0. Raises ``ValueError`` for
        operands the unit cannot take."""
        cfg = self.config
        grad = np.asarray(grad, dtype=np.int64)
        if latent.bits != cfg.bits or grad.shape != latent.shape:
            raise ValueError(f"an update needs {cfg.bits}-bit latent weights and gradients "
                             f"of their shape, not {latent.bits}-bit {latent.shape} and "
                             f"{grad.shape}")
        lo, hi = -(1 << (cfg.grad_bits - 1)), (1 << (cfg.grad_bits - 1)) - 1
        if grad.size and (grad.min() < lo or grad.max() > hi):
            raise ValueError(f"gradient mantissas must be {cfg.grad_bits}-bit ({lo}..{hi})")
        if not 0 <= lr_exponent <= cfg.max_lr_exponent:
            raise ValueError(f"lr_exponent must be 0..{cfg.max_lr_exponent}, not "
                             f"{lr_exponent}")
        n, lanes = latent.code.size, cfg.lanes
        pad = -n % lanes
        sign = np.concatenate([latent.sign.ravel(), np.zeros(pad, dtype=np.int64)])
        code = np.concatenate([latent.code.ravel(), np.zeros(pad, dtype=np.int64)])
        g = np.concatenate([grad.ravel(), np.zeros(pad, dtype=np.int64)])
        return [{"w": [{"code": int(c), "sign": int(s)}
                       for c, s in zip(code[i:i + lanes], sign[i:i + lanes])],
                 "grad": [int(v) for v in g[i:i + lanes]], "lr_exponent": int(lr_exponent)}
                for i in range(0, n + pad, lanes)]

    def unpack(self, results, latent):
        """The updated :class:`LNSTensor` from the output beats of :meth:`beats`."""
        words = [w for r in results for w in r["w"]][:latent.code.size]
        shape = latent.shape
        return LNSTensor(sign=np.array([w["sign"] for w in words], dtype=np.int64)
                         .reshape(shape),
                         code=np.array([w["code"] for w in words], dtype=np.int64)
                         .reshape(shape),
                         scale_exp=latent.scale_exp, bits=latent.bits, gamma=latent.gamma)
