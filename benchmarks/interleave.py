"""Interleaved timing: the specs of one group (the frameworks of one model, say) each in its
own worker process, timed in turns, so that drift of the machine lands in all of them alike.

Every worker builds and compiles first, one after another (no compile shares the cores
with another process's work). Then, in each of `rounds` rounds, the workers time
spec["repeats"] train steps each, one worker at a time, then eval steps the same way; the
other workers wait idle on stdin. The order rotates by one each round (A B C, B C A,
C A B, ...), so no worker always follows the same one. A ratio between two specs is then
taken within each round, where both saw the same machine, and reported as the median of the
per-round ratios with their spread (report.step_ratio). Cold compile times are sampled the
same way: with spec["compile_rounds"] = K, each spec builds K - 1 more times, each in a
fresh process with an empty persistent cache, in rounds that rotate like the timing rounds
(round_compile_s, report.compile_ratio): one cold compile per framework is a single sample
of a noisy machine. Last, JAX-based frameworks and torch.compile build once more in a
fresh process on the filled persistent cache, for the warm compile time.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from typing import Callable, NoReturn

from benchmarks import frameworks, timing, worker
from benchmarks.plan import spec_name

WORKER_TIMEOUT_S = 900  # to build, or to answer one command


REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_path() -> str:
    """The worker's PYTHONPATH: the repository after the caller's own entries, so that
    `benchmarks` imports from any cwd (a worker's cwd, first on its path, may hold
    another jnn revision)."""
    return os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), REPOSITORY]))


class WorkerError(RuntimeError):
    """A worker exited, failed or did not answer in time."""


class WorkerProcess:
    """A `python -m benchmarks.worker` process for one spec, driven over its stdin/stdout.

    Starting it waits until the spec is built; `records` are then its train and eval
    records, step fields still empty.
    """

    def __init__(self, spec: dict, timeout_s: float = WORKER_TIMEOUT_S, cwd: str | None = None):
        self.spec, self.timeout_s = spec, timeout_s
        self._stderr = tempfile.TemporaryFile()
        self._received = b""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": _python_path()}, cwd=cwd)
        try:
            self.records = self._receive()["records"]
        except WorkerError:
            self.close()
            raise

    def time(self, step: str, *, warmup: int, repeats: int, min_ms: float = 0.0) -> list[float]:
        """Milliseconds of at least `repeats` timed `step` steps ("train" or "eval"), as many
        as add up to `min_ms`, after `warmup`."""
        command = {"step": step, "warmup": warmup, "repeats": repeats, "min_ms": min_ms}
        try:
            self._process.stdin.write((json.dumps(command) + "\n").encode())
            self._process.stdin.flush()
        except BrokenPipeError:
            self._fail()
        return self._receive()["step_ms"]

    def close(self) -> None:
        """Ends the worker (closing its stdin) and waits for it; a no-op the second time."""
        if self._process.stdin and not self._process.stdin.closed:
            try:
                self._process.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()
        self._stderr.close()

    def _receive(self) -> dict:
        """The next line the worker sends, as JSON."""
        fd = self._process.stdout.fileno()
        deadline = time.monotonic() + self.timeout_s
        while b"\n" not in self._received:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self._process.kill()
                raise WorkerError(f"worker timed out after {self.timeout_s:.0f} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self._fail()
            self._received += chunk
        line, _, self._received = self._received.partition(b"\n")
        return json.loads(line)

    def _fail(self) -> NoReturn:
        returncode = self._process.wait()
        self._stderr.seek(0)
        tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-1:]
        raise WorkerError(f"worker exited {returncode}: {(tail or ['no output'])[0][:300]}")


def _sample_cold_compiles(specs: list[dict], records: dict, rounds_ms: dict, errors: dict,
                          cache_root: str, start: Callable[[dict], WorkerProcess],
                          progress: Callable[[str], None]) -> None:
    """Fills each compiling record's round_compile_s: its own cold compile seconds, then
    one more per further round of spec["compile_rounds"], each from a fresh compile-only
    process with an empty cache, the specs' order rotating by round. A spec whose worker
    fails here goes into `errors`."""
    for i, spec_records in records.items():
        for record in spec_records:
            if record.get("compile_s") is not None:
                record["round_compile_s"] = [timing.cold_compile_s(record)]
    compile_rounds = max((specs[i].get("compile_rounds", 1) for i in records), default=1)
    for round_index in range(1, compile_rounds):
        progress(f"cold compile {round_index + 1}/{compile_rounds}")
        for i in rotated(list(records), round_index):
            if i in errors or specs[i].get("compile_rounds", 1) <= round_index or not any(
                    "round_compile_s" in record for record in records[i]):
                continue
            try:
                cold = start({**specs[i], "compile_only": True,
                              "cache_dir": tempfile.mkdtemp(dir=cache_root)})
                cold.close()
            except WorkerError as err:
                errors[i] = str(err)
                continue
            for record, cold_record in zip(records[i], cold.records):
                if "round_compile_s" in record:  # first-call frameworks: minus a timed step
                    cold_record = worker.finish(cold_record, rounds_ms[i][record["step"]])
                    record["round_compile_s"].append(timing.cold_compile_s(cold_record))


def rotated(items: list, round_index: int) -> list:
    """`items` starting at position round_index (mod their count): the order of a round."""
    shift = round_index % len(items) if items else 0
    return items[shift:] + items[:shift]


def measure_group(specs: list[dict], cache_root: str, *, rounds: int,
                  warm_frameworks: tuple[str, ...] = frameworks.JAX_FRAMEWORKS + ("torch-compile",),
                  start: Callable[[dict], WorkerProcess] = WorkerProcess,
                  progress: Callable[[str], None] = lambda message: None) -> list[dict]:
    """The train and eval records of each of `specs`, in order, timed interleaved over
    `rounds` rounds (the module docstring); compile_warm_s from a second process for
    `warm_frameworks`. A spec whose worker fails gets error records; the others go on.
    `start` makes a started worker of a spec (WorkerProcess; tests pass a fake)."""
    specs = [{**spec, "cache_dir": tempfile.mkdtemp(dir=cache_root)} for spec in specs]
    workers, errors = {}, {}
    for i, spec in enumerate(specs):
        progress(f"build {spec_name(spec)}")
        try:
            workers[i] = start(spec)
        except WorkerError as err:
            errors[i] = str(err)
    rounds_ms = {i: {step: [] for step in worker.STEPS} for i in workers}
    try:
        for round_index in range(rounds):
            progress(f"round {round_index + 1}/{rounds}")
            for step in worker.STEPS:
                for i in rotated(list(workers), round_index):
                    if i in errors:
                        continue
                    try:
                        rounds_ms[i][step].append(workers[i].time(
                            step, warmup=worker.warmup_steps(specs[i], round_index),
                            repeats=specs[i]["repeats"],
                            min_ms=specs[i].get("min_round_ms", 0.0)))
                    except WorkerError as err:
                        errors[i] = str(err)
    finally:
        for w in workers.values():
            w.close()

    records = {i: [worker.finish(record, rounds_ms[i][record["step"]])
                   for record in workers[i].records] for i in workers if i not in errors}
    _sample_cold_compiles(specs, records, rounds_ms, errors, cache_root, start, progress)
    for i in records:
        if specs[i]["framework"] not in warm_frameworks or i in errors:
            continue
        progress(f"warm compile {spec_name(specs[i])}")
        try:
            warm = start({**specs[i], "warm": True})
            warm.close()
        except WorkerError as err:
            errors[i] = str(err)
            continue
        for record, warm_record in zip(records[i], warm.records):
            record["compile_warm_s"] = warm_record["compile_s"]
    return [record for i, spec in enumerate(specs)
            for record in (worker.error_records(spec, errors[i]) if i in errors else records[i])]
