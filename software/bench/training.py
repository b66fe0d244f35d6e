"""Training the digits BNN with its products and its LNS-Madam update on the accelerator (the
ISS, the default configuration with a latent memory), beside the same integer step on the
host: accuracy, time, training images/s, cycles and energy a step
(``python -m lowbit.bench.training [--epochs N]``)."""

import argparse
import json
import sys

__all__ = ["run", "main"]

#: The defaults of ``lowbit train --backend`` (its shuffling seed is 0).
EPOCHS = 15
LR_EXPONENT = 4
SEED = 0


def run(epochs=EPOCHS):
    """Both runs' figures, as a dict."""
    from .. import datasets
    from ..config.accelerator import AcceleratorConfig
    from ..device_training import memory_per_sample, train_on_device
    from ..device_update import training_accelerator
    from ..golden.training import TrainingConfig
    from ..runtime import ISSTransport, Runtime

    data = datasets.load("digits")
    config = TrainingConfig(lr_exponent=LR_EXPONENT)
    accelerator = training_accelerator(AcceleratorConfig(), config)
    out = {"network": "-".join(map(str, config.sizes)), "batch": config.batch,
           "epochs": epochs, "grad_bits": list(config.grad_bits),
           "lns": f"{config.weight_bits}-bit gamma {config.weight_gamma}"}
    trained = {}
    for name in ("host", "iss"):
        if name == "iss":
            with ISSTransport(accelerator) as link:
                step, report = train_on_device(data, config,
                                               runtime=Runtime(accelerator, link),
                                               epochs=epochs, seed=SEED, backend="iss")
        else:
            step, report = train_on_device(data, config, epochs=epochs, seed=SEED,
                                           backend="host")
        trained[name] = step
        # Training images/s count the steps' time alone (each epoch's evaluation aside).
        row = {"accuracy": round(report.accuracy, 4), "seconds": round(report.seconds, 1),
               "train_images_per_s": round(report.images_per_second, 1)}
        if report.device:
            d = report.device
            row.update(cycles_per_step=round(d["cycles"] / report.steps),
                       gemms_per_step=round(d["gemms"] / report.steps, 1),
                       update_cycles_per_step=round(d.get("update_cycles", 0)
                                                    / report.steps),
                       update=report.update,
                       statistics_layers=d.get("statistics_layers", []),
                       update_uj_per_step=round(d.get("update_pj_per_step", 0) / 1e6, 2),
                       utilisation=round(d["array_beats"] / d["cycles"], 4),
                       energy_uj_per_step=round(d["energy_pj_per_step"] / 1e6, 2),
                       fp32_mac_uj_per_step=round(d["fp32_mac_pj_per_step"] / 1e6, 2),
                       rest_of_step_uj=round(d["host_pj_per_step"] / 1e6, 4),
                       fp32_step_uj=round(d["fp32_step_pj"] / 1e6, 2))
        out[name] = row
    ours, full = memory_per_sample(config)
    out["backward_bytes_per_sample"] = {"ours": ours, "float32": full}
    # The ISS's step is the host's bit for bit: the same latent weights after every epoch.
    out["same_weights"] = all(
        (a.code == b.code).all() and (a.sign == b.sign).all()
        for a, b in zip(trained["host"].weights, trained["iss"].weights))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args(argv)
    result = run(args.epochs)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
