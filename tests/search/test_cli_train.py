"""``hpsearch train`` as a user runs it: a real subprocess, real files; the many ways to get a
setting wrong through the same ``main()`` in this process (the ``cli`` fixture)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.driver import hpsearch


@pytest.mark.integration  # a real subprocess / real MLflow store: seconds
def test_train_prints_one_line_per_epoch_and_phase(tiny_mnist_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "trial.yaml"
    cfg.write_text(f"dataset: mnist\ndata_dir: {tiny_mnist_dir}\nchannels: [8, 16]\n"
                   "epochs: 2\nbatch_size: 32\n")
    out = hpsearch("train", str(cfg), "--set", "lr=0.002", "--save", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sum(line.startswith("Epoch [1/2] train  samples 540") for line in lines) == 1
    assert sum(line.startswith("Epoch [2/2] val") for line in lines) == 1
    assert sum(line.startswith("Epoch [2/2] test") for line in lines) == 1
    assert "lr 0.002" in out.stdout
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["lr"] == 0.002 and saved["channels"] == [8, 16]
    assert (tmp_path / "out" / "model.pt").stat().st_size > 0


BAD_SETTINGS = [
    (["--set", "modle=cnn"], "modle: unknown setting (did you mean 'model'?)"),
    (["--set", "model=resnet"], "model: unknown model 'resnet'"),
    (["--set", "dataset=fashion"], "unknown dataset 'fashion'"),
    (["--set", "optimizer=adamm"], "unknown optimizer 'adamm' (did you mean 'adam'?)"),
    (["--set", "activation=relu6"], "unknown activation 'relu6'"),
    (["--set", "augment=[flip]"], "augment[0]: unknown augmentation 'flip'"),
    (["--set", "schedule=linear"], "unknown schedule 'linear'"),
    (["--set", "lr=0"], "lr: input should be greater than 0"),
    (["--set", "batch_size=0"], "batch_size: input should be greater than or equal to 1"),
    (["--set", "dropout=1.5"], "dropout: input should be less than 1"),
    (["--set", "val_fraction=1"], "val_fraction: input should be less than 1"),
    (["--set", "channels=[16, 0]"], "channels: every width must be >= 1"),
    (["--set", "lr"], "expected key=value"),
    (["--set", "device=tpu"], "device: allowed: auto, cpu, cuda"),
    (["no-such.yaml"], "no-such.yaml: no such file"),
]


def _assert_one_line(out: subprocess.CompletedProcess[str], expected: str) -> None:
    assert out.returncode == 2
    assert expected in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, expected", BAD_SETTINGS)
def test_bad_input_is_one_line_exit_2_no_traceback(cli: Any, tmp_path: Path, args: list[str],
                                                    expected: str) -> None:
    _assert_one_line(cli("train", *args, cwd=tmp_path), expected)


def test_a_bad_setting_through_the_real_command() -> None:
    args, expected = BAD_SETTINGS[0]
    _assert_one_line(hpsearch("train", *args), expected)


def test_bad_yaml_names_its_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("lr: 0.01\nbatch_size: [64\nepochs: 1\n")
    out = hpsearch("train", str(cfg))
    assert out.returncode == 2 and f"{cfg}:3:" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.integration  # a real subprocess / real MLflow store: seconds
def test_missing_data_offline_says_how_to_get_it(tmp_path: Path) -> None:
    out = hpsearch("train", "--set", "dataset=cifar10", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "data_dir" in out.stderr
