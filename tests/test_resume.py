"""Long runs: checkpoints, resume, preemption, damaged checkpoints, NaN guard, best restore.

Each test trains the small digits MLP for a few epochs. An interruption is made exact by
sending the signal from inside the loop's step at a chosen step, so "resume equals an
uninterrupted run" is checked bit for bit on the parameters.
"""

import json
import os
import shutil
import signal

import jax
import numpy as np
import pytest

import jnn
import train.loop as loop
import train.runner as runner_lib
from train import config as configs
from train.checkpoint import RunCheckpoints

pytestmark = pytest.mark.slow  # end-to-end harness runs


def _config(**fields):
    config = configs.get_config("digits_mlp")
    config.update({"epochs": 3, "batch_size": 64, "checkpoint_every_steps": 5,
                   "parallel": "none", "steps_per_call": 1, **fields})
    config.model_kwargs.hidden_sizes = (32,)
    return config


def _run(config, workdir, **kwargs):
    lines = []
    summary = loop.train_and_evaluate(config, str(workdir), progress=False, log=lines.append,
                                      **kwargs)
    return summary, lines


def _with_step_hook(monkeypatch, hook=None, after=None):
    """Calls hook(step_index, batch) -> batch before each train step and after(step_index,
    runner) after the call that ran it (indices of this process's steps, from 0)."""
    build = runner_lib.build_runner

    def build_with_hook(*args, **kwargs):
        runner = build(*args, **kwargs)
        train, calls = runner.train, [0]

        def hooked(batches):
            first = calls[0]
            calls[0] += len(batches)
            if hook:
                batches = [hook(first + j, b) for j, b in enumerate(batches)]
            metrics = train(batches)
            if after:
                after(calls[0] - 1, runner)
            return metrics

        runner.train = hooked
        return runner

    monkeypatch.setattr(loop, "build_runner", build_with_hook)


def _signal_at(monkeypatch, call, signum=signal.SIGTERM):
    def hook(i, batch):
        if i == call:
            os.kill(os.getpid(), signum)
        return batch

    _with_step_hook(monkeypatch, hook)


def _interrupted_run(monkeypatch, config, workdir, at_call):
    """Runs `config` until SIGTERM arrives during train step `at_call` (it saves and stops)."""
    with monkeypatch.context() as patch:
        _signal_at(patch, at_call)
        with pytest.raises(loop.RunInterrupted):
            _run(config, workdir)


def _nan_inputs_at(step):
    """A step hook that makes the inputs of train step `step` all NaN."""
    return lambda i, batch: {**batch, "x": np.full_like(batch["x"], np.nan)} if i == step else batch


def _final_params(summary, config):
    from train.checkpoint import restore_state

    like = runner_lib.make_state(config, jnn.data.load("digits"))
    return jax.tree.leaves(jax.device_get(restore_state(summary["checkpoint"], like).params))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    config = _config()
    summary, _ = _run(config, tmp_path_factory.mktemp("whole"))
    return summary, _final_params(summary, config)


@pytest.mark.parametrize("signum,at_call", [(signal.SIGTERM, 23), (signal.SIGINT, 40)])
def test_an_interrupted_run_resumed_equals_an_uninterrupted_one_bit_for_bit(
        tmp_path, monkeypatch, uninterrupted, signum, at_call):
    config = _config()
    with monkeypatch.context() as patch:
        _signal_at(patch, at_call, signum)
        with pytest.raises(loop.RunInterrupted, match="run the same command again") as stopped:
            _run(config, tmp_path)
    assert stopped.value.signum == signum
    # the signal arrives during step `at_call`; the loop saves after it and stops
    assert RunCheckpoints(str(tmp_path), max_to_keep=3).latest_step() == at_call + 1
    summary, lines = _run(config, tmp_path)
    assert f"resumed from step {at_call + 1}" in lines
    whole, whole_params = uninterrupted
    assert summary["resumed_from_step"] == at_call + 1 and whole["resumed_from_step"] is None
    for a, b in zip(_final_params(summary, config), whole_params):
        np.testing.assert_array_equal(a, b)
    assert summary["test_loss"] == whole["test_loss"]
    assert summary["test_accuracy"] == whole["test_accuracy"]
    assert summary["steps"] == whole["steps"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [r["step"] for r in whole["history"]]
    for mine, theirs in zip(records, whole["history"]):
        assert mine["val_loss"] == theirs["val_loss"]
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-12)


def test_several_steps_per_call_stop_resume_and_end_as_one_step_per_call(
        tmp_path, monkeypatch, uninterrupted):
    # 18 steps an epoch, checkpoints every 5: calls of up to 4 steps end at 4, 5, 9, 10, 14,
    # 15, 18 (the epoch's end), 20, 24, ... steps done, so a SIGTERM during the call of
    # steps 21-24 (sent while its batches are made, at hook index 21) stops after step 24.
    config = _config(steps_per_call=4)
    with monkeypatch.context() as patch:
        _signal_at(patch, 21)
        with pytest.raises(loop.RunInterrupted, match="stopped by SIGTERM at step 24"):
            _run(config, tmp_path)
    steps = sorted(int(n) for n in os.listdir(tmp_path / "checkpoints") if n.isdigit())
    assert steps == [18, 20, 24]  # the same checkpoint steps as one step per call
    summary, lines = _run(config, tmp_path)
    assert "resumed from step 24" in lines
    whole, whole_params = uninterrupted
    for a, b in zip(_final_params(summary, config), whole_params):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert summary["steps"] == whole["steps"]
    assert summary["test_loss"] == pytest.approx(whole["test_loss"], rel=1e-6)
    for mine, theirs in zip(summary["history"], whole["history"]):
        assert mine["step"] == theirs["step"]
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-6)


def test_a_nan_inside_a_call_of_several_steps_is_named_by_its_own_step(tmp_path, monkeypatch):
    k = 7  # the 8th step, inside the call that makes steps 6-9
    _with_step_hook(monkeypatch, _nan_inputs_at(k))
    with pytest.raises(loop.NonFiniteLoss, match=f"loss of step {k} .epoch 1, batch {k}. is not "
                       "finite; the last good checkpoint is at step 5"):
        _run(_config(epochs=1, steps_per_call=4), tmp_path)
    assert RunCheckpoints(str(tmp_path), max_to_keep=3).latest_step() == 5


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(tmp_path, monkeypatch):
    config = _config(epochs=1)
    _interrupted_run(monkeypatch, config, tmp_path, 12)
    steps = sorted(int(n) for n in os.listdir(tmp_path / "checkpoints") if n.isdigit())
    assert steps[-2:] == [10, 13]
    for root, _, files in os.walk(tmp_path / "checkpoints" / "13" / "state"):
        for name in files:  # truncate every file of the newest checkpoint's arrays
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(max(0, os.path.getsize(f.name) // 3))
    summary, lines = _run(config, tmp_path)
    damaged = [line for line in lines if "cannot be read" in line]
    assert len(damaged) == 1 and "step 13" in damaged[0] and "\n" not in damaged[0]
    assert "resumed from step 10" in lines
    assert summary["resumed_from_step"] == 10


def test_a_save_killed_half_way_leaves_the_last_complete_checkpoint(tmp_path, monkeypatch):
    # What `kill -9` during a save leaves: orbax's temporary folder of the unfinished step.
    config = _config(epochs=1)
    _interrupted_run(monkeypatch, config, tmp_path, 7)
    folder = tmp_path / "checkpoints"
    shutil.copytree(folder / "8", folder / "10.orbax-checkpoint-tmp-1234")
    (folder / "10.orbax-checkpoint-tmp-1234" / "progress" / "metadata").write_text('{"st')
    summary, lines = _run(config, tmp_path)
    assert "resumed from step 8" in lines and summary["steps"] == 18


def test_a_changed_config_in_a_used_workdir_is_refused_and_restart_keeps_the_old_run(tmp_path):
    _run(_config(epochs=1), tmp_path)
    first = (tmp_path / "summary.json").read_text()
    with pytest.raises(ValueError, match=r"another config \(learning_rate 0.05 -> 0.1\).*--restart"
                       ) as refused:
        _run(_config(epochs=1, learning_rate=0.1), tmp_path)
    assert "\n" not in str(refused.value)
    assert (tmp_path / "summary.json").read_text() == first  # nothing touched
    summary, _ = _run(_config(epochs=1, learning_rate=0.1), tmp_path, restart=True)
    assert (tmp_path / "previous-1" / "summary.json").read_text() == first
    assert summary["resumed_from_step"] is None


def test_a_finished_run_run_again_trains_no_further(tmp_path):
    whole, _ = _run(_config(epochs=1), tmp_path)
    again, lines = _run(_config(epochs=1), tmp_path)
    assert f"resumed from step {whole['steps']}" in lines
    assert again["steps"] == whole["steps"] and again["test_loss"] == whole["test_loss"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_nan_at_step_k_stops_there_and_keeps_only_earlier_checkpoints(tmp_path, monkeypatch):
    k = 11
    _with_step_hook(monkeypatch, _nan_inputs_at(k))
    with pytest.raises(loop.NonFiniteLoss, match=f"loss of step {k} .epoch 1, batch {k}. is not "
                       "finite; the last good checkpoint is at step 10") as stopped:
        _run(_config(epochs=2), tmp_path)
    assert "\n" not in str(stopped.value)
    assert RunCheckpoints(str(tmp_path), max_to_keep=3).latest_step() == 10


def test_skip_nonfinite_skips_the_bad_step_and_finishes(tmp_path, monkeypatch):
    k = 3
    _with_step_hook(monkeypatch, _nan_inputs_at(k))
    summary, _ = _run(_config(epochs=1, skip_nonfinite=True), tmp_path)
    assert summary["history"][0]["train_skipped_steps"] == 1
    assert np.isfinite(summary["test_loss"]) and summary["test_accuracy"] > 0.5


def test_early_stopping_restores_the_best_parameters(tmp_path, scripted_val_losses):
    scripted_val_losses([3.0, 1.0, 2.0, 2.5, 9.0])
    config = _config(epochs=5, early_stopping_patience=2, max_to_keep=2)
    summary, lines = _run(config, tmp_path)
    steps_per_epoch = summary["history"][0]["step"]
    assert summary["epochs"] == 4 and summary["steps"] == 4 * steps_per_epoch
    assert summary["restored_best"] == {"epoch": 2, "step": 2 * steps_per_epoch, "val_loss": 1.0}
    assert any(line.startswith("restored the best parameters: epoch 2") for line in lines)
    # the test metrics are those of the epoch-2 parameters, whose checkpoint is kept
    # although it is older than the latest max_to_keep
    like = runner_lib.make_state(config, jnn.data.load("digits"))
    checkpoints = RunCheckpoints(str(tmp_path), max_to_keep=2)
    kept = checkpoints.steps()
    assert len(kept) == 3 and kept[0] == 2 * steps_per_epoch and kept[-1] == summary["steps"]
    best_state, progress = checkpoints.restore(2 * steps_per_epoch, like)
    checkpoints.close()
    assert int(best_state.step) == 2 * steps_per_epoch and progress["best"]["epoch"] == 2
    eval_step = jax.jit(jnn.make_eval_step())
    sums = jnn.sum_metrics(eval_step(best_state, b)
                           for b in loop.make_batches(config, jnn.data.load("digits"), "test"))
    assert jnn.summarize(sums)["loss"] == pytest.approx(summary["test_loss"], rel=1e-6)


def test_a_finished_workdir_holds_every_output(tmp_path):
    summary, _ = _run(_config(epochs=2), tmp_path)
    for name in ("summary.json", "metrics.jsonl", "config.json", "checkpoints", "tensorboard", "plots/curves.png", "plots/learning_rate.png",
                 "plots/confusion_matrix.png"):
        assert (tmp_path / name).exists(), name
    matrix = np.array(summary["test_confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == len(jnn.data.load("digits").test["y"])
    assert np.trace(matrix) / matrix.sum() == pytest.approx(summary["test_accuracy"])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["learning_rate"] for r in records] == [0.05, 0.05]
    events = os.listdir(tmp_path / "tensorboard")
    assert any(name.startswith("events.out.tfevents") for name in events)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["learning_rate"] == 0.05 and saved["model_kwargs"]["hidden_sizes"] == [32]


def test_an_unwritable_workdir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot write to the workdir") as refused:
        _run(_config(epochs=1), blocker / "run")
    assert "\n" not in str(refused.value)


def test_non_finite_parameters_after_a_finite_loss_are_never_saved(tmp_path, monkeypatch):
    # A gradient that overflows shows in the parameters before any loss: the save after
    # the step refuses them, and the message names the step and the checkpoint before it.
    def overflow(index, runner):
        if index == 9:  # after step 9, whose loss was finite
            runner.state = runner.state.replace(params=jax.tree.map(
                lambda p: p * np.inf, runner.state.params))

    _with_step_hook(monkeypatch, after=overflow)
    with pytest.raises(loop.NonFiniteLoss, match="parameters are not finite after step 9 .*"
                       "the last good checkpoint is at step 5;"):
        _run(_config(epochs=1), tmp_path)
    assert RunCheckpoints(str(tmp_path), max_to_keep=3).steps() == [5]


def test_a_checkpoint_of_another_config_is_refused_even_without_config_json(tmp_path):
    _run(_config(epochs=1), tmp_path)
    os.remove(tmp_path / "config.json")
    with pytest.raises(ValueError, match="another config .learning_rate 0.05 -> 0.1."):
        _run(_config(epochs=1, learning_rate=0.1), tmp_path)
