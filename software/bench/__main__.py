"""``make bench``: every unit's benchmark in turn (``python -m lowbit.bench``)."""

import importlib
import sys

BENCHMARKS = ["xnor_array", "lightnorm", "lns_mac", "accelerator", "boards", "training"]


def main():
    status = 0
    for name in BENCHMARKS:
        try:
            module = importlib.import_module(f"lowbit.bench.{name}")
        except ModuleNotFoundError:
            print(f"(no benchmark lowbit.bench.{name} yet)")
            continue
        print(f"==> python -m lowbit.bench.{name}", flush=True)
        status |= module.main([]) or 0
    return status


if __name__ == "__main__":
    sys.exit(main())
