"""Design-space exploration on Dask distributed: ``lowbit explore SPACE.toml``.

A *space file* (TOML, ``docs/explore.md``) names a base accelerator configuration, axes
whose every combination is a *point* (plus optional extra points), the network (a training
recipe, or a model file) and the batch. Each point is evaluated on Dask workers by tasks
that points share where they can (one training per recipe, one synthesis per configuration
and target, one ISS run per configuration and network):

1. the configuration is validated (on the client: an invalid one never reaches a worker and
   is recorded with the configuration's own message);
2. the network, trained once per recipe by a shared task (:func:`train_recipe`), is
   compiled for the point's configuration (:func:`lowbit.compiler.compile_model`) and run
   on the instruction-set simulator over the data set's test images
   (:func:`lowbit.compiler.run_model`): cycles per image, the array's utilisation (beats
   per cycle) and accuracy;
3. the energy per image comes from :func:`lowbit.energy.per_inference`;
4. the accelerator is synthesised, placed and routed (:func:`lowbit.synth.synthesize`):
   logic cells, LUT4s, block RAMs, Fmax. A design larger than the device is a result
   (``does-not-fit``, with what it needs), not an error; throughput is Fmax / cycles per
   image.

The client writes each point's record to ``DIR/points/<key>.json`` the moment it arrives, so
a worker (or the client) that dies loses no finished point, and a rerun skips every point
already there. The key is the configuration's fingerprint and a hash of everything else the
record depends on (target, clock, network recipe, batch, images, :data:`CACHE_VERSION`).
Failures that are properties of the point (invalid configuration, does not fit, a model the
configuration cannot run, a tool failure) are recorded; a task that raised (a bug, a worker
killed too often) is recorded too but not cached, so a rerun tries it again.

At the end :func:`explore` writes ``results.csv`` and three Pareto plots (matplotlib, Agg):
throughput vs logic cells, energy per image vs accuracy, Fmax vs MACs per cycle.
"""

import contextlib
import csv
import dataclasses
import hashlib
import itertools
import json
import math
import os
import tempfile
import time
import tomllib
from pathlib import Path

from .progress import bar as progress_bar

__all__ = ["CACHE_VERSION", "COLUMNS", "SpaceError", "Space", "Sweep", "load_space",
           "parse_space", "apply_overrides", "train_recipe", "run_network", "synthesize_config",
           "finish_record", "explore",
           "pareto_front", "write_csv", "table_rows", "format_table", "plot_pareto"]

#: Part of every point's cache key: bump it when a record's meaning changes.
CACHE_VERSION = 2

#: Keys of a ``[model]`` table: the arguments of :func:`lowbit.train.train`, or ``file``.
MODEL_KEYS = {"dataset", "arch", "precision", "hidden", "epochs", "seed", "channels",
              "batch_size", "lr", "file"}
#: Keys of a ``[run]`` table (``target`` and ``batch`` may also stand alone in axes/points).
RUN_KEYS = {"target", "freq_mhz", "batch", "images", "synthesize"}
_RUN_DEFAULTS = {"target": "ice40", "freq_mhz": None, "batch": 16, "images": None,
                 "synthesize": True}
_MODEL_DEFAULTS = {"dataset": "digits", "arch": "mlp", "precision": "w1a1", "hidden": [64],
                   "epochs": 5, "seed": 0}
#: Configuration fields that are unit configurations of their own (dotted keys reach in).
_UNITS = ("xnor_array",)

#: Columns of ``results.csv`` (and of :func:`finish_record`'s records, which also hold
#: ``config``, the whole configuration, and ``overrides``, the point's own settings).
COLUMNS = [
    "index", "key", "status", "stage", "error", "target", "point", "fingerprint",
    "rows", "cols", "array_word", "max_act_bits", "max_weight_bits", "max_out_bits",
    "macs_per_cycle", "model", "batch",
    "lc", "lut4", "ff", "bram", "spram", "dsp", "fmax_mhz", "over",
    "cycles_per_image", "utilisation", "images", "accuracy", "energy_nj", "fp32_energy_nj",
    "images_per_s",
    "train_seconds", "run_seconds", "synth_seconds", "worker", "cached",
]


class SpaceError(ValueError):
    """A space file that cannot describe a sweep (unknown keys, empty axes, bad values of
    the sweep itself); the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class Space:
    """A parsed space file: the points to evaluate.

    Attributes
    ----------
    path : Path or None
        The file it came from.
    base : AcceleratorConfig
        The base configuration (``[base]``).
    points : list of dict
        Per point, the settings on top of the base: dotted configuration keys
        (``"xnor_array.rows"``), ``"model.<key>"`` and run keys (``"target"``, ``"batch"``).
    model : dict
        The ``[model]`` recipe before a point's ``model.*`` settings. A model file is
        ``{"file": path, "sha256": ...}``, its bytes in :attr:`model_bytes`.
    run : dict
        The ``[run]`` settings (target, freq_mhz, batch, images, synthesize).
    model_bytes : bytes or None
        The model file's contents, shipped to the workers (which may not share the disk).
    """

    path: Path | None
    base: object
    points: list
    model: dict
    run: dict
    model_bytes: bytes | None = None


def _flatten(table, prefix=""):
    # TOML `xnor_array.rows = 2` is a nested table; `"xnor_array.rows" = 2` a dotted key:
    # both become "xnor_array.rows".
    out = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _check_key(where, key):
    """Raise :class:`SpaceError` unless ``key`` names a configuration, model or run key."""
    from .config.accelerator import AcceleratorConfig

    fields = {f.name: f for f in dataclasses.fields(AcceleratorConfig)}
    head, dot, rest = key.partition(".")
    if head == "model" and dot:
        if rest not in MODEL_KEYS - {"file"}:
            raise SpaceError(f"{where}: unknown model key {rest!r} (known: "
                             f"{', '.join(sorted(MODEL_KEYS - {'file'}))})")
        return
    if head == "run" and dot:
        head, dot, rest = rest, "", ""
    if not dot and head in RUN_KEYS:
        return
    if head not in fields:
        raise SpaceError(f"{where}: {key!r} is not an AcceleratorConfig parameter, model.* "
                         f"or run key (parameters: {', '.join(sorted(fields))})")
    if dot:
        if head not in _UNITS:
            raise SpaceError(f"{where}: {head!r} is not a unit configuration (units: "
                             f"{', '.join(_UNITS)})")
        unit_fields = {f.name for f in dataclasses.fields(fields[head].default_factory())}
        if rest not in unit_fields:
            raise SpaceError(f"{where}: {type(fields[head].default_factory()).__name__} has "
                             f"no parameter {rest!r} (known: {', '.join(sorted(unit_fields))})")


def apply_overrides(config, overrides):
    """``config`` with ``overrides`` (``{dotted key: value}``) applied and validated:
    :func:`lowbit.config.base.apply_overrides`, the override mechanism of ``--set``."""
    from .config.base import apply_overrides as apply

    return apply(config, overrides)


def load_space(path):
    """Read and check the space file ``path`` (see :func:`parse_space`)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return parse_space(text, path)


def _list_of_points(where, value):
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        raise SpaceError(f"{where}: [[points]] must be tables of settings")
    return value


def parse_space(text, path=None):
    """Parse a space file's TOML ``text`` (``path`` names it in messages and anchors a
    relative ``base.config`` or ``model.file``).

    Tables: ``[base]`` (configuration keys, optionally ``config = "FILE.json"`` to start
    from), ``[axes]`` (key -> list of values; every combination is a point), ``[[points]]``
    (extra points: settings on top of the base), ``[model]`` (a :func:`lowbit.train.train`
    recipe, or ``file``), ``[run]`` (``target``, ``freq_mhz``, ``batch``, ``images``,
    ``synthesize``). With neither axes nor points the base alone is the one point.

    Raises
    ------
    SpaceError
        For TOML errors, unknown tables or keys, empty axes, an unreadable base
        configuration or model file. Bad configuration *values* are not errors here: they
        make invalid points, recorded with the configuration's message.
    """
    from .config.accelerator import AcceleratorConfig

    where = str(path) if path else "<space>"
    root = Path(path).parent if path else Path.cwd()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpaceError(f"{where}: not TOML: {error}") from None
    unknown = sorted(set(data) - {"base", "axes", "points", "model", "run"})
    if unknown:
        raise SpaceError(f"{where}: unknown table(s) {', '.join(map(repr, unknown))} "
                         f"(known: base, axes, points, model, run)")
    base_table = dict(data.get("base", {}))
    base = AcceleratorConfig()
    if "config" in base_table:
        config_path = root / base_table.pop("config")
        try:
            base = AcceleratorConfig.load(config_path)
        except OSError as error:
            raise SpaceError(f"{where}: base.config: cannot read {config_path}: "
                             f"{error.strerror or error}") from None
        except (TypeError, ValueError) as error:
            raise SpaceError(f"{where}: base.config: {error}") from None
    base_overrides = _flatten(base_table)
    for key in base_overrides:
        _check_key(f"{where} [base]", key)
        if key.startswith(("model.", "run.")) or key in RUN_KEYS:
            raise SpaceError(f"{where} [base]: {key!r} belongs in [model] or [run]")
    try:
        base = apply_overrides(base, base_overrides)
    except (TypeError, ValueError) as error:
        raise SpaceError(f"{where} [base]: {error}") from None

    run = dict(_RUN_DEFAULTS)
    for key, value in data.get("run", {}).items():
        if key not in RUN_KEYS:
            raise SpaceError(f"{where} [run]: unknown key {key!r} (known: "
                             f"{', '.join(sorted(RUN_KEYS))})")
        run[key] = value
    model = dict(data.get("model", {}))
    for key in model:
        if key not in MODEL_KEYS:
            raise SpaceError(f"{where} [model]: unknown key {key!r} (known: "
                             f"{', '.join(sorted(MODEL_KEYS))})")
    model_bytes = None
    if "file" in model:
        extra = sorted(set(model) - {"file", "dataset"})
        if extra:
            raise SpaceError(f"{where} [model]: a model file takes only 'dataset' beside "
                             f"'file', not {', '.join(map(repr, extra))}")
        model_path = root / model["file"]
        try:
            model_bytes = model_path.read_bytes()
        except OSError as error:
            raise SpaceError(f"{where} [model]: cannot read {model_path}: "
                             f"{error.strerror or error}") from None
        model = {"dataset": model.get("dataset", "digits"), "file": str(model["file"]),
                 "sha256": hashlib.sha256(model_bytes).hexdigest()}
    else:
        model = {**_MODEL_DEFAULTS, **model}

    axes = _flatten(data.get("axes", {}))
    for key, values in axes.items():
        _check_key(f"{where} [axes]", key)
        if not isinstance(values, list) or not values:
            raise SpaceError(f"{where} [axes]: {key!r} must be a non-empty list of values, "
                             f"not {values!r}")
        if key.startswith("model.") and model_bytes is not None:
            raise SpaceError(f"{where} [axes]: {key!r} cannot vary a model file")
    points = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())] \
        if axes else []
    for i, extra in enumerate(_list_of_points(where, data.get("points", []))):
        extra = _flatten(extra)
        for key in extra:
            _check_key(f"{where} [[points]] #{i + 1}", key)
            if key.startswith("model.") and model_bytes is not None:
                raise SpaceError(f"{where} [[points]] #{i + 1}: {key!r} cannot vary a model "
                                 f"file")
        points.append(extra)
    if not points:
        points = [{}]
    return Space(Path(path) if path else None, base, points, model, run, model_bytes)


def _canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _digest(value, length=16):
    return hashlib.sha256(_canonical(value).encode()).hexdigest()[:length]


@dataclasses.dataclass
class _Point:
    # One point as the client sees it: its settings, its (validated) configuration or the
    # validation message, and the spec a worker gets.
    index: int
    settings: dict
    config: object
    error: str | None
    recipe: dict
    run: dict

    @property
    def recipe_hash(self):
        return _digest(self.recipe, 12)

    @property
    def key(self):
        run = {k: self.run[k] for k in sorted(self.run)}
        if self.config is None:
            fingerprint = "invalid-" + _digest(self.settings, 8)
        else:
            fingerprint = self.config.fingerprint()
        rest = _digest([CACHE_VERSION, run, self.recipe], 12)
        return f"{fingerprint}-{rest}"

    @property
    def synth_key(self):
        # Dask key of the synthesis task: points differing only in the network share it.
        where = _digest([self.run["target"], self.run["freq_mhz"]], 8)
        return f"lowbit-synth-{self.config.fingerprint()}-{where}"

    @property
    def run_key(self):
        # Dask key of the ISS run: points differing only in the target share it.
        what = _digest([self.recipe, self.run["batch"], self.run["images"]], 12)
        return f"lowbit-run-{self.config.fingerprint()}-{what}"


def _model_label(recipe):
    if "file" in recipe:
        return f"{Path(recipe['file']).name} ({recipe['dataset']})"
    hidden = "-".join(str(n) for n in recipe.get("hidden", []))
    arch = recipe.get("arch", "mlp")
    return (f"{recipe['dataset']} {arch} {recipe['precision']} [{hidden}] "
            f"{recipe['epochs']} ep s{recipe['seed']}")


def _points(space):
    """The space's points, validated: configuration errors become ``error`` strings."""
    from .units import get_unit

    unit = get_unit("accelerator")
    out = []
    for index, settings in enumerate(space.points):
        config_settings, recipe, run = {}, dict(space.model), dict(space.run)
        for key, value in settings.items():
            if key.startswith("model."):
                recipe[key[len("model."):]] = value
            elif key.startswith("run."):
                run[key[len("run."):]] = value
            elif key in RUN_KEYS:
                run[key] = value
            else:
                config_settings[key] = value
        config, error = None, None
        try:
            config = apply_overrides(space.base, config_settings)  # checks itself
        except (TypeError, ValueError) as exc:
            config, error = None, str(exc)
        out.append(_Point(index, settings, config, error, recipe, run))
    return out


def _record_base(point):
    """The fields of a record known before any work: what the point is."""
    record = dict.fromkeys(COLUMNS)
    record.update(index=point.index, key=point.key, target=point.run["target"],
                  point=_canonical(point.settings), model=_model_label(point.recipe),
                  batch=point.run["batch"], overrides=point.settings, cached=False)
    config = point.config
    if config is not None:
        array = config.xnor_array
        record.update(fingerprint=config.fingerprint(), config=config.to_dict(),
                      rows=array.rows, cols=array.cols, array_word=array.word,
                      max_act_bits=array.max_act_bits, max_weight_bits=array.max_weight_bits,
                      max_out_bits=config.max_out_bits, macs_per_cycle=config.macs)
    return record


def train_recipe(recipe, model_bytes=None):
    """The network of a point: ``(model, seconds)``. Trains ``recipe`` with
    :func:`lowbit.train.train` (no progress bar, no float twin), or loads ``model_bytes``
    (a :meth:`~lowbit.model.QuantModel.save` file's contents). Runs on a worker, once per
    recipe: the points that share it depend on this one task."""
    from .model import QuantModel
    from .train import train

    start = time.perf_counter()
    if model_bytes is not None:
        with tempfile.TemporaryDirectory(prefix="lowbit-explore-") as folder:
            path = Path(folder) / "model.npz"
            path.write_bytes(model_bytes)
            model = QuantModel.load(path)
    else:
        args = {k: (tuple(v) if isinstance(v, list) else v) for k, v in recipe.items()}
        model, _ = train(progress=False, twin=False, **args)
    return model, time.perf_counter() - start


def _worker_name():
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def run_network(config_dict, run, trained, dataset="digits"):
    """The network half of a point, on a worker: compile ``trained`` (:func:`train_recipe`'s
    ``(model, seconds)``) for the configuration, run ``run["images"]`` test images of
    ``dataset`` (all when ``None``) on the ISS at batch ``run["batch"]``, estimate the
    energy per image. Cycles per image are the run's cycles over its whole batches (the
    last one padded), the resident-weight preamble spread over them; the utilisation is
    the array's beats per cycle. Returns ``{"fields": {...}, "failures": [(stage, message,
    cacheable)]}``; a model the configuration cannot run is a ``compile`` failure."""
    import numpy as np

    from . import datasets
    from .compiler import CompileError, compile_model, run_model
    from .config.accelerator import AcceleratorConfig
    from .energy import per_inference
    from .iss import ISSError
    from .runtime import ISSTransport, Runtime

    start = time.perf_counter()
    model, train_seconds = trained
    config = AcceleratorConfig.from_dict(config_dict)
    fields, failures = {"train_seconds": round(train_seconds, 2)}, []
    try:
        program = compile_model(model, config, batch=run["batch"])
    except (CompileError, ValueError, TypeError) as error:
        failures.append(("compile", _first_line(error), True))
    else:
        data = datasets.load(dataset)
        count = len(data.x_test) if run["images"] is None else min(run["images"],
                                                                  len(data.x_test))
        try:
            with ISSTransport(config) as link:
                scores, stats = run_model(program, Runtime(config, link), data.x_test[:count])
            energy_pj, fp32_pj = per_inference(program, config)
        except (ISSError, ValueError, RuntimeError) as error:
            failures.append(("run", _first_line(error), False))
        else:
            batch = program.metadata["batch"]
            # Whole batches (the last one padded), the weight preamble spread over them:
            # the demo's definition.
            cycles = stats["cycles"] / (stats["runs"] * batch)
            utilisation = stats["array_beats"] / stats["cycles"] if stats["cycles"] else None
            fields.update(
                images=count, cycles_per_image=round(cycles, 1),
                utilisation=None if utilisation is None else round(utilisation, 4),
                accuracy=round(float(np.mean(scores.argmax(1) == data.y_test[:count])), 4),
                energy_nj=round(energy_pj / 1e3, 3), fp32_energy_nj=round(fp32_pj / 1e3, 3))
    fields["run_seconds"] = round(time.perf_counter() - start, 2)
    return {"fields": fields, "failures": failures}


def synthesize_config(config_dict, target, freq_mhz=None):
    """The hardware half of a point, on a worker: :func:`lowbit.synth.synthesize` of the
    accelerator. Returns ``{"fields": {...}, "failures": [...], "fits": bool}``; a design
    larger than the device gives its needs (``over``) and ``fits`` false, not a failure."""
    from .config.accelerator import AcceleratorConfig
    from .synth import DoesNotFit, SynthesisError, synthesize
    from .units import get_unit

    start = time.perf_counter()
    config = AcceleratorConfig.from_dict(config_dict)
    fields, failures, fits, result = {}, [], True, None
    try:
        result = synthesize(get_unit("accelerator"), config, target, freq_mhz=freq_mhz)
    except DoesNotFit as error:
        result, fits = error.result, False
        fields["over"] = ", ".join(f"{name} {need}/{have}" for name, (need, have)
                                   in result.get("over", {}).items())
    except SynthesisError as error:
        # A tool failure happens again on the same design; a timeout might not.
        failures.append(("synthesis", _first_line(error), "did not finish" not in str(error)))
    except Exception as error:  # noqa: BLE001 - a bug, not a property of the point
        failures.append(("synthesis", f"{type(error).__name__}: {_first_line(error)}", False))
    if result is not None:
        fields.update({name: result.get(name) for name in
                       ("lc", "lut4", "ff", "bram", "spram", "dsp", "fmax_mhz")})
    fields["synth_seconds"] = round(time.perf_counter() - start, 1)
    return {"fields": fields, "failures": failures, "fits": fits}


def finish_record(record, network, synthesis=None):
    """``record`` completed with the outcomes of :func:`run_network` and (unless
    synthesis was skipped) :func:`synthesize_config`: throughput (Fmax / cycles per
    image), ``status`` (``ok``, ``does-not-fit`` or ``failed``), ``stage`` and ``error``
    (where and why, every failure), ``cacheable`` (false when a failure may not happen
    again). Every stage that could run did: a configuration that cannot run the model still
    has its synthesis figures, one that does not fit its cycles."""
    record = dict(record, worker=_worker_name(), status="ok")
    failures = list(network["failures"])
    record.update(network["fields"])
    if synthesis is not None:
        record.update(synthesis["fields"])
        failures += synthesis["failures"]
        if not synthesis["fits"]:
            record["status"] = "does-not-fit"
    if record.get("fmax_mhz") and record.get("cycles_per_image"):
        record["images_per_s"] = round(record["fmax_mhz"] * 1e6 / record["cycles_per_image"],
                                       1)
    record["cacheable"] = all(cacheable for _, _, cacheable in failures)
    if failures:
        if record["status"] == "ok":
            record["status"] = "failed"
        record["stage"] = ", ".join(stage for stage, _, _ in failures)
        record["error"] = "; ".join(f"{stage}: {text}" for stage, text, _ in failures)
    return record


@dataclasses.dataclass
class Sweep:
    """What :func:`explore` did: ``results`` (one record per point, in point order),
    ``out_dir``, ``computed`` and ``cached`` (how many points ran now or came from
    ``out_dir/points``), ``seconds`` and the files written (``files``)."""

    results: list
    out_dir: Path
    computed: int
    cached: int
    seconds: float
    files: list

    def summary(self):
        """One line: points by status, computed and cached, wall time, output folder."""
        counts = {}
        for record in self.results:
            counts[record["status"]] = counts.get(record["status"], 0) + 1
        statuses = ", ".join(f"{n} {status}" for status, n in counts.items())
        return (f"{len(self.results)} points ({statuses}); {self.computed} computed, "
                f"{self.cached} from the cache; {self.seconds:.0f} s; results in "
                f"{self.out_dir}/")


def _write_json(path, record):
    # Write then rename: a client killed mid-write leaves no half record behind.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)


def _load_cached(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _client(scheduler, workers):
    """A Dask client: connected to ``scheduler``, or to a new LocalCluster of ``workers``
    single-threaded worker processes (synthesis and the ISS are single-threaded and hold
    the GIL), closed on exit."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as error:
            raise OSError(f"cannot reach the Dask scheduler {scheduler}: {error}") from None
        with client:
            yield client
        return
    # dashboard_address ":0": a free port, never a clash with another sweep's dashboard.
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def _run_points(space, todo, results, failed, point_dir, client, scheduler, workers,
                on_result, bar):
    """Run the points of ``todo`` on Dask, filling ``results``; return the count of points
    not ok."""
    from distributed import as_completed

    if not todo:
        return failed
    context = contextlib.nullcontext(client) if client is not None else \
        _client(scheduler, workers)
    with context as dask:
        # One task per recipe, per synthesis and per network run, shared by the points
        # that need it (Dask runs a key once); synthesis first, the longest tasks.
        tasks, futures, same_key = {}, {}, {}

        def task(key, function, *args):
            if key not in tasks:
                tasks[key] = dask.submit(function, *args, key=key)
            return tasks[key]

        for point, record in todo:
            if point.run["synthesize"]:
                task(point.synth_key, synthesize_config, point.config.to_dict(),
                     point.run["target"], point.run["freq_mhz"])
        for point, record in todo:
            trained = task(f"lowbit-train-{point.recipe_hash}", train_recipe, point.recipe,
                           space.model_bytes)
            dataset = point.recipe.get("dataset", "digits")
            network = task(point.run_key, run_network, point.config.to_dict(), point.run,
                           trained, dataset)
            synthesis = tasks[point.synth_key] if point.run["synthesize"] else None
            # Points with the same key (a value repeated on an axis) share one task.
            key = f"lowbit-point-{point.key}"
            if key not in futures:
                futures[key] = dask.submit(finish_record, record, network, synthesis,
                                           key=key)
            same_key.setdefault(key, []).append((point, record))
        for future in as_completed(list(futures.values())):
            if future.status == "finished":
                outcome = future.result()
                cacheable = outcome.pop("cacheable", True)
            else:
                # The task raised (training failed, a worker died too often): record
                # it, but leave it out of the cache so a rerun tries it again.
                error = future.exception()
                outcome = dict(status="failed", stage="task",
                               error=f"{type(error).__name__}: {_first_line(error)}")
                cacheable = False
            for point, record in same_key[future.key]:
                record = {**record, **outcome, "index": point.index,
                          "point": record["point"]}
                if cacheable:
                    _write_json(point_dir / f"{point.key}.json", record)
                results[point.index] = record
                failed += record["status"] != "ok"
                if on_result is not None:
                    on_result(record)
                bar.update(len(results), f"{failed} not ok")
            future.release()
    return failed


def explore(space, out_dir, *, scheduler=None, workers=2, client=None, progress=True,
            on_result=None, plots=True):
    """Run the sweep ``space`` (a :class:`Space` or a space file path); return a
    :class:`Sweep`.

    Parameters
    ----------
    out_dir : path
        Output folder: ``points/`` (one JSON record per finished point, the cache),
        ``results.csv`` and the plots.
    scheduler : str or None
        Address of a running Dask scheduler (``tcp://host:8786``); ``None`` starts a
        LocalCluster of ``workers`` processes for the sweep. No cluster is started when
        every point is cached or invalid.
    client : distributed.Client or None
        Use this client instead (``scheduler`` and ``workers`` are then ignored).
    progress : bool
        Draw a progress bar on stderr (:mod:`lowbit.progress`).
    on_result : callable or None
        Called with each record on the client as soon as it is written.
    plots : bool
        Write the Pareto plots.
    """
    start = time.perf_counter()
    if not isinstance(space, Space):
        space = load_space(space)
    out_dir = Path(out_dir)
    point_dir = out_dir / "points"
    point_dir.mkdir(parents=True, exist_ok=True)
    points = _points(space)
    results, todo, cached = {}, [], 0
    for point in points:
        record = _record_base(point)
        if point.config is None:
            record.update(status="invalid", stage="config", error=point.error)
            results[point.index] = record
            continue
        stored = _load_cached(point_dir / f"{point.key}.json")
        if stored is not None:
            # The index and the point's own settings may differ from the run that stored it
            # (another space file sharing the folder): this run's numbering.
            stored.update(index=point.index, point=record["point"], cached=True)
            results[point.index] = stored
            cached += 1
            continue
        todo.append((point, record))

    total = len(points)
    failed = sum(r["status"] != "ok" for r in results.values())
    with progress_bar(total, "explore", progress) as bar:
        bar.update(len(results), f"{failed} not ok")
        failed = _run_points(space, todo, results, failed, point_dir, client, scheduler,
                             workers, on_result, bar)
    records = [results[i] for i in range(total)]
    files = [write_csv(records, out_dir / "results.csv")]
    if plots:
        files += plot_pareto(records, out_dir)
    return Sweep(records, out_dir, len(todo), cached, time.perf_counter() - start, files)


def pareto_front(records, x, y, *, max_x=False, max_y=True):
    """The records not dominated in (``x``, ``y``), sorted by ``x``: no other record is at
    least as good in both and better in one. ``max_x``/``max_y`` say which way is better.
    Records missing either value are left out."""
    pts = [r for r in records if r.get(x) is not None and r.get(y) is not None]

    def better_or_equal(a, b, key, maximise):
        return a[key] >= b[key] if maximise else a[key] <= b[key]

    front = []
    for r in pts:
        dominated = any(
            better_or_equal(o, r, x, max_x) and better_or_equal(o, r, y, max_y)
            and (o[x] != r[x] or o[y] != r[y]) for o in pts)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: (r[x], r[y]))


def write_csv(records, path):
    """Write ``records`` to ``path`` as CSV with :data:`COLUMNS`; return the path."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow({k: ("" if record.get(k) is None else record.get(k))
                             for k in COLUMNS})
    return path


def _fmt(value, spec=""):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def table_rows(records):
    """``(headers, rows)`` of the terminal table of ``records``: one row of strings per
    point (``lowbit explore`` draws it with rich)."""
    header = ["#", "status", "target", "array", "model", "LC", "BRAM", "Fmax", "cyc/img",
              "util %", "acc %", "nJ/img", "img/s", "note"]
    rows = []
    for r in records:
        array = "-"
        if r.get("rows") is not None:
            array = (f"{r['rows']}x{r['cols']}x{r['array_word']} "
                     f"a{r['max_act_bits']}o{r['max_out_bits']}")
        note = r.get("over") or r.get("error") or ("cached" if r.get("cached") else "")
        rows.append([str(r["index"]), r["status"], r.get("target") or "-", array,
                     r.get("model") or "-", _fmt(r.get("lc")), _fmt(r.get("bram")),
                     _fmt(r.get("fmax_mhz"), ".1f"), _fmt(r.get("cycles_per_image"), ",.0f"),
                     _fmt(None if r.get("utilisation") is None else 100 * r["utilisation"],
                          ".1f"),
                     _fmt(None if r.get("accuracy") is None else 100 * r["accuracy"], ".1f"),
                     _fmt(r.get("energy_nj"), ".1f"), _fmt(r.get("images_per_s"), ",.0f"),
                     note if len(note) <= 60 else note[:57] + "..."])
    return header, rows


def format_table(records):
    """The table of :func:`table_rows` as plain text, columns padded (for logs and
    files)."""
    header, rows = table_rows(records)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


#: The plots: file name, x, y, axis labels, which way is better on each axis.
PLOTS = [
    ("pareto_throughput_vs_lc.png", "lc", "images_per_s",
     "logic cells (iCE40 LCs / ECP5 LUT4s)", "throughput (images/s at Fmax)", False, True),
    ("pareto_energy_vs_accuracy.png", "accuracy", "energy_nj",
     "accuracy on the ISS (test images)", "energy per image (nJ)", True, False),
    ("pareto_fmax_vs_macs.png", "macs_per_cycle", "fmax_mhz",
     "array size (binary MACs per cycle)", "Fmax (MHz)", True, True),
]


def plot_pareto(records, out_dir):
    """Write the three Pareto plots of :data:`PLOTS` to ``out_dir`` (PNG, matplotlib's Agg
    back end): every point with both values, labelled by its index; the front, over the
    ``ok`` points only (a design that does not fit is no option), circled and joined;
    points that are not ``ok`` as crosses. Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    paths = []
    for name, x, y, xlabel, ylabel, max_x, max_y in PLOTS:
        # A Figure of its own, not pyplot: no global state, nothing left open.
        figure = Figure(figsize=(6, 4.2), layout="constrained")
        ax = figure.add_subplot()
        pts = [r for r in records if r.get(x) is not None and r.get(y) is not None]
        ok = [r for r in pts if r["status"] == "ok"]
        for target in sorted({r["target"] for r in ok}):
            mine = [r for r in ok if r["target"] == target]
            ax.scatter([r[x] for r in mine], [r[y] for r in mine], label=target, zorder=3)
        others = [r for r in pts if r["status"] != "ok"]
        if others:
            ax.scatter([r[x] for r in others], [r[y] for r in others], marker="x",
                       color="tab:red", label="not ok (e.g. does not fit)", zorder=3)
        labels = {}
        for r in pts:  # points at the same place share one label: "#0,1"
            labels.setdefault((r[x], r[y]), []).append(r["index"])
        for (px, py), names in labels.items():
            ax.annotate("#" + ",".join(map(str, sorted(names))), (px, py),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = pareto_front(ok, x, y, max_x=max_x, max_y=max_y)
        if front:
            ax.plot([r[x] for r in front], [r[y] for r in front], color="gray",
                    linestyle="--", marker="o", markersize=12, markerfacecolor="none",
                    label="Pareto front", zorder=2)
        missing = len(records) - len(pts)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        # Plain numbers: close Fmax values would otherwise read as "+1.953e1" offsets.
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.margins(0.12)  # room for the labels of the outermost points
        better = (f"better: {'higher' if max_x else 'lower'} x, "
                  f"{'higher' if max_y else 'lower'} y")
        ax.set_title(f"{ylabel} vs {xlabel.split(' (')[0]}\n({better}; {missing} of "
                     f"{len(records)} points without both values)", fontsize=9)
        if pts:
            ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
        path = Path(out_dir) / name
        figure.savefig(path, dpi=110)
        paths.append(path)
    return paths
