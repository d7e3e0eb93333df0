"""The benchmark suite's measuring functions, records, peers, interleaved rounds and report
(no timing asserted)."""

import io
import json
import os

import jax
import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")

from benchmarks import __main__ as bench_main  # noqa: E402
from benchmarks import (frameworks, interleave, models, plan, report, schema, timing,  # noqa: E402
                        worker)

pytestmark = pytest.mark.slow  # builds every framework (torch, keras, flax) in workers

SMALL_MODELS = ("mlp", "cnn", "cifar_cnn", "resmlp-2")


def test_time_steps_runs_warmup_unmeasured_and_times_each_repeat():
    calls = []
    times = timing.time_steps(lambda: calls.append(1), warmup=3, repeats=5)
    assert len(calls) == 8 and len(times) == 5 and all(t >= 0 for t in times)


def test_time_steps_goes_on_until_the_timed_steps_fill_min_ms():
    import time

    times = timing.time_steps(lambda: time.sleep(0.002), warmup=0, repeats=2, min_ms=30)
    assert sum(times) >= 30 and 2 < len(times) < 20 and sum(times[:-1]) < 30
    slow = timing.time_steps(lambda: time.sleep(0.02), warmup=0, repeats=3, min_ms=5)
    assert len(slow) == 3  # repeats is the floor


def test_step_stats_pool_every_round_and_keep_each_rounds_median():
    stats = timing.step_stats([[1.0, 2.0, 9.0], [10.0, 20.0]])
    assert stats == {"step_ms": 9.0, "step_ms_min": 1.0, "step_ms_max": 20.0,
                     "round_step_ms": [2.0, 15.0]}


def test_compile_phases_returns_a_working_executable_and_three_phases():
    compiled, phases = timing.compile_phases(jax.jit(lambda x: x * 2), np.ones(3, np.float32))
    np.testing.assert_array_equal(compiled(np.ones(3, np.float32)), [2, 2, 2])
    assert set(phases) == {"trace_s", "lower_s", "compile_s", "flops"}
    assert all(phases[k] >= 0 for k in ("trace_s", "lower_s", "compile_s"))


def test_compile_phases_compiles_with_the_options_of_the_traced_program():
    seen = []

    def options(traced):
        seen.append(traced.jaxpr)
        return {"xla_cpu_experimental_ynn_fusion_type": ""} if jax.default_backend() == "cpu" \
            else {}

    compiled, _ = timing.compile_phases(jax.jit(lambda x: x + 1), np.ones(3, np.float32),
                                        options=options)
    np.testing.assert_array_equal(compiled(np.ones(3, np.float32)), [2, 2, 2])
    assert [eqn.primitive.name for eqn in seen[0].eqns] == ["add"]
    with pytest.raises(ValueError, match=r"options= needs a function with \.trace"):
        timing.compile_phases(jax.pmap(lambda x: x + 1), np.ones((1, 3), np.float32),
                              options=options)


def test_the_jnn_worker_asks_an_older_jnn_for_the_options_it_has(monkeypatch):
    import jnn
    from benchmarks.frameworks import jnn_bench

    traced = jax.jit(lambda x: x * 2).trace(np.ones(3, np.float32))
    assert jnn_bench.options_for("train")(traced) == jnn.train_compiler_options(
        jaxpr=traced.jaxpr)
    monkeypatch.setattr(jnn, "train_compiler_options", lambda platform=None: {"marker": "1"})
    assert jnn_bench.options_for("train")(traced) == {"marker": "1"}
    monkeypatch.delattr(jnn, "eval_compiler_options")
    assert jnn_bench.options_for("eval") is None


def test_a_steps_flops_are_xlas_count_of_the_compiled_program():
    a = np.ones((64, 32), np.float32)
    b = np.ones((32, 16), np.float32)
    _, phases = timing.compile_phases(jax.jit(lambda a, b: a @ b), a, b)
    assert phases["flops"] == 2 * 64 * 32 * 16  # a multiply and an add per term


def test_the_report_reads_achieved_flops_against_the_measured_matmul_peak(tmp_path):
    results = _synthetic_results()
    results["machine"]["matmul_flops_per_s"] = [8e9, 10e9]
    for r in results["records"]:
        r["flops"] = 4e6 if r["framework"] == "jnn" else None  # jnn's step: 1 ms
    assert schema.results_problems(results) == []
    report.write_markdown(results, str(tmp_path / "results.md"))
    text = (tmp_path / "results.md").read_text()
    section = text[text.index("## How far from the hardware"):text.index("## jnn under")]
    assert "8.0, 10.0 GFLOP/s; the share below is of the higher, 10.0" in section
    # 4 MFLOP in 1 ms is 4 GFLOP/s, 40% of 10 GFLOP/s; flax has no count, so no row
    assert "| mlp | jnn | train | 0.004 | 0.004 | 4.0 | 40% |" in section
    assert "| flax |" not in section


def test_the_report_says_which_workers_made_the_harness_settings(tmp_path):
    def header(**settings):
        results = _synthetic_results()
        results["settings"].update(settings)
        report.write_markdown(results, str(tmp_path / "results.md"))
        return (tmp_path / "results.md").read_text().split("\n\n")[1]

    assert "freed memory" not in header() and "unrolling" not in header()  # older runs
    text = header(allocator="harness", unroll_cap="harness")
    assert "jnn's workers keep freed memory" in text
    assert "jnn's workers cap LLVM's full unrolling at 8 iterations" in text
    assert "the other JAX frameworks' workers unroll as LLVM does by default" in text
    assert "Every JAX framework's worker (jnn, flax, nnx, keras) caps" in header(unroll_cap="all")
    assert "No worker caps LLVM's full unrolling, jnn's neither" in header(unroll_cap="none")
    assert "Not applied" not in text


def test_achieved_flops_count_the_models_flops_where_a_scan_hides_them(tmp_path):
    """XLA counts a scanned stack's body once: the achieved rate divides the Flax step's count."""
    results = _synthetic_results()
    results["machine"]["matmul_flops_per_s"] = [10e9]
    for r in results["records"]:
        r["flops"] = {"jnn": 1e6, "flax": 8e6}.get(r["framework"])  # jnn 1 ms, flax 2 ms
    report.write_markdown(results, str(tmp_path / "results.md"))
    text = (tmp_path / "results.md").read_text()
    # jnn: 8 MFLOP in its 1 ms is 8 GFLOP/s; flax: 8 MFLOP in 2 ms
    assert "| mlp | jnn | train | 0.001 | 0.008 | 8.0 | 80% |" in text
    assert "| mlp | flax | train | 0.008 | 0.008 | 4.0 | 40% |" in text


def _count_parameters(framework, name):
    module = frameworks.get(framework)
    spec = models.model_spec(name)
    if framework == "jnn":
        import jnn

        params = module.make_model(name).init(jax.random.PRNGKey(0),
                                              np.zeros((1, *spec.input_shape)))["params"]
        return jnn.parameter_count(params)
    if framework == "flax":
        params = module.make_model(name).init(jax.random.PRNGKey(0),
                                              np.zeros((1, *spec.input_shape)))["params"]
        return sum(p.size for p in jax.tree.leaves(params))
    if framework == "nnx":
        from flax import nnx

        return sum(p.size for p in jax.tree.leaves(nnx.state(module.make_model(name), nnx.Param)))
    if framework == "keras":
        return module.make_model(name).count_params()
    return sum(p.numel() for p in module.make_model(name).parameters())


@pytest.mark.parametrize("name", SMALL_MODELS)
@pytest.mark.parametrize("framework", ["jnn", "flax", "nnx", "keras", "torch"])
def test_every_framework_builds_the_same_number_of_parameters(framework, name):
    assert _count_parameters(framework, name) == models.expected_parameter_count(name)


@pytest.mark.parametrize("transform,devices,ensemble", [("jit", 1, 1), ("vmap", 1, 3),
                                                        ("shard", 4, 1), ("pmap", 2, 1)])
def test_a_tiny_model_through_each_record_type(tmp_path, transform, devices, ensemble):
    spec = {"framework": "jnn", "model": "mlp", "transform": transform, "devices": devices,
            "ensemble": ensemble, "batch": 16, "warmup": 1, "repeats": 2, "rounds": 2,
            "cache_dir": str(tmp_path)}
    records = worker.run(spec)
    assert [r["step"] for r in records] == ["train", "eval"]
    for r in records:
        assert schema.record_problems(r) == []
        assert len(r["round_step_ms"]) == 2
        assert r["examples_per_s"] == pytest.approx(16 * ensemble / (r["step_ms"] / 1e3))
        assert r["compile_s"] > 0
        # jax.pmap has .lower but no .trace: its trace time is inside lower_s
        assert r["trace_s"] is None if transform == "pmap" else r["trace_s"] > 0


def test_first_call_frameworks_report_compile_as_first_call_minus_a_step(tmp_path):
    spec = {"framework": "keras", "model": "mlp", "transform": "jit", "devices": 1,
            "ensemble": 1, "batch": 16, "warmup": 1, "repeats": 2, "cache_dir": str(tmp_path)}
    train, _ = worker.run(spec)
    assert train["trace_s"] is None and train["compile_s"] > 0 and train["step_ms"] > 0


def test_torch_eager_reports_no_compile_time(tmp_path):
    spec = {"framework": "torch", "model": "mlp", "transform": "jit", "devices": 1,
            "ensemble": 1, "batch": 16, "warmup": 1, "repeats": 2, "cache_dir": str(tmp_path)}
    train, evaluate = worker.run(spec)
    assert train["compile_s"] is None and evaluate["compile_s"] is None
    assert train["parameters"] == models.expected_parameter_count("mlp")


def test_the_plan_covers_every_framework_on_the_seed_models_and_filters_by_pattern():
    full = plan.make_plan(quick=False)
    for model in plan.SEED_MODELS:
        assert {s["framework"] for s in full if s["model"] == model} == set(frameworks.FRAMEWORKS)
    assert {s["model"] for s in full} >= {f"resmlp-{d}" for d in (2, 8, 32, 128)}
    assert {(s["transform"], s["devices"]) for s in full if s["transform"] in ("pmap", "shard")} \
        == {(t, n) for t in ("pmap", "shard") for n in (1, 2, 4, 8)}
    assert {s["ensemble"] for s in full if s["transform"] == "vmap"} == {1, 4, 16}
    only = plan.make_plan(quick=True, only="*/mlp/jit/*")
    assert {s["framework"] for s in only} == set(frameworks.FRAMEWORKS)
    assert all(s["model"] == "mlp" for s in only)


def test_the_plan_times_each_model_and_transform_as_one_group_of_rounds():
    assert {s["rounds"] for s in plan.make_plan(quick=True)} == {plan.QUICK_TIMING["rounds"]}
    assert {s["rounds"] for s in plan.make_plan(quick=False)} == {plan.FULL_TIMING["rounds"]}
    assert {s["rounds"] for s in plan.make_plan(quick=True, rounds=7)} == {7}
    specs = plan.make_plan(quick=False)
    groups = plan.groups(specs)
    assert sorted(map(plan.spec_name, sum(groups, []))) == sorted(map(plan.spec_name, specs))
    for group in groups:
        assert len({(s["model"], s["transform"]) for s in group}) == 1
    by_key = {(g[0]["model"], g[0]["transform"]): g for g in groups}
    assert [s["framework"] for s in by_key["cnn", "jit"]] == list(frameworks.FRAMEWORKS)
    assert [s["devices"] for s in by_key["cnn", "shard"]] == [1, 2, 4, 8]
    assert [s["ensemble"] for s in by_key["mlp", "vmap"]] == [1, 4, 16]


def test_the_plan_compiles_the_seed_models_cold_more_often_than_the_deep_models():
    def cold_compiles(**kwargs):
        return {(s["model"], s["transform"]): s["compile_rounds"]
                for s in plan.make_plan(**kwargs)}

    full = cold_compiles(quick=False)
    assert {full[m, "jit"] for m in plan.SEED_MODELS} == {plan.FULL_SEED_COMPILE_ROUNDS}
    assert {full[f"resmlp-{d}", "jit"] for d in plan.FULL_DEPTHS} == {plan.FULL_COMPILE_ROUNDS}
    assert plan.FULL_SEED_COMPILE_ROUNDS > plan.FULL_COMPILE_ROUNDS > 1
    assert {n for (m, t), n in full.items() if t != "jit"} == {1}
    assert set(cold_compiles(quick=True).values()) == {plan.QUICK_COMPILE_ROUNDS}
    assert set(cold_compiles(quick=False, compile_rounds=2).values()) == {1, 2}


@pytest.fixture
def configure_quietly(monkeypatch):
    """worker._configure without its side effects on this process: no persistent-cache
    folder set, and the environment variables it sets restored after the test."""
    monkeypatch.setattr(jax.config, "update", lambda *args: None)
    for name in ("TORCHINDUCTOR_CACHE_DIR", "KERAS_BACKEND"):
        monkeypatch.setenv(name, os.environ.get(name, ""))


@pytest.mark.parametrize("option, spec_key, module, function, under_all", [
    ("allocator", "keep_freed_memory", "allocator", "keep_freed_memory", frameworks.FRAMEWORKS),
    # an XLA setting: not torch's
    ("unroll_cap", "cap_full_unrolling", "unrolling", "cap_full_unrolling",
     frameworks.JAX_FRAMEWORKS)])
def test_jnn_alone_gets_a_harness_setting_unless_the_run_says_all_or_none(
        option, spec_key, module, function, under_all, configure_quietly, monkeypatch,
        tmp_path):
    import importlib

    def getting(choice):
        specs = plan.make_plan(quick=True, only="*/mlp/jit/*", **{option: choice})
        return {s["framework"] for s in specs if s[spec_key]}

    assert getting("harness") == {"jnn"}
    assert getting("all") == set(under_all)
    assert getting("none") == set()
    with pytest.raises(ValueError, match=f"{option} must be one of"):
        plan.make_plan(quick=True, **{option: "always"})
    calls = []
    monkeypatch.setattr(importlib.import_module(f"train.{module}"), function,
                        lambda: calls.append(1))
    for on in (False, True):
        assert worker._configure({"devices": 1, "cache_dir": str(tmp_path), spec_key: on}) == {}
    assert calls == [1]


def test_a_setting_the_worker_could_not_make_reaches_its_records_and_the_report(
        configure_quietly, monkeypatch, tmp_path):
    from train import unrolling

    monkeypatch.setattr(unrolling, "cap_full_unrolling", lambda: "jax may compute on a GPU")
    spec = {"devices": 1, "cache_dir": str(tmp_path), "cap_full_unrolling": True,
            "compile_only": True}
    refused = worker._configure(spec)
    assert refused == {"cap_full_unrolling": "jax may compute on a GPU"}
    built = [{"framework": "jnn", "step": step} for step in ("train", "eval")]
    monkeypatch.setattr(worker, "prepare", lambda spec: (None, built))
    replies = io.StringIO()
    worker.serve(spec, io.StringIO(), replies, refused)
    sent = json.loads(replies.getvalue())["records"]
    assert [r["refused"] for r in sent] == [refused, refused]
    results = _synthetic_results()
    for record in results["records"]:
        if record["framework"] == "jnn":
            record["refused"] = refused
    assert schema.results_problems(results) == []
    report.write_markdown(results, str(tmp_path / "results.md"))
    assert ("Not applied, though asked for: jnn's capping LLVM's full unrolling (jax may "
            "compute on a GPU).") in (tmp_path / "results.md").read_text()
    results["records"][0]["refused"] = {"cap_full_unrolling": 1}
    assert any("refused=" in p for p in schema.results_problems(results))


class FakeWorker:
    """Stands in for interleave.WorkerProcess: logs what it is asked; keras fails to build
    and torch fails in the second round. Its steps take as many ms as log entries so far.
    A cold compile-only build takes 3 s to compile (torch.compile: a 5 s first call), and
    fails for the frameworks in `fail_cold`."""

    log: list = []
    cache_dirs: list = []
    fail_cold: tuple = ()

    def __init__(self, spec):
        self.spec, self.warm = spec, spec.get("warm", False)
        self.cache_dirs.append(spec["cache_dir"])
        cold = spec.get("compile_only", False)
        self.log.append(("start", spec["framework"], "cold" if cold else self.warm))
        if spec["framework"] == "keras" or (cold and spec["framework"] in self.fail_cold):
            raise interleave.WorkerError("worker exited 1: ValueError: boom")
        self.records = [{**{k: spec[k] for k in worker.IDENTITY}, "step": step,
                         "parameters": 1, "trace_s": None, "lower_s": None,
                         "compile_s": 0.1 if self.warm else 3.0 if cold else 2.0,
                         "compile_warm_s": None, "step_ms": None, "step_ms_min": None,
                         "step_ms_max": None, "examples_per_s": None, "round_step_ms": None}
                        for step in worker.STEPS]
        if cold and spec["framework"] == "torch-compile":  # compiles on its first call
            for record in self.records:
                record.update(compile_s=None, first_call_s=5.0)

    def time(self, step, *, warmup, repeats, min_ms=0.0):
        assert min_ms == self.spec["min_round_ms"]  # the plan's floor reaches the worker
        self.log.append((self.spec["framework"], step, warmup))
        if self.spec["framework"] == "torch" and sum(e[0] == "torch" for e in self.log) > 2:
            raise interleave.WorkerError("worker exited -9: killed")
        return [float(len(self.log))] * repeats

    def close(self):
        self.log.append(("close", self.spec["framework"], self.warm))


def test_the_orchestrator_builds_all_then_alternates_workers_round_by_round(tmp_path):
    FakeWorker.log = []
    specs = plan.make_plan(quick=True, only="*/mlp/jit/*")  # jnn flax nnx keras torch tc
    records = interleave.measure_group(specs, str(tmp_path), rounds=3, start=FakeWorker,
                                       warm_frameworks=("jnn", "flax"))
    log = FakeWorker.log
    assert log[:6] == [("start", s["framework"], False) for s in specs]  # all built first
    timed = [e for e in log if e[0] not in ("start", "close")]
    running = ["jnn", "flax", "nnx", "torch", "torch-compile"]  # keras failed to build
    expected = []
    for r in range(3):
        order = running[r % 5:] + running[:r % 5]  # rotates each round
        for s, step in enumerate(("train", "eval")):  # torch fails when asked in round 1's train
            expected += [(fw, step, 3 if r == 0 else 1) for fw in order
                         if fw != "torch" or (r, s) <= (1, 0)]
    assert timed == expected
    # every worker was closed before the warm-cache builds, which are of jnn and flax only
    first_warm = log.index(("start", "jnn", True))
    assert sum(e[0] == "close" for e in log[:first_warm]) == 5
    assert [e for e in log[first_warm:] if e[0] == "start"] == [("start", "jnn", True),
                                                                 ("start", "flax", True)]
    assert [(r["framework"], r["step"]) for r in records] == [
        (s["framework"], step) for s in specs for step in ("train", "eval")]
    for r in records:
        assert schema.record_problems(r) == []
        assert bool(r.get("error")) == (r["framework"] in ("keras", "torch"))
        if not r.get("error"):
            assert len(r["round_step_ms"]) == 3
            assert r["compile_warm_s"] == (0.1 if r["framework"] in ("jnn", "flax") else None)
    assert "boom" in records[6]["error"] and "killed" in records[8]["error"]


def test_cold_compiles_are_sampled_in_fresh_processes_in_rotating_rounds(tmp_path):
    FakeWorker.log, FakeWorker.cache_dirs, FakeWorker.fail_cold = [], [], ("nnx",)
    specs = [s for s in plan.make_plan(quick=True, only="*/mlp/jit/*", compile_rounds=3)
             if s["framework"] in ("jnn", "flax", "nnx", "torch-compile")]
    try:
        records = interleave.measure_group(specs, str(tmp_path), rounds=2, start=FakeWorker,
                                           warm_frameworks=("jnn",))
    finally:
        FakeWorker.fail_cold = ()
    starts = [e[1:] for e in FakeWorker.log if e[0] == "start"]
    running = ["jnn", "flax", "nnx", "torch-compile"]
    assert starts == [(fw, False) for fw in running] + [  # the timed builds, then
        (fw, "cold") for fw in ["flax", "nnx", "torch-compile", "jnn"]] + [  # round 2
        (fw, "cold") for fw in ["torch-compile", "jnn", "flax"]] + [  # round 3 (nnx failed)
        ("jnn", True)]  # then the warm-cache build
    by_framework = {(r["framework"], r["step"]): r for r in records}
    for step in worker.STEPS:
        for fw in ("jnn", "flax"):
            r = by_framework[fw, step]
            assert r["round_compile_s"] == [2.0, 3.0, 3.0] and schema.record_problems(r) == []
            assert report.compile_total(r) == 3.0  # the median of the cold compiles
        compiled = by_framework["torch-compile", step]
        # a first-call framework's cold compile is its first call minus its timed step
        assert compiled["round_compile_s"] == pytest.approx(
            [2.0] + [5.0 - compiled["step_ms"] / 1e3] * 2)
        assert "boom" in by_framework["nnx", step]["error"]
    cold_dirs = FakeWorker.cache_dirs[4:-1]  # a cold build's cache is new and its own;
    assert len(set(cold_dirs)) == 7 and not set(cold_dirs) & set(FakeWorker.cache_dirs[:4])
    assert FakeWorker.cache_dirs[-1] == FakeWorker.cache_dirs[0]  # the warm one is filled


def test_a_compile_only_worker_sends_its_build_records_and_exits(tmp_path):
    import io

    spec = {"framework": "jnn", "model": "mlp", "transform": "jit", "devices": 1,
            "ensemble": 1, "batch": 16, "warmup": 1, "repeats": 2, "cache_dir": str(tmp_path),
            "compile_only": True}
    replies = io.StringIO()

    class NoCommands(io.StringIO):
        def readline(self, *args):
            raise AssertionError("a compile-only worker reads no commands")

    worker.serve(spec, NoCommands(), replies)
    train, evaluate = json.loads(replies.getvalue())["records"]
    assert train["step"] == "train" and evaluate["step"] == "eval"
    assert timing.cold_compile_s(train) > 0 and train["step_ms"] is None


def test_a_worker_that_fails_in_its_own_process_gives_error_records(tmp_path):
    spec = {**plan.make_plan(quick=True, only="torch/mlp/jit/*")[0], "framework": "nope"}
    records = interleave.measure_group([spec], str(tmp_path), rounds=2)
    assert [r["step"] for r in records] == ["train", "eval"]
    assert "unknown framework 'nope'" in records[0]["error"]


def _synthetic_results():
    """jnn takes half of flax's time and a quarter of torch's, in rounds where the machine
    drifts (round 1 twice as slow) and jnn is slower in round 2."""
    records = []
    for fw, rounds in (("jnn", [1.0, 2.0, 1.2]), ("flax", [2.0, 4.0, 2.0]),
                       ("torch", [4.0, 8.0, 4.0])):
        step_ms = rounds[0]
        for model in ("mlp", "resmlp-2", "resmlp-8"):
            records.append({"framework": fw, "model": model, "transform": "jit", "devices": 1,
                            "ensemble": 1, "batch": 128, "step": "train", "parameters": 1,
                            "trace_s": 0.1, "lower_s": 0.1, "compile_s": None if fw == "torch" else 0.3,
                            "compile_warm_s": 0.01, "step_ms": step_ms, "step_ms_min": step_ms,
                            "step_ms_max": step_ms, "examples_per_s": 128e3 / step_ms,
                            "round_step_ms": rounds})
    for n in (1, 2):
        records.append({**records[0], "transform": "shard", "devices": n})
    return {"machine": {"cpu": "test", "cores": 2, "devices": ["cpu"], "versions": {}},
            "command": "python -m benchmarks",
            "settings": {"batch": 128, "warmup": 1, "repeats": 2, "rounds": 3},
            "records": records}


def test_a_step_ratio_is_the_median_of_per_round_ratios_with_their_spread():
    jnn = {"step_ms": 3.0, "round_step_ms": [1.0, 4.0, 3.0]}
    flax = {"step_ms": 2.0, "round_step_ms": [2.0, 8.0, 2.0]}
    # per round 0.5, 0.5, 1.5: median 0.5 (the ratio of the overall medians would be 1.5)
    assert report.step_ratio(jnn, flax) == (0.5, 0.5, 1.5)
    assert report.step_ratio(flax, flax) == (1.0, 1.0, 1.0)
    # without rounds (results from before them): the ratio of step_ms, no spread
    assert report.step_ratio({"step_ms": 3.0}, flax) == (1.5, 1.5, 1.5)
    assert report.step_ratio(jnn, None) is None and report.step_ratio(None, flax) is None


def test_a_compile_ratio_is_the_median_of_per_round_ratios_of_cold_compiles():
    jnn = {"trace_s": 0.1, "lower_s": 0.1, "compile_s": 0.3, "round_compile_s": [0.5, 2.0, 0.6]}
    flax = {"trace_s": 0.1, "lower_s": 0.1, "compile_s": 0.8, "round_compile_s": [1.0, 1.0, 2.0]}
    assert report.compile_total(jnn) == 0.6 and report.compile_total(flax) == 1.0
    # per round 0.5, 2.0, 0.3: median 0.5, spread 0.3-2.0
    assert report.compile_ratio(jnn, flax) == (0.5, 0.3, 2.0)
    # one cold compile (results from before compile rounds): trace + lower + compile
    assert report.compile_ratio({**jnn, "round_compile_s": None}, {**flax, "round_compile_s": None}) \
        == pytest.approx((0.5, 0.5, 0.5))
    assert report.compile_ratio({"compile_s": None}, flax) is None  # torch eager


def test_the_report_gives_ratios_to_flax_and_torch_and_draws_three_plots(tmp_path):
    results = _synthetic_results()
    assert schema.results_problems(results) == []
    report.write_markdown(results, str(tmp_path / "results.md"))
    text = (tmp_path / "results.md").read_text()
    assert "| mlp | jnn | 1.00 | 0.50x (0.50–0.60) | 0.25x (0.25–0.30) | 0.50 | 1.00x | 0.01 |" \
        in text
    assert "| mlp | flax | 2.00 | 1.00x | 0.50x | 0.50 | 1.00x | 0.01 |" in text
    assert "3 rounds of 2 timed steps" in text
    assert "median of 3 cold compiles" not in text  # this run compiled once
    for r in results["records"]:  # three cold compiles each: jnn's twice flax's in round 2
        if r["compile_s"] is not None:
            r["round_compile_s"] = {"jnn": [0.5, 1.0, 0.4], "flax": [1.0, 0.5, 1.0]}[r["framework"]]
    results["settings"]["compile_rounds"] = 3
    report.write_markdown(results, str(tmp_path / "results.md"))
    text = (tmp_path / "results.md").read_text()
    assert "median of 3 cold compiles" in text
    deep = [{**r, "model": "resmlp-1000", "round_compile_s": r["round_compile_s"][:2]}
            for r in results["records"] if r["model"] == "mlp" and r["transform"] == "jit"
            and r.get("round_compile_s")]
    report.write_markdown({**results, "records": results["records"] + deep},
                          str(tmp_path / "mixed.md"))
    mixed = (tmp_path / "mixed.md").read_text()
    assert "median of 3 (mlp, " in mixed and "), 2 (resmlp-1000) cold compiles" in mixed
    assert "| mlp | jnn | 1.00 | 0.50x (0.50–0.60) | 0.25x (0.25–0.30) | 0.50 | 0.50x (0.40–2.00) |" \
        in text
    assert "| mlp | flax | 1.00 | 0.50 | 2.00x (0.50–2.50) |" in text  # flax over jnn
    paths = report.write_plots(results, str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == [
        "compile_vs_depth.png", "step_time.png", "throughput_vs_devices.png"]
    assert all(os.path.getsize(p) > 1000 for p in paths)


def test_results_from_before_rounds_still_report_plain_ratios(tmp_path):
    results = _synthetic_results()
    del results["settings"]["rounds"]
    for r in results["records"]:
        del r["round_step_ms"]
    assert schema.results_problems(results) == []
    report.write_markdown(results, str(tmp_path / "results.md"))
    text = (tmp_path / "results.md").read_text()
    assert "| mlp | jnn | 1.00 | 0.50x | 0.25x | 0.50 | 1.00x | 0.01 |" in text
    assert "2 timed steps after 1 warm-up steps" in text


def test_schema_rejects_a_malformed_record():
    bad = {**_synthetic_results()["records"][0], "step_ms": "fast", "transform": "xmap",
           "round_step_ms": [1.0, "slow"]}
    problems = schema.record_problems(bad)
    assert any(p.startswith("step_ms=") for p in problems) and any("xmap" in p for p in problems)
    assert any("round_step_ms" in p for p in problems)


@pytest.mark.slow  # six worker processes, torch.compile's cold compile
def test_quick_smoke_on_the_smallest_model_writes_all_outputs(tmp_path):
    # jnn, flax, torch eager and torch.compile (a first-call framework): every kind of worker
    # path; nnx and keras build in test_every_framework_builds_the_same_number_of_parameters
    assert bench_main.main(["--quick", "--only", "[jft]*/mlp/jit/*", "--out",
                            str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert schema.results_problems(results) == [] and results["parameter_count_problems"] == []
    assert {r["framework"] for r in results["records"]} == {"jnn", "flax", "torch",
                                                            "torch-compile"}
    assert not [r for r in results["records"] if r.get("error")]
    assert all(len(r["round_step_ms"]) == plan.QUICK_TIMING["rounds"]  # 5 with --quick
               for r in results["records"])
    assert (tmp_path / "results.md").exists() and (tmp_path / "step_time.png").exists()


def test_an_only_pattern_that_matches_nothing_is_a_clear_error(capsys):
    assert bench_main.main(["--only", "nothing/*"]) == 2
    assert "matches no measurement" in capsys.readouterr().err
    for flag in ("--rounds", "--compile-rounds"):
        with pytest.raises(SystemExit):
            bench_main.main([flag, "0"])
        assert f"{flag} must be at least 1" in capsys.readouterr().err


def test_report_only_redraws_from_an_existing_results_json(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps(_synthetic_results()))
    assert bench_main.main(["--report", str(tmp_path)]) == 0
    assert (tmp_path / "results.md").exists() and (tmp_path / "compile_vs_depth.png").exists()
    assert bench_main.main(["--report", str(tmp_path / "missing")]) == 2
    assert "run python -m benchmarks --out" in capsys.readouterr().err


@pytest.mark.slow  # two worker processes, one importing jnn as extracted from git
def test_versus_revision_times_a_revision_against_the_working_tree(tmp_path, capsys):
    from benchmarks import versus_revision

    out = tmp_path / "vs.md"
    assert versus_revision.main(["HEAD", "--models", "mlp", "--rounds", "2", "--quick",
                                 "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| mlp |")]
    assert [row.split(" | ")[1] for row in rows] == ["train", "eval"]
    for row in rows:
        cells = row.strip("|").split("|")
        then_ms, now_ms = float(cells[2]), float(cells[3])
        assert then_ms > 0 and now_ms > 0 and "x (" in cells[4] and "x (" in cells[7]


def test_compare_runs_gives_each_ratio_in_both_runs_and_their_difference(tmp_path, capsys):
    from benchmarks import compare_runs

    first = _synthetic_results()
    second = _synthetic_results()
    for r in second["records"]:
        if r["framework"] == "jnn":  # jnn 10% slower in every round of the second run
            r["round_step_ms"] = [v * 1.1 for v in r["round_step_ms"]]
            r["step_ms"] *= 1.1
    for r in first["records"] + second["records"]:
        r["model"] = {"resmlp-2": "cnn", "resmlp-8": "cifar_cnn"}.get(r["model"], r["model"])
        if r["compile_s"] is not None:  # jnn compiles in 0.5 s, then 0.6 s; flax in 1 s
            r["round_compile_s"] = [1.0, 1.0] if r["framework"] == "flax" else [0.5, 0.5]
            if r["framework"] == "jnn" and r in second["records"]:
                r["round_compile_s"] = [0.6, 0.6]
    rows = compare_runs.ratio_differences(first["records"], second["records"])
    assert {(r["model"], r["measure"], r["peer"]) for r in rows} == {
        (m, "step time", p) for m in ("mlp", "cnn", "cifar_cnn") for p in ("flax", "torch")} | {
        (m, "compile", "flax") for m in ("mlp", "cnn", "cifar_cnn")}  # torch eager: no compile
    mlp_flax = [r for r in rows if r["model"] == "mlp" and r["peer"] == "flax"]
    assert mlp_flax[0]["first"] == (0.5, 0.5, 0.6)
    assert abs(mlp_flax[0]["difference"] - 0.1) < 1e-9
    assert mlp_flax[1]["measure"] == "compile" and mlp_flax[1]["first"] == (0.5, 0.5, 0.5)
    assert abs(mlp_flax[1]["difference"] - 0.2) < 1e-9
    paths = []
    for name, results in (("a.json", first), ("b.json", second)):
        (tmp_path / name).write_text(json.dumps(results))
        paths.append(str(tmp_path / name))
    assert compare_runs.main(paths + ["--out", str(tmp_path / "cmp.md")]) == 0
    text = (tmp_path / "cmp.md").read_text()
    assert "| mlp | step time | train | flax | 0.50x (0.50–0.60) | 0.55x (0.55–0.66) | +10% |" \
        in text
    assert "Largest difference in step time: +10%" in text
    assert "Largest difference in compile: +20% (mlp train, jnn / flax)" in text
    assert "unlike machines" not in text
    assert compare_runs.main([str(tmp_path / "missing.json"), paths[1]]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_compare_runs_says_when_the_two_runs_come_from_unlike_machines(tmp_path):
    from benchmarks import compare_runs

    first = {"cpu": "A", "vector_isa": "avx512", "cores": 2, "matmul_flops_per_s": [300e9, 320e9],
             "versions": {"jax": "1", "torch": "2"}}
    assert compare_runs.machine_differences(first, dict(first)) == []
    # within 25% of the matmul throughput, and an ISA not recorded: alike
    assert compare_runs.machine_differences(first, {**first, "vector_isa": "unknown",
                                                    "matmul_flops_per_s": [250e9]}) == []
    second = {**first, "vector_isa": "avx2", "matmul_flops_per_s": [118e9],
              "versions": {"jax": "1", "torch": "3"}}
    assert compare_runs.machine_differences(first, second) == [
        "vector instructions avx512 vs avx2", "matmul 310 vs 118 GFLOP/s",
        "versions of torch (2 vs 3)"]
    paths = []
    for name, machine in (("a.json", first), ("b.json", second)):
        (tmp_path / name).write_text(json.dumps({**_synthetic_results(), "machine": machine}))
        paths.append(str(tmp_path / name))
    assert compare_runs.main(paths + ["--out", str(tmp_path / "cmp.md")]) == 0
    assert ("unlike machines (vector instructions avx512 vs avx2; matmul 310 vs 118 GFLOP/s"
            in (tmp_path / "cmp.md").read_text())


def test_the_machine_record_names_the_widest_vector_instructions():
    from benchmarks import machine

    assert machine.vector_isa({"sse4_2", "avx", "avx2", "fma"}) == "avx2"
    assert machine.vector_isa({"avx2", "avx512f", "avx512bw"}) == "avx512"
    assert machine.vector_isa({"fp", "asimd"}) == "neon"
    assert machine.vector_isa(set()) == "unknown"
    assert machine.describe()["vector_isa"] == machine.vector_isa()


def test_steps_per_call_benchmark_times_each_value_against_one_and_checks_the_same_run(
        tmp_path, capsys):
    from benchmarks import steps_per_call

    assert steps_per_call.main(["--configs", "digits_mlp", "--values", "1,3", "--rounds", "1",
                                "--epochs", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "steps_per_call.json").read_text())
    rows = {row["steps_per_call"]: row for row in result["rows"]}
    assert sorted(rows) == [1, 3] and rows[1]["ratio"] == 1.0
    assert rows[3]["same_run"] and rows[3]["train_time_s"] > 0
    assert "| digits_mlp | 3 |" in (tmp_path / "steps_per_call.md").read_text()
    with pytest.raises(SystemExit):
        steps_per_call.main(["--values", "0"])


def test_cpu_fusion_options_times_each_variant_against_jnn_and_checks_the_same_values(
        tmp_path, capsys):
    from benchmarks import cpu_fusion_options as fusion

    assert fusion.main(["--models", "mlp", "--rounds", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "cpu_fusion_options.json").read_text())
    rows = {(row["step"], row["variant"]): row for row in result["rows"]}
    assert set(rows) == ({("train", n) for n, _ in fusion.TRAIN_VARIANTS}
                         | {("eval", n) for n, _ in fusion.EVAL_VARIANTS})
    assert rows["train", "jnn"]["ratio"] == 1.0 and rows["eval", "jnn"]["ratio"] == 1.0
    # jnn's choice for a program without convolutions: YNNPACK off, train and eval
    assert rows["train", "jnn"]["options"] == rows["train", "ynn-off"]["options"]
    assert rows["eval", "jnn"]["options"] == rows["eval", "ynn-off"]["options"]
    assert all(row["same_values"] and row["step_ms"] > 0 for row in rows.values())
    assert "| mlp | train | ynn-off |" in (tmp_path / "cpu_fusion_options.md").read_text()
    for bad in (["--models", "mlpp"], ["--rounds", "0"]):
        with pytest.raises(SystemExit):
            fusion.main(bad)


def test_cpu_fusion_options_flags_a_variant_whose_values_differ():
    from benchmarks.cpu_fusion_options import _same_values

    assert _same_values({"loss": (1.0, 2.0)}, {"loss": (1.0 + 1e-6, 2.0)})
    assert not _same_values({"loss": (1.0, 2.0)}, {"loss": (1.01, 2.0)})
