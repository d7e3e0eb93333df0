"""`python -m train`: bad input ends with a non-zero exit code and one line naming the fix."""

import json
import os
import subprocess
import sys

import pytest

import jnn
from train import config as configs
from train.__main__ import main

pytestmark = pytest.mark.slow  # runs the harness, some tests in real processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "train", "configs", "examples", "own_model_and_data.py")


def one_line_error(capsys, argv) -> str:
    """main(argv)'s exit code is 2 and its stderr one "error: ..." line; returns that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("argv,match", [
    (["--config", "imagenet_vit"], "unknown config 'imagenet_vit'"),
    (["--config", "no/such/file.py"], "does not exist; pass a named config"),
    (["--set", "model=resnet9"], "unknown model 'resnet9'; choose one of"),
    (["--set", "optimizer=adamx"], "unknown optimizer 'adamx'; choose one of"),
    (["--set", "dataset=svhn"], "unknown dataset 'svhn'; choose one of"),
    (["--set", "epochs=many"], "epochs expects an integer"),
    (["--set", "batch_size=1e3"], "batch_size expects an integer"),
    (["--set", "label_smoothing=2"], "label_smoothing must be in [0, 1), got 2"),
    (["--set", "model_kwargs.dropout_rate=high"], "model_kwargs.dropout_rate expects a number"),
    (["--set", "model_kwargs.hidden_sizes=64,32"], "--set model=mlp"),
    (["--config", "cifar10_cnn", "--set", "schedule_kwargs.gama=0.7"],
     "schedule_kwargs has no field 'gama' for schedule 'step'; its fields are gamma, "
     "step_epochs (--set schedule_kwargs.gamma=0.7)"),
    (["--config", "cifar10_cnn", "--set", "schedule=cosine"],
     "schedule_kwargs has no field 'gamma' for schedule 'cosine'"),
    (["--set", "max_to_keep=0"], "max_to_keep must be >= 1"),
    (["--ensemble", "two"], "argument --ensemble: invalid int value: 'two'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_bad_input_gives_one_line_and_exit_code_2(capsys, argv, match):
    assert match in one_line_error(capsys, argv)


@pytest.mark.parametrize("overrides,match", [
    (["validation_fraction=0.99"], "validation_fraction 0.99 leaves only 14 of the 1437 "
                                   "training examples to train on, fewer than one batch of 32"),
    (["validation_fraction=0", "batch_size=4096", "parallel=none"],
     "batch_size 4096 is larger than the 1437 training examples; use --set batch_size=1437"),
])
def test_data_that_cannot_fill_a_batch_gives_one_line(capsys, tmp_path, overrides, match):
    argv = ["--workdir", str(tmp_path / "run")]
    for assignment in overrides:
        argv += ["--set", assignment]
    assert match in one_line_error(capsys, argv)


def test_a_missing_dataset_gives_one_line_with_the_prepare_command(capsys, tmp_path):
    err = one_line_error(capsys, ["--config", "mnist_cnn", "--set", f"data_dir={tmp_path}",
                                  "--workdir", str(tmp_path / "run")])
    assert "tfds build mnist" in err


def test_list_shows_each_configs_whole_first_docstring_line(capsys):
    assert main(["--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == configs.config_names()
    for line, name in zip(lines, configs.config_names()):
        doc = __import__(f"train.configs.{name}", fromlist=["x"]).__doc__
        assert line[len(name):].strip() == doc.strip().splitlines()[0]


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
                 "--set", "model_kwargs.batch_norm=false", "--show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dataset"] == "mnist" and shown["epochs"] == 3 and shown["microbatches"] == 2
    assert shown["model_kwargs"] == {"batch_norm": False} and shown["config_file"] is None
    assert os.listdir(tmp_path) == []  # no runs/ folder, no data read


def test_without_arguments_the_default_config_is_digits_cnn(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["dataset"], shown["model"]) == ("digits", "cnn")


def test_the_train_command_may_be_named(capsys):
    assert main(["train", "--show", "--set", "epochs=2"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2


def test_traceback_shows_the_whole_error_instead_of_one_line():
    with pytest.raises(ValueError, match="unknown model 'resnet9'"):
        main(["--set", "model=resnet9", "--traceback"])


def test_show_of_a_config_file_types_its_own_models_fields(capsys, registries):
    assert main(["--config", EXAMPLE, "--set", "model_kwargs.layer_norm=true",
                 "--set", "model_kwargs.width=8", "--show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config_file"] == EXAMPLE
    assert shown["model_kwargs"] == {"width": 8, "layer_norm": True}
    err = one_line_error(capsys, ["--config", EXAMPLE, "--set", "model_kwargs.widht=8"])
    assert "model_kwargs has no field 'widht' for model 'spiral_net'; its fields are " \
           "layer_norm, width (--set model_kwargs.width=8)" in err


def test_a_config_file_with_its_own_model_and_arrays_trains(tmp_path):
    workdir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "train", "--config", EXAMPLE, "--set",
                             "epochs=1", "--workdir", str(workdir), "--no-progress"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": ROOT},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["config"]["config_file"] == EXAMPLE
    assert summary["config"]["dataset"] == "spirals" and summary["epochs"] == 1
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert "test accuracy" in result.stdout


@pytest.mark.parametrize("flags,expected", [
    (["--distributed"], ((), {})),  # jax.distributed detects SLURM, Cloud TPU, ... itself
    (["--coordinator", "10.0.0.1:1234", "--num-processes", "4", "--process-id", "2"],
     (("10.0.0.1:1234",), {"num_processes": 4, "process_id": 2})),
    ([], None),
])
def test_distributed_flags_reach_jax_distributed_initialize(monkeypatch, flags, expected):
    import jax

    from train.__main__ import _initialize_distributed, _train_parser

    calls, settings = [], []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(jax.config, "update", lambda *a: settings.append(a))
    _initialize_distributed(_train_parser().parse_args(flags))
    assert calls == ([] if expected is None else [expected])
    assert settings == ([] if expected is None else
                        [("jax_cpu_collectives_implementation", "gloo")])
