"""End to end: every config trains briefly through the real data path; nothing recompiles."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from train import config as configs
from train.loop import train_and_evaluate

pytestmark = pytest.mark.slow  # end-to-end harness runs (data, compile, epochs)

SUMMARY_FIELDS = ("config", "test_loss", "epochs", "steps", "train_time_s", "compile_time_s",
                  "examples_per_s", "devices", "jax_version")


def _short(name, **fields):
    config = configs.get_config(name)
    config.update({"epochs": 1, **fields})
    return config


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp", "diabetes_mlp"])
def test_bundled_configs_train_end_to_end(tmp_path, name):
    summary = train_and_evaluate(_short(name), str(tmp_path), progress=False, log=lambda _: None)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert all(field in written for field in SUMMARY_FIELDS)
    assert ("test_mse" if name == "diabetes_mlp" else "test_accuracy") in written
    assert written["steps"] == summary["steps"] > 0
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("name", ["mnist_cnn", "mnist_mlp", "cifar10_cnn"])
def test_download_configs_train_end_to_end_on_mock_data(tmp_path, name):
    with tfds.testing.mock_data(num_examples=40):
        summary = train_and_evaluate(_short(name, batch_size=16, data_dir=str(tmp_path / "tfds")),
                                     str(tmp_path / "run"), progress=False, log=lambda _: None)
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["steps"] == 2


@pytest.mark.slow  # trains for epochs
def test_digits_cnn_learns_in_a_few_epochs(tmp_path):
    summary = train_and_evaluate(_short("digits_cnn", epochs=5), str(tmp_path), progress=False,
                                 log=lambda _: None)
    assert summary["test_accuracy"] > 0.9


@pytest.mark.slow  # trains for epochs
def test_diabetes_mlp_beats_predicting_the_training_mean(tmp_path):
    config = configs.get_config("diabetes_mlp")
    summary = train_and_evaluate(config, str(tmp_path), progress=False, log=lambda _: None)
    assert summary["test_mse"] < 0.8 * summary["test_mse_of_train_mean"]


def test_after_the_first_epoch_nothing_compiles(tmp_path, compile_counter):
    # Counted from the end of epoch 2 to the end of epoch 3: the first checkpoint's own
    # small programs (orbax's slices, at the end of epoch 1) are compiled by then.
    epochs_done = []

    def on_epoch(_line):
        epochs_done.append(1)
        compile_counter.counting = len(epochs_done) == 2

    config = _short("digits_cnn", epochs=3, early_stopping_patience=0)
    train_and_evaluate(config, str(tmp_path), progress=False, log=on_epoch)
    assert len(epochs_done) == 3 and compile_counter.count == 0, compile_counter.names


@pytest.mark.parametrize("steps_per_call", [None, 1, 8])  # None: the config's default
def test_a_default_run_compiles_one_train_and_one_eval_program(tmp_path, compile_counter,
                                                                steps_per_call):
    compile_counter.counting = True
    config = configs.get_config("digits_cnn")
    config.update({"epochs": 2, "checkpoint_every_steps": 20})
    if steps_per_call is not None:  # 8: calls of 8, 8, 4 (a checkpoint due), 8, ... steps
        config.steps_per_call = steps_per_call
    train_and_evaluate(config, str(tmp_path), progress=False, log=lambda _: None)
    train = "jit(train_step)" if config.steps_per_call == 1 else "jit(multi_step)"
    steps = [name for name in compile_counter.names if name and name.endswith("_step)")]
    assert sorted(steps) == ["jit(eval_step)", train], compile_counter.names


def test_a_compile_after_the_first_epoch_is_reported_with_its_cause(tmp_path, monkeypatch):
    import jax
    import numpy as np

    from train import loop

    double = jax.jit(lambda v: v * 2)
    report = loop._report

    def report_and_recompile(sums, dataset, prefix):  # a new shape at every report
        calls.append(prefix)
        double(np.zeros(len(calls), np.float32))
        return report(sums, dataset, prefix)

    monkeypatch.setattr(loop, "_report", report_and_recompile)
    lines, calls = [], []
    config = _short("digits_cnn", epochs=3, validation_fraction=0.0)
    summary = train_and_evaluate(config, str(tmp_path), progress=False, log=lines.append)
    warnings = [line for line in lines if line.startswith("warning: ")]
    # reports: train at epochs 1, 2, 3, then test; the first is before the watch is armed
    assert calls == ["train", "train", "train", "test"]
    assert len(warnings) == 3 and len(summary["compiles_after_first_epoch"]) == 3, lines
    assert warnings[0].startswith("warning: jit(<lambda>) compiled after the first epoch")
    assert "at v, now f32[2] and before f32[1]" in warnings[0], warnings
    assert summary["compiles"] >= 6


NAN = float("nan")


@pytest.mark.parametrize("patience,val_losses,best_epoch", [
    (3, [5.0, 4.0, 3.0, 3.0, 3.5, 3.2, 1.0, 1.0, 1.0, 1.0], 3),  # a tie is no improvement
    (3, [3.0, 4.0, 5.0, 2.0, 6.0, 7.0, 8.0, 0.1, 0.1, 0.1], 4),  # a late best restarts the count
    (1, [2.0, 1.0, 1.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 2),
    (2, [1.0, NAN, 2.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 1),  # NaN is no improvement
    (3, [NAN] * 10, None),  # never a finite val_loss: stop after `patience` epochs
    (0, [1.0, 2.0, 3.0, 4.0, 5.0], 1),  # 0: off, all epochs run
])
def test_early_stopping_stops_exactly_patience_epochs_after_the_best(
        tmp_path, scripted_val_losses, patience, val_losses, best_epoch):
    scripted_val_losses(val_losses)
    epochs = len(val_losses)
    config = _short("digits_mlp", epochs=epochs, early_stopping_patience=patience,
                    batch_size=256, model_kwargs={"hidden_sizes": (16,)}, save_checkpoint=False,
                    parallel="none")
    lines = []
    summary = train_and_evaluate(config, str(tmp_path), progress=False, log=lines.append)

    expected_epochs = epochs if not patience else (best_epoch or 0) + patience
    steps_per_epoch = summary["history"][0]["step"]
    assert summary["epochs"] == len(summary["history"]) == expected_epochs
    assert summary["steps"] == expected_epochs * steps_per_epoch
    assert [r["epoch"] for r in summary["history"]] == list(range(1, expected_epochs + 1))
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == expected_epochs
    if best_epoch is None:
        assert summary["best_val"] is None
    else:
        assert summary["best_val"] == {"epoch": best_epoch, "step": best_epoch * steps_per_epoch,
                                       "val_loss": val_losses[best_epoch - 1]}
    stopped = [line for line in lines if line.startswith("early stopping")]
    if patience and expected_epochs < epochs:
        assert stopped == [f"early stopping: no better val_loss (by more than 0.0) for {patience} "
                           f"epochs (best at epoch {best_epoch or 0})"]
    else:
        assert stopped == []


@pytest.mark.slow  # trains for epochs
def test_early_stopping_on_a_diverging_run_stops_patience_epochs_after_its_best(tmp_path):
    # Real validation losses: SGD with a learning rate of 2 stops improving within a few epochs.
    patience = 2
    config = _short("digits_mlp", epochs=50, early_stopping_patience=patience,
                    learning_rate=2.0, optimizer="sgd", save_checkpoint=False)
    summary = train_and_evaluate(config, str(tmp_path), progress=False, log=lambda _: None)
    val_losses = [r["val_loss"] for r in summary["history"]]
    best = summary["best_val"]
    assert summary["epochs"] == len(val_losses) == best["epoch"] + patience < 50
    assert best["val_loss"] == min(v for v in val_losses if v == v) == val_losses[best["epoch"] - 1]
    assert all(not v < best["val_loss"] for v in val_losses[best["epoch"]:])


def test_a_second_run_in_the_same_workdir_keeps_the_first_runs_outputs(tmp_path):
    config = _short("digits_mlp", save_checkpoint=False)  # nothing to resume from
    train_and_evaluate(config, str(tmp_path), progress=False, log=lambda _: None)
    first = (tmp_path / "summary.json").read_text()
    train_and_evaluate(config, str(tmp_path), progress=False, log=lambda _: None)
    assert (tmp_path / "previous-1" / "summary.json").read_text() == first
    assert (tmp_path / "previous-1" / "metrics.jsonl").exists()
    assert (tmp_path / "summary.json").exists()


def test_the_saved_checkpoint_restores_the_trained_state(tmp_path):
    import jax

    import jnn
    from train.checkpoint import restore_state
    from train.loop import make_batches
    from train.runner import make_state

    config = _short("digits_mlp", parallel="none")
    summary = train_and_evaluate(config, str(tmp_path), progress=False, log=lambda _: None)
    dataset = jnn.data.load("digits")
    state = restore_state(summary["checkpoint"], make_state(config, dataset))
    assert int(state.step) == summary["steps"]
    eval_step = jax.jit(jnn.make_eval_step())
    sums = jnn.sum_metrics(eval_step(state, b) for b in make_batches(config, dataset, "test"))
    assert jnn.summarize(sums)["accuracy"] == pytest.approx(summary["test_accuracy"])


def test_restoring_from_a_missing_checkpoint_names_the_fix(tmp_path):
    from train.checkpoint import restore_state

    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        restore_state(str(tmp_path / "nothing"), None)


TENSORBOARD_WITHOUT_TORCH = """
import sys
sys.path.insert(0, {root!r})
if sys.argv[1] == "torch first":
    import torch
from train.loop import _summary_writer
writer = _summary_writer(sys.argv[2], purge_step=None)
writer.add_scalar("loss", 0.5, 1)
writer.close()
print("torch" in sys.modules)
import torch  # importable again afterwards
print(torch.ones(1).item())
"""


@pytest.mark.parametrize("order", ["harness first", "torch first"])
def test_tensorboard_logs_without_importing_torch(tmp_path, order):
    """tensorboardX imports torch when it is installed (1-2.4 s of a run's start-up); the
    harness keeps it out, and leaves a torch that was imported already alone."""
    pytest.importorskip("torch")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    probe = TENSORBOARD_WITHOUT_TORCH.format(root=root)
    result = subprocess.run([sys.executable, "-c", probe, order, str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    loaded_during, after = result.stdout.split("\n")[:2]
    assert loaded_during == ("True" if order == "torch first" else "False")
    assert after == "1.0"
    events = [name for name in os.listdir(tmp_path) if name.startswith("events.out.tfevents")]
    assert events and os.path.getsize(tmp_path / events[0]) > 0


def test_the_check_before_a_save_is_one_program_for_all_parameters(compile_counter):
    import numpy as np

    from train import loop

    # shapes no other test uses, so nothing is cached in-process
    params = {"a": np.ones((3, 17), np.float32), "b": {"c": np.ones((19,), np.float32),
                                                     "d": np.ones((2, 2, 23), np.float32)}}
    compile_counter.counting = True
    assert bool(loop._all_finite(params))
    assert compile_counter.count == 1, compile_counter.names  # op by op: 8 programs
    params["b"]["d"][1, 0, 5] = np.nan
    assert not bool(loop._all_finite(params))
    params["b"]["d"][1, 0, 5] = -np.inf
    assert not bool(loop._all_finite(params))
