"""``lowbit explore``: space files, the Dask sweep on a LocalCluster (ISS-only points in
seconds; real synthesis under the ``synth`` mark), the per-point cache, recorded failures,
and a worker killed mid-sweep."""

import json
import os
import signal
import textwrap

import numpy as np
import pytest

from lowbit import datasets
from lowbit.cli import main
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.explore import (COLUMNS, SpaceError, apply_overrides, explore, parse_space,
                            pareto_front)
from lowbit.train import train

# An accelerator that runs a one-layer binary-weight classifier of digits (64 uint5 inputs
# -> 10 scores, no hidden layer): a 1x1 array with 5-bit activations and small memories.
BASE = """
[base]
max_out_bits = 1
in_depth = 512
act_depth = 64
weight_depth = 1024
thresh_depth = 64
score_depth = 512
[base.xnor_array]
rows = 1
cols = 1
max_k = 256
max_act_bits = 5
max_weight_bits = 1
"""
MODEL = """
[model]
hidden = []
epochs = 3
seed = 1
"""
#: Nothing listens here: a sweep that needs no worker must not try to connect.
DEAD_SCHEDULER = "tcp://127.0.0.1:9"


def space_text(*parts):
    return textwrap.dedent("\n".join([BASE, MODEL, *parts]))


def write_space(tmp_path, *parts, name="space.toml"):
    path = tmp_path / name
    path.write_text(space_text(*parts))
    return path


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of two single-threaded worker processes, closed after the module."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as dask_client:
        yield dask_client


@pytest.fixture(scope="module")
def reference_accuracy():
    """The accuracy of the MODEL recipe on the first 120 test images by the numpy integer
    model (the ISS must give the same predictions: it is bit-exact)."""
    model, _ = train("digits", precision="w1a1", hidden=(), epochs=3, seed=1, progress=False,
                     twin=False)
    data = datasets.load("digits")
    return float(np.mean(model.predict(data.x_test[:120]) == data.y_test[:120]))


# Space files ------------------------------------------------------------------------------

def test_axes_make_a_grid_and_points_add_to_it():
    space = parse_space(space_text("""
        [axes]
        "xnor_array.rows" = [1, 2]
        model.precision = ["w1a1", "w1a2"]
        [[points]]
        score_depth = 1024
        target = "ecp5"
    """))
    assert space.points == [
        {"xnor_array.rows": 1, "model.precision": "w1a1"},
        {"xnor_array.rows": 1, "model.precision": "w1a2"},
        {"xnor_array.rows": 2, "model.precision": "w1a1"},
        {"xnor_array.rows": 2, "model.precision": "w1a2"},
        {"score_depth": 1024, "target": "ecp5"},
    ]
    assert space.base.xnor_array.max_act_bits == 5 and space.base.in_depth == 512
    assert space.model["hidden"] == [] and space.model["dataset"] == "digits"
    assert space.run["target"] == "ice40" and space.run["batch"] == 16


def test_no_axes_is_one_point():
    assert parse_space(space_text()).points == [{}]


@pytest.mark.parametrize("extra, message", [
    ("[sweep]\nx = 1", "<space>: unknown table(s) 'sweep' (known: base, axes, points, model, "
                       "run)"),
    ('[axes]\n"xnor_array.rows" = []',
     "<space> [axes]: 'xnor_array.rows' must be a non-empty list of values, not []"),
    ("[axes]\ncolour = [1]", "<space> [axes]: 'colour' is not an AcceleratorConfig parameter"),
    ('[axes]\n"xnor_array.colour" = [1]',
     "<space> [axes]: XNORArrayConfig has no parameter 'colour'"),
    ('[axes]\n"in_depth.size" = [1]', "<space> [axes]: 'in_depth' is not a unit "
                                       "configuration (units: xnor_array)"),
    ('[axes]\n"lightnorm.channels" = [1]',
     "<space> [axes]: 'lightnorm.channels' is not an AcceleratorConfig parameter"),
    ("[axes]\nact_words = [1]", "<space> [axes]: 'act_words' is not an AcceleratorConfig "
                                "parameter"),
    ('[axes]\n"model.depth" = [1]', "<space> [axes]: unknown model key 'depth'"),
    ("[run]\nboard = 'icebreaker'", "<space> [run]: unknown key 'board'"),
    ("[[points]]\nspeed = 3", "<space> [[points]] #1: 'speed' is not an AcceleratorConfig"),
    ("[axes\n", "<space>: not TOML"),
])
def test_bad_space_files_are_refused_with_the_key(extra, message):
    with pytest.raises(SpaceError) as error:
        parse_space(space_text(extra))
    assert str(error.value).startswith(message)


def test_a_bad_base_value_is_refused_with_the_configurations_message():
    with pytest.raises(SpaceError, match=r"^<space> \[base\]: XNORArrayConfig rows must be "
                                         r"at least 1, not 0$"):
        parse_space("[base.xnor_array]\nrows = 0\n")


def test_base_config_and_model_file_are_read_relative_to_the_space_file(tmp_path):
    (tmp_path / "sub").mkdir()
    AcceleratorConfig().replace(max_out_bits=1).save(tmp_path / "sub" / "acc.json")
    (tmp_path / "sub" / "m.npz").write_bytes(b"model bytes")
    path = tmp_path / "sub" / "space.toml"
    path.write_text('[base]\nconfig = "acc.json"\n[model]\nfile = "m.npz"\n')
    space = parse_space(path.read_text(), path)
    assert space.base.max_out_bits == 1
    assert space.model_bytes == b"model bytes"
    assert space.model["file"] == "m.npz"
    path.write_text('[model]\nfile = "m.npz"\n[[points]]\nmodel.epochs = 3\n')
    with pytest.raises(SpaceError, match=r"\[\[points\]\] #1: 'model.epochs' cannot vary a "
                                         r"model file$"):
        parse_space(path.read_text(), path)
    path.write_text('[model]\nfile = "missing.npz"\n')
    with pytest.raises(SpaceError, match="cannot read .*missing.npz"):
        parse_space(path.read_text(), path)


def test_overrides_reach_into_the_array():
    base = AcceleratorConfig()
    config = apply_overrides(base, {"xnor_array.rows": 2, "in_depth": 1024,
                                    "weight_single_port": True})
    assert config.xnor_array.rows == 2 and config.xnor_array.cols == base.xnor_array.cols
    assert config.in_depth == 1024 and config.weight_single_port
    with pytest.raises(ValueError, match="^AcceleratorConfig in_depth must be a power of "
                                         "two, not 3$"):
        apply_overrides(base, {"in_depth": 3})
    with pytest.raises(ValueError, match="^AcceleratorConfig has no unit configuration "
                                         "'lightnorm' \\(in lightnorm.channels\\)$"):
        apply_overrides(base, {"lightnorm.channels": 32})


def test_pareto_front_keeps_the_points_nothing_beats():
    points = [{"c": 100, "t": 10}, {"c": 200, "t": 30}, {"c": 150, "t": 5},
              {"c": 300, "t": 30}, {"c": 400, "t": 50}, {"c": 50, "t": None}]
    front = pareto_front(points, "c", "t", max_x=False, max_y=True)
    assert front == [{"c": 100, "t": 10}, {"c": 200, "t": 30}, {"c": 400, "t": 50}]
    # Lower energy and higher accuracy are better.
    points = [{"a": 0.9, "e": 5}, {"a": 0.95, "e": 6}, {"a": 0.9, "e": 7}, {"a": 0.8, "e": 4}]
    assert pareto_front(points, "a", "e", max_x=True, max_y=False) == [
        {"a": 0.8, "e": 4}, {"a": 0.9, "e": 5}, {"a": 0.95, "e": 6}]


# Sweeps -----------------------------------------------------------------------------------

def test_invalid_points_are_recorded_without_a_cluster(tmp_path, capsys):
    space = write_space(tmp_path, """
        [axes]
        "xnor_array.rows" = [0, 1]
        "xnor_array.max_weight_bits" = [2]
    """)
    # Every point is invalid (rows 0; the core's weights are +-1): the sweep finishes
    # without a worker, so a scheduler nobody listens on is never contacted.
    assert main(["explore", str(space), "-o", str(tmp_path / "out"), "--scheduler",
                 DEAD_SCHEDULER, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in records] == ["invalid", "invalid"]
    assert records[0]["error"] == "XNORArrayConfig rows must be at least 1, not 0"
    assert records[1]["error"] == ("AcceleratorConfig needs +-1 weights: "
                                   "xnor_array.max_weight_bits must be 1, not 2")
    lines = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert lines[0].split(",") == COLUMNS and len(lines) == 3
    # Invalid points are checked again on every run, never cached.
    assert list((tmp_path / "out" / "points").iterdir()) == []


def test_a_missing_space_file_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["explore", str(tmp_path / "nope.toml")])
    assert exit_info.value.code == 2
    assert "cannot read" in capsys.readouterr().err


def test_sweep_on_the_iss_records_failures_and_caches(tmp_path, client, reference_accuracy):
    space = write_space(tmp_path, """
        [axes]
        "xnor_array.rows" = [1, 2]
        "xnor_array.max_act_bits" = [5, 1]
        [[points]]
        "xnor_array.cols" = 0
        [run]
        synthesize = false
        images = 120
    """)
    out = tmp_path / "out"
    sweep = explore(space, out, client=client, progress=False)
    by_index = {r["index"]: r for r in sweep.results}
    assert [r["status"] for r in sweep.results] == ["ok", "failed", "ok", "failed", "invalid"]
    assert sweep.computed == 4 and sweep.cached == 0
    for ok in (by_index[0], by_index[2]):
        assert ok["accuracy"] == round(reference_accuracy, 4)
        assert ok["images"] == 120 and ok["energy_nj"] > 0 and ok["cycles_per_image"] > 0
        assert 0 < ok["utilisation"] <= 1 and ok["energy_nj"] < ok["fp32_energy_nj"]
        assert ok["macs_per_cycle"] == ok["rows"] * 32 and ok["max_out_bits"] == 1
        assert ok["fmax_mhz"] is None and ok["images_per_s"] is None  # no synthesis asked
    # Two rows of PEs take two activation rows per beat: fewer cycles per image.
    assert by_index[2]["cycles_per_image"] < by_index[0]["cycles_per_image"]
    # The digits model's first layer takes 5-bit inputs: a binary-only array cannot run it.
    assert by_index[1]["stage"] == "compile"
    assert "uint5 inputs need max_act_bits >= 5, the XNOR array has 1" in by_index[1]["error"]
    assert by_index[4]["error"] == "XNORArrayConfig cols must be at least 1, not 0"
    stored = sorted(p.name for p in (out / "points").iterdir())
    assert stored == sorted(f"{by_index[i]['key']}.json" for i in range(4))
    assert {p.name for p in out.iterdir()} >= {"results.csv", "pareto_throughput_vs_lc.png",
                                               "pareto_energy_vs_accuracy.png",
                                               "pareto_fmax_vs_macs.png"}

    # A rerun computes nothing: no worker is needed, the point files are untouched.
    before = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in (out / "points").iterdir()}
    again = explore(space, out, scheduler=DEAD_SCHEDULER, progress=False)
    assert again.computed == 0 and again.cached == 4
    assert all(r["cached"] for r in again.results if r["status"] != "invalid")
    assert [r["accuracy"] for r in again.results] == [r["accuracy"] for r in sweep.results]
    after = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in (out / "points").iterdir()}
    assert after == before

    # A lost point file: only that point runs again.
    (out / "points" / f"{by_index[2]['key']}.json").unlink()
    third = explore(space, out, client=client, progress=False)
    assert third.computed == 1 and third.cached == 3
    assert third.results[2]["cycles_per_image"] == by_index[2]["cycles_per_image"]


def test_another_recipe_is_another_point(tmp_path, client, capsys):
    # The same configuration with another network must not be served from the cache; a
    # repeated value is the same point, run once. Through the command line, on a running
    # scheduler (the module's cluster) as --scheduler reaches one.
    space = write_space(tmp_path, """
        [axes]
        model.seed = [1, 2, 1]
        [run]
        synthesize = false
        images = 50
    """)
    assert main(["explore", str(space), "-o", str(tmp_path / "out"), "--scheduler",
                 client.scheduler.address, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    first, second, again = records
    assert first["key"] != second["key"] and again["key"] == first["key"]
    assert first["fingerprint"] == second["fingerprint"]  # one configuration
    assert [r["index"] for r in records] == [0, 1, 2]
    assert {k: v for k, v in again.items() if k != "index"} == \
        {k: v for k, v in first.items() if k != "index"}
    assert len(list((tmp_path / "out" / "points").iterdir())) == 2
    assert [r["images"] for r in records] == [50, 50, 50]


def test_a_task_that_raises_is_recorded_and_tried_again_next_time(tmp_path, client):
    # A recipe train() refuses: its training task raises on the worker. The point is
    # recorded as failed but not cached; the sweep goes on with the other point.
    space = write_space(tmp_path, """
        [axes]
        model.precision = ["w3a3", "w1a1"]
        [run]
        synthesize = false
        images = 50
    """)
    bad, good = explore(space, tmp_path / "out", client=client, progress=False).results
    assert (bad["status"], bad["stage"]) == ("failed", "task")
    assert bad["error"] == ("ValueError: precision must be one of w1a1, w1a2, w2a2, w4a4, "
                            "not 'w3a3'")
    assert good["status"] == "ok"
    assert [p.name for p in (tmp_path / "out" / "points").iterdir()] == [f"{good['key']}.json"]


def test_a_model_file_is_shipped_to_the_workers(tmp_path, client):
    model, _ = train("digits", precision="w1a1", hidden=(), epochs=2, seed=3, progress=False,
                     twin=False)
    model.save(tmp_path / "m.npz")
    data = datasets.load("digits")
    expected = float(np.mean(model.predict(data.x_test[:60]) == data.y_test[:60]))
    space = tmp_path / "space.toml"
    space.write_text(textwrap.dedent(BASE)
                     + '[model]\nfile = "m.npz"\n[run]\nsynthesize = false\nimages = 60\n')
    (record,) = explore(space, tmp_path / "out", client=client, progress=False).results
    assert record["status"] == "ok" and record["model"] == "m.npz (digits)"
    assert record["accuracy"] == round(expected, 4)


def test_a_worker_killed_mid_sweep_loses_no_finished_result(tmp_path):
    from distributed import Client, LocalCluster

    space = write_space(tmp_path, """
        [axes]
        "xnor_array.rows" = [1, 2, 3]
        batch = [8, 16]
        [run]
        synthesize = false
        images = 120
    """)
    out = tmp_path / "out"
    seen, killed = [], []

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as dask_client:
        pids = dask_client.run(os.getpid)

        def on_result(record):
            # After the first result, kill a worker process outright (SIGKILL: no clean
            # shutdown), while the other points are still queued or running.
            seen.append((record["key"], (out / "points" / f"{record['key']}.json").read_text()))
            if not killed:
                # A worker with ISS runs on it: they must run again elsewhere.
                busy = {addr: [k for k in keys if k.startswith("lowbit-run-")]
                        for addr, keys in dask_client.processing().items()}
                addr = max(busy, key=lambda a: len(busy[a]))
                os.kill(pids[addr], signal.SIGKILL)
                killed.append((pids[addr], busy[addr], len(seen)))

        sweep = explore(space, out, client=dask_client, progress=False, on_result=on_result)
        pids_after = dask_client.run(os.getpid)

    victim, lost_tasks, results_then = killed[0]
    assert victim not in pids_after.values()
    assert lost_tasks and results_then == 1
    assert len(seen) == 6
    # Every point finished, those whose runs were on the killed worker too (Dask ran them
    # again elsewhere)...
    assert [r["status"] for r in sweep.results] == ["ok"] * 6
    # ...and each record on disk is the one written when it arrived, the first included.
    for key, text in seen:
        assert (out / "points" / f"{key}.json").read_text() == text
    assert sweep.computed == 6


# Real synthesis ---------------------------------------------------------------------------

@pytest.mark.synth
def test_sweep_with_synthesis_records_a_point_that_does_not_fit(tmp_path, client):
    from lowbit.synth import cached_result
    from lowbit.units import get_unit

    space = write_space(tmp_path, """
        [[points]]
        [[points]]
        # The in and score memories 4096 words deep (dual-ported, so block RAM): far more
        # than the iCE40UP5K's 30 EBRs.
        in_depth = 4096
        score_depth = 4096
        weight_depth = 4096
        [run]
        images = 100
    """)
    out = tmp_path / "out"
    sweep = explore(space, out, client=client, progress=False)
    fits, too_big = sweep.results
    assert fits["status"] == "ok", fits["error"]
    # The figures are synthesize's own (its cache now holds this exact design).
    config = AcceleratorConfig.from_dict(fits["config"])
    synth = cached_result(get_unit("accelerator"), config, "ice40")
    assert (fits["lc"], fits["bram"], fits["fmax_mhz"]) == (synth["lc"], synth["bram"],
                                                            synth["fmax_mhz"])
    assert fits["images_per_s"] == pytest.approx(
        synth["fmax_mhz"] * 1e6 / fits["cycles_per_image"], rel=1e-3)
    assert too_big["status"] == "does-not-fit"
    used, available = map(int, too_big["over"].split("ICESTORM_RAM ")[1].split()[0]
                          .split("/"))
    assert available == 30 and used > 30
    assert too_big["fmax_mhz"] is None and too_big["cycles_per_image"] > 0
    # Both are results, cached: a rerun needs no worker.
    again = explore(space, out, scheduler=DEAD_SCHEDULER, progress=False)
    assert again.cached == 2 and [r["status"] for r in again.results] == ["ok", "does-not-fit"]
