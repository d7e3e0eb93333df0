"""`python -m train`: bad input ends with a non-zero exit code and one line naming the fix."""

import json
import os
import subprocess
import sys

import pytest

from train.__main__ import main

pytestmark = pytest.mark.slow  # runs the harness, some tests in real processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("argv,match", [
    (["--config", "imagenet_vit"], "unknown config 'imagenet_vit'"),
    (["--set", "model=resnet9"], "unknown model 'resnet9'; choose one of"),
    (["--set", "optimizer=adamx"], "unknown optimizer 'adamx'; choose one of"),
    (["--set", "dataset=svhn"], "unknown dataset 'svhn'; choose one of"),
    (["--set", "epochs=many"], "epochs expects an integer"),
    (["--set", "batch_size=1e3"], "batch_size expects an integer"),
])
def test_bad_input_gives_one_line_and_exit_code_2(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and match in err


def test_a_missing_dataset_gives_one_line_with_the_prepare_command(capsys, tmp_path):
    assert main(["--config", "mnist_cnn", "--set", f"data_dir={tmp_path}",
                 "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tfds build mnist" in err


def test_list_names_every_config(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "digits_cnn" in out and "diabetes_mlp" in out


def test_a_missing_dataset_prints_exactly_one_line_from_a_real_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "train", "--config", "mnist_cnn", "--set",
                             f"data_dir={tmp_path}", "--workdir", str(tmp_path / "run")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "tfds build mnist" in result.stderr


def test_the_process_exit_code_is_non_zero_on_bad_input():
    result = subprocess.run([sys.executable, "-m", "train", "--set", "model=nope"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown model 'nope'")


def test_show_prints_the_resolved_config_and_trains_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--config", "mnist_cnn", "--set", "epochs=3", "--set", "microbatches=2",
                 "--show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dataset"] == "mnist" and shown["epochs"] == 3 and shown["microbatches"] == 2
    assert os.listdir(tmp_path) == []  # no runs/ folder, no data read


def test_without_arguments_the_default_config_is_digits_cnn(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["dataset"], shown["model"]) == ("digits", "cnn")


def test_traceback_shows_the_whole_error_instead_of_one_line():
    with pytest.raises(ValueError, match="unknown model 'resnet9'"):
        main(["--set", "model=resnet9", "--traceback"])
