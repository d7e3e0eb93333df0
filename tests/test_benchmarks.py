"""The benchmark suite's measuring functions, records, peers and report (no timing asserted)."""

import json
import os

import jax
import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")

from benchmarks import __main__ as bench_main  # noqa: E402
from benchmarks import frameworks, models, plan, report, schema, timing, worker  # noqa: E402

SMALL_MODELS = ("mlp", "cnn", "cifar_cnn", "resmlp-2")


def test_step_times_runs_warmup_unmeasured_and_reports_ordered_stats():
    calls = []
    stats = timing.step_times(lambda: calls.append(1), warmup=3, repeats=5)
    assert len(calls) == 8
    assert 0 <= stats["step_ms_min"] <= stats["step_ms"] <= stats["step_ms_max"]


def test_compile_phases_returns_a_working_executable_and_three_phases():
    compiled, phases = timing.compile_phases(jax.jit(lambda x: x * 2), np.ones(3, np.float32))
    np.testing.assert_array_equal(compiled(np.ones(3, np.float32)), [2, 2, 2])
    assert set(phases) == {"trace_s", "lower_s", "compile_s"}
    assert all(v >= 0 for v in phases.values())


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
            "ensemble": ensemble, "batch": 16, "warmup": 1, "repeats": 2,
            "cache_dir": str(tmp_path)}
    records = worker.run(spec)
    assert [r["step"] for r in records] == ["train", "eval"]
    for r in records:
        assert schema.record_problems(r) == []
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


def _synthetic_results():
    records = []
    for fw, step_ms in (("jnn", 1.0), ("flax", 2.0), ("torch", 4.0)):
        for model in ("mlp", "resmlp-2", "resmlp-8"):
            records.append({"framework": fw, "model": model, "transform": "jit", "devices": 1,
                            "ensemble": 1, "batch": 128, "step": "train", "parameters": 1,
                            "trace_s": 0.1, "lower_s": 0.1, "compile_s": None if fw == "torch" else 0.3,
                            "compile_warm_s": 0.01, "step_ms": step_ms, "step_ms_min": step_ms,
                            "step_ms_max": step_ms, "examples_per_s": 128e3 / step_ms})
    for n in (1, 2):
        records.append({**records[0], "transform": "shard", "devices": n})
    return {"machine": {"cpu": "test", "cores": 2, "devices": ["cpu"], "versions": {}},
            "command": "python -m benchmarks", "settings": {"batch": 128, "warmup": 1, "repeats": 2},
            "records": records}


def test_the_report_gives_ratios_to_flax_and_torch_and_draws_three_plots(tmp_path):
    results = _synthetic_results()
    assert schema.results_problems(results) == []
    report.write_markdown(results, str(tmp_path / "results.md"))
    text = (tmp_path / "results.md").read_text()
    assert "| mlp | jnn | 1.00 | 0.50x | 0.25x | 0.50 | 1.00x | 0.01 |" in text
    paths = report.write_plots(results, str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == [
        "compile_vs_depth.png", "step_time.png", "throughput_vs_devices.png"]
    assert all(os.path.getsize(p) > 1000 for p in paths)


def test_schema_rejects_a_malformed_record():
    bad = {**_synthetic_results()["records"][0], "step_ms": "fast", "transform": "xmap"}
    problems = schema.record_problems(bad)
    assert any("step_ms" in p for p in problems) and any("xmap" in p for p in problems)


def test_quick_smoke_on_the_smallest_model_writes_all_outputs(tmp_path):
    assert bench_main.main(["--quick", "--only", "*/mlp/jit/*", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert schema.results_problems(results) == [] and results["parameter_count_problems"] == []
    assert {r["framework"] for r in results["records"]} == set(frameworks.FRAMEWORKS)
    assert not [r for r in results["records"] if r.get("error")]
    assert (tmp_path / "results.md").exists() and (tmp_path / "step_time.png").exists()


def test_an_only_pattern_that_matches_nothing_is_a_clear_error(capsys):
    assert bench_main.main(["--only", "nothing/*"]) == 2
    assert "matches no measurement" in capsys.readouterr().err


def test_report_only_redraws_from_an_existing_results_json(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps(_synthetic_results()))
    assert bench_main.main(["--report", str(tmp_path)]) == 0
    assert (tmp_path / "results.md").exists() and (tmp_path / "compile_vs_depth.png").exists()
    assert bench_main.main(["--report", str(tmp_path / "missing")]) == 2
    assert "run python -m benchmarks --out" in capsys.readouterr().err
