"""Preemption of `python -m train` from outside, as a scheduler does it: SIGKILL at
whatever moment the run is at (possibly in the middle of a save), SIGTERM to the one
process of a run, and SIGTERM to one of the two processes of a jax.distributed run.
Each time, running the same command again resumes and ends with the parameters of an
uninterrupted run.

Unlike test_resume.py, nothing is patched: the runs are real subprocesses and the signal
arrives at a moment chosen by watching the checkpoints folder.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gloo_output import without_gloo_notices

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

pytestmark = pytest.mark.slow  # every test here starts processes

RUN_TIMEOUT_S = 240  # one run (or one pair of processes) from start to exit
POLL_TIMEOUT_S = 180  # waiting for the checkpoints that trigger the signal
PEER_GRACE_S = 20  # how long a process may outlive a failed peer

# The same command for every one-process run of this file.
SINGLE = ["--config", "digits_mlp", "--set", "steps_per_call=1", "--set", "epochs=3", "--set", "checkpoint_every_steps=3",
          "--set", "batch_size=64", "--set", "model_kwargs.hidden_sizes=32,",
          "--parallel", "none", "--no-progress"]
# Two processes x 2 CPU devices, data parallel over the 4 devices. The processes share
# their stop flags every 10 steps; 18 steps an epoch (23 without a validation split), so
# a stop at 10, 20 or 30 is mid-epoch. With a validation split, each epoch end also saves
# the best checkpoint (WORKDIR/best) at the same step as the latest one.
SHARDED = ["--config", "digits_mlp", "--set", "steps_per_call=1", "--set", "epochs=2", "--set", "checkpoint_every_steps=4",
           "--set", "batch_size=64", "--set", "model_kwargs.hidden_sizes=32,",
           "--parallel", "shard", "--no-progress"]
SHARDED_VARIANTS = {  # name: (extra flags, steps of the whole run)
    "with_validation": ([], 36),
    "without_validation": (["--set", "validation_fraction=0"], 46),
}

STOPPED = re.compile(r"stopped by SIGTERM at step (\d+), saved; run the same command again to "
                     r"resume from there")



# ------------------------------------------------------------------------ helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Run:
    """`python -m train ARGS --workdir WORKDIR` in its own empty cwd; stdout and stderr go
    to files next to it (tmp_path/NAME.out, NAME.err)."""

    def __init__(self, tmp_path, name, args, workdir, devices=1):
        self.name, self.workdir = name, workdir
        self.out_path, self.err_path = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        cwd = tmp_path / f"{name}.cwd"
        cwd.mkdir()
        env = {**os.environ, "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
               "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "train", *args, "--workdir", str(workdir)],
                cwd=cwd, env=env, stdout=out, stderr=err)

    @property
    def stdout(self) -> list[str]:
        """stdout lines without gloo's connection notices."""
        return without_gloo_notices(self.out_path.read_text())

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    @property
    def failed(self) -> bool:
        """Exited non-zero, or reported an error while still running ("error: ...", the
        CLI's last word on a failure, or a traceback): such a process may hang at exit."""
        if self.proc.poll() is not None:
            return self.proc.returncode != 0
        err = self.stderr
        return "Traceback (most recent call last)" in err or any(
            line.startswith("error: ") for line in err.splitlines())

    def describe(self) -> str:
        return (f"{self.name}: exit {self.proc.returncode}\n--- stdout\n"
                + "\n".join(self.stdout)[-3000:] + f"\n--- stderr\n{self.stderr[-3000:]}")


def _wait(runs, timeout_s=RUN_TIMEOUT_S, grace_s=PEER_GRACE_S):
    """Waits for every run to exit. A run still going at the deadline (a stuck collective)
    is killed and fails the test; so is one still going `grace_s` after a peer failed (a
    process whose peer failed waits for it until the coordinator gives up, minutes later)."""
    deadline = time.monotonic() + timeout_s
    try:
        while any(run.proc.poll() is None for run in runs):
            failed = [run for run in runs if run.failed]
            if failed:
                deadline = min(deadline, time.monotonic() + grace_s)
            if time.monotonic() > deadline:
                hung = [run for run in runs if run.proc.poll() is None]
                pytest.fail("still running: " + ", ".join(run.name for run in hung) + "\n"
                            + "\n".join(run.describe() for run in runs))
            time.sleep(0.05)
    finally:
        _kill_all(runs)


def _kill_all(runs):
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()  # SIGKILL: jax's preemption notifier swallows SIGTERM
            run.proc.wait()


def _steps(workdir) -> list[int]:
    """The numeric step folders in workdir/checkpoints (orbax renames a complete save into
    place; an unfinished one is STEP.orbax-checkpoint-tmp*)."""
    folder = os.path.join(workdir, "checkpoints")
    try:
        return sorted(int(n) for n in os.listdir(folder) if n.isdigit())
    except FileNotFoundError:
        return []


def _listing(workdir) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    except FileNotFoundError:
        return []


def _saving(workdir) -> bool:
    """Whether a save is under way (orbax's temporary folder of an unfinished step)."""
    return any(".orbax-checkpoint-tmp" in name for name in _listing(workdir))


KILL_MOMENTS = {  # when to kill: at whatever the run is doing once two saves are complete,
    # or once two are complete and a third is being written (orbax's temporary folder)
    "after_two_saves": lambda workdir: len(_steps(workdir)) >= 2,
    "mid_save": lambda workdir: len(_steps(workdir)) >= 2 and _saving(workdir),
}


def _poll_until(runs, condition, timeout_s=POLL_TIMEOUT_S):
    """Polls (every few ms) until condition() holds; fails if a run exits first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        for run in runs:
            if run.proc.poll() is not None:
                pytest.fail(f"{run.name} exited before the moment to interrupt it came\n"
                            f"{run.describe()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no such moment within {timeout_s} s: {_listing(runs[0].workdir)}")
        time.sleep(0.003)


def _config(args):
    """The config that the command line `args` resolves to (as `python -m train` does)."""
    from train import config as configs

    values = {flag: value for flag, value in zip(args, args[1:]) if flag != "--set"}
    config = configs.load_config(values["--config"])
    overrides = [value for flag, value in zip(args, args[1:]) if flag == "--set"]
    configs.apply_overrides(config, [f"parallel={values['--parallel']}", *overrides])
    return config


def _final_params(summary, args):
    """The parameters of the run's final checkpoint, as host arrays in leaf order."""
    import jnn
    from train.checkpoint import restore_state
    from train.runner import make_state

    config = _config(args)
    config["parallel"] = "none"  # the same arrays; restored onto one device here
    like = make_state(config, jnn.data.load("digits"))
    return jax.tree.leaves(jax.device_get(restore_state(summary["checkpoint"], like).params))


def _summary(workdir) -> dict:
    return json.loads((workdir / "summary.json").read_text())


def _resumed_from(lines) -> list[int]:
    return [int(m.group(1)) for line in lines
            for m in [re.fullmatch(r"resumed from step (\d+)", line)] if m]


def _assert_same_end(summary, workdir, args, baseline):
    whole, whole_params = baseline
    params = _final_params(summary, args)
    assert len(params) == len(whole_params)
    for a, b in zip(params, whole_params):
        np.testing.assert_array_equal(a, b)
    assert summary["test_loss"] == whole["test_loss"]
    assert summary["test_accuracy"] == whole["test_accuracy"]
    assert summary["steps"] == whole["steps"] and summary["epochs"] == whole["epochs"]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [r["step"] for r in whole["history"]]
    assert [r.get("val_loss") for r in records] == [r.get("val_loss") for r in whole["history"]]


def _start_pair(tmp_path, name, args, workdir):
    port = _free_port()
    return [_Run(tmp_path, f"{name}{i}", [*args, "--coordinator", f"127.0.0.1:{port}",
                                          "--num-processes", "2", "--process-id", str(i)],
                 workdir, devices=2) for i in range(2)]


# ----------------------------------------------------------------------- baselines
@pytest.fixture(scope="module")
def single_baseline(tmp_path_factory, digits):
    # `digits` prepares the dataset in $TFDS_DATA_DIR, which every process here then reads.
    tmp = tmp_path_factory.mktemp("single_baseline")
    run = _Run(tmp, "whole", SINGLE, tmp / "work")
    _wait([run])
    assert run.proc.returncode == 0, run.describe()
    summary = _summary(tmp / "work")
    assert summary["resumed_from_step"] is None and summary["steps"] == 54
    return summary, _final_params(summary, SINGLE)


@pytest.fixture(scope="module", params=sorted(SHARDED_VARIANTS))
def sharded_baseline(request, tmp_path_factory, digits):
    """(the flags, (summary, final parameters)) of an uninterrupted two-process run."""
    extra, steps = SHARDED_VARIANTS[request.param]
    args = [*SHARDED, *extra]
    tmp = tmp_path_factory.mktemp(f"sharded_baseline_{request.param}")
    runs = _start_pair(tmp, "whole", args, tmp / "work")
    _wait(runs)
    for run in runs:
        assert run.proc.returncode == 0, run.describe()
    summary = _summary(tmp / "work")
    assert summary["resumed_from_step"] is None and summary["steps"] == steps
    assert summary["processes"] == 2 and summary["devices"] == 4
    return args, (summary, _final_params(summary, args))


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("moment", sorted(KILL_MOMENTS))
def test_kill_9_at_a_real_moment_then_the_same_command_resumes_and_ends_bit_for_bit(
        tmp_path, single_baseline, moment):
    workdir = tmp_path / "work"
    first = _Run(tmp_path, "killed", SINGLE, workdir)
    try:
        _poll_until([first], lambda: KILL_MOMENTS[moment](workdir))
        first.proc.send_signal(signal.SIGKILL)  # whatever it is doing: a step, a save, ...
        first.proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        _kill_all([first])
    assert first.proc.returncode == -signal.SIGKILL
    at_kill = _listing(workdir)  # the process is gone: this is what it left
    (tmp_path / "at_kill.txt").write_text("\n".join(at_kill) + "\n")  # for a post-mortem
    complete = _steps(workdir)
    assert len(complete) >= 2 and max(complete) < 54, at_kill

    again = _Run(tmp_path, "again", SINGLE, workdir)
    _wait([again])
    assert again.proc.returncode == 0, again.describe()
    resumed = _resumed_from(again.stdout)
    damaged = [line for line in again.stdout if "cannot be read" in line]
    # the newest checkpoint the kill left is complete (orbax renames a finished save into
    # place), so the run goes on from there
    assert resumed == [max(complete)], (at_kill, damaged, again.describe())
    assert damaged == []
    summary = _summary(workdir)
    assert summary["resumed_from_step"] == max(complete)
    assert not _saving(workdir), _listing(workdir)  # the unfinished save was cleaned up
    _assert_same_end(summary, workdir, SINGLE, single_baseline)


def test_sigterm_stops_with_143_and_one_line_and_the_same_command_resumes_bit_for_bit(
        tmp_path, single_baseline):
    workdir = tmp_path / "work"
    first = _Run(tmp_path, "stopped", SINGLE, workdir)
    try:
        _poll_until([first], lambda: len(_steps(workdir)) >= 1)
        first.proc.send_signal(signal.SIGTERM)
        _wait([first])
    finally:
        _kill_all([first])
    assert first.proc.returncode == 128 + signal.SIGTERM == 143, first.describe()
    err = first.stderr
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and STOPPED.fullmatch(lines[0]), err
    stopped_at = int(STOPPED.fullmatch(lines[0]).group(1))
    assert 0 < stopped_at < 54
    assert _steps(workdir)[-1] == stopped_at  # it saved where it stopped
    assert not any(line.startswith("test accuracy") for line in first.stdout)

    again = _Run(tmp_path, "again", SINGLE, workdir)
    _wait([again])
    assert again.proc.returncode == 0, again.describe()
    assert _resumed_from(again.stdout) == [stopped_at], again.describe()
    assert "Traceback" not in again.stderr, again.stderr
    summary = _summary(workdir)
    assert summary["resumed_from_step"] == stopped_at
    _assert_same_end(summary, workdir, SINGLE, single_baseline)


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step_and_both_resume_from_it(
        tmp_path, sharded_baseline):
    args, baseline = sharded_baseline
    steps = baseline[0]["steps"]
    workdir = tmp_path / "work"
    first = _start_pair(tmp_path, "stopped", args, workdir)
    try:
        _poll_until(first, lambda: len(_steps(workdir)) >= 1)
        first[1].proc.send_signal(signal.SIGTERM)  # process 1 only; process 0 is not told
        _wait(first)
    finally:
        _kill_all(first)
    # both stop, at the same step (the first multiple of 10 after the signal), after saving
    for run in first:
        assert run.proc.returncode == 143, run.describe()
        assert "Traceback" not in run.stderr, run.describe()
    stops = []
    for run in first:
        matches = [STOPPED.fullmatch(line) for line in run.stderr.strip().splitlines()]
        assert [m for m in matches if m], run.describe()
        stops += [int(m.group(1)) for m in matches if m]
    assert len(stops) == 2 and stops[0] == stops[1], stops
    stopped_at = stops[0]
    assert stopped_at % 10 == 0 and 0 < stopped_at < steps, stopped_at
    assert _steps(workdir)[-1] == stopped_at
    assert first[1].stdout == []  # only process 0 reports

    again = _start_pair(tmp_path, "again", args, workdir)
    _wait(again)
    for run in again:
        assert run.proc.returncode == 0, run.describe()
        assert "Traceback" not in run.stderr, run.describe()
    assert _resumed_from(again[0].stdout) == [stopped_at], again[0].describe()
    assert again[1].stdout == []
    summary = _summary(workdir)
    assert summary["resumed_from_step"] == stopped_at and summary["processes"] == 2
    # the same two-process set-up as the uninterrupted run: bit for bit
    _assert_same_end(summary, workdir, args, baseline)
