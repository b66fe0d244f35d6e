"""``lowbit demo`` without its RTL step (Verilator): trains, compiles for the default core,
runs the test set on the ISS and reports accuracy, cycles, utilisation and MACs/cycle."""

import re

from lowbit.demo import run_demo


def test_demo_reports_the_iss_figures(tmp_path, capsys):
    assert run_demo(tmp_path, epochs=2, rtl=False) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "digits-w1a1.lbp").exists() and (tmp_path / "accelerator.v").exists()
    accuracy = float(re.search(r"ISS (\d+\.\d+)% \(360 images\)", out).group(1))
    assert accuracy > 80
    cycles = int(re.search(r"cycles +(\d+) per image", out).group(1))
    utilisation = float(re.search(r"utilisation (\d\.\d+)", out).group(1))
    macs = int(re.search(r"([\d,]+) useful binary MACs per cycle of the 2,048", out).group(1)
               .replace(",", ""))
    # 150,016 useful MACs per image (64x256 on 5 planes, 256x256, 256x10).
    assert abs(macs - 150016 / cycles) <= 150016 / cycles * 0.01 + 1
    assert 0.5 < utilisation <= 1.0
    assert "ISS vs numpy predictions" in out and "energy" in out


def test_training_demo_trains_on_the_iss_and_runs_the_model(tmp_path, capsys):
    from lowbit.demo import run_train_demo

    assert run_train_demo(tmp_path, epochs=1, rtl=False) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1: loss" in out and "GEMM programs" in out
    assert (tmp_path / "digits-device.npz").exists()
    accuracy = float(re.search(r"(\d+\.\d+)% on the 360 test images", out).group(1))
    assert accuracy > 60  # one epoch; 10% is chance
