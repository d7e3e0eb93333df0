"""StopRequests: when several processes share their stop flags (every multiple of
sync_every steps that a call of the train step reaches or passes)."""

import signal

import jax
import numpy as np
from jax.experimental import multihost_utils

from train.signals import StopRequests


def _two_processes(monkeypatch, other_signum=0):
    """Pretends to be process 0 of 2; the other process reports `other_signum`."""
    gathers = []

    def allgather(value):
        gathers.append(int(value))
        return np.asarray([int(value), other_signum])

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
    return gathers


def test_processes_share_their_flags_at_each_multiple_of_sync_every(monkeypatch):
    gathers = _two_processes(monkeypatch, other_signum=signal.SIGTERM)
    stop = StopRequests(sync_every=10)
    decisions = {step: stop.requested(step) for step in range(1, 21)}
    assert len(gathers) == 2  # at steps 10 and 20 only
    assert [s for s, d in decisions.items() if d] == [10, 20]  # the loop stops at 10
    assert stop.signum == signal.SIGTERM


def test_a_call_of_several_steps_that_passes_a_multiple_syncs_there(monkeypatch):
    gathers = _two_processes(monkeypatch)
    stop = StopRequests(sync_every=10)
    for step in (4, 8):  # calls of 4 steps: no multiple of 10 reached
        assert not stop.requested(step, 4)
    assert gathers == []
    stop.signum = signal.SIGINT  # this process is signalled
    assert not stop.requested(9, 1)
    assert stop.requested(13, 4)  # this call passed step 10: the flags are shared, all stop
    assert gathers == [signal.SIGINT]
    assert stop.requested(13)  # asked again after the same call: the same answer, no sync
    assert gathers == [signal.SIGINT]


def test_a_resumed_run_syncs_at_the_first_multiple_it_reaches(monkeypatch):
    gathers = _two_processes(monkeypatch)
    stop = StopRequests(sync_every=10)
    for step in (11, 15, 19):  # resumed at step 7, calls of 4 steps
        stop.requested(step, 4)
    assert len(gathers) == 1  # at 11, the first call past 10
