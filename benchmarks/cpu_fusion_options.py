"""`python -m benchmarks.cpu_fusion_options`: jnn's train and eval steps on the CPU compiled
with other lists of the kernels XLA hands to YNNPACK, against the ones jnn uses.

    python -m benchmarks.cpu_fusion_options --models mlp,resmlp-2,cnn --rounds 25
    python -m benchmarks.cpu_fusion_options --out benchmarks/results/cpu-2core-epyc-avx512

jnn compiles each step with options for its program (jnn/compiler_options.py says why): a
train step that computes convolutions with YNNPACK keeping single dots and reductions
(convolutions go to XLA's own kernels), its eval step with XLA's defaults, and a step
without convolutions with YNNPACK off. This measures, for each model, the step compiled with
jnn's choice and with each fixed list below, all in this process, timed in turns over
`--rounds` rounds whose order rotates (A B C, B C A, ...); a ratio is the median over
rounds of the variant's time over jnn's in the same round, with its spread. Every variant
must compute the same metrics as jnn's step from the same state, up to float rounding
(SAME_VALUES_RTOL; exit code 1 otherwise): the options pick kernels, not what is
computed. A fixed list can be the one jnn chose (ynn-off for a dense model): that row
times the same program twice, a measure of the noise.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

from benchmarks.report import publish_study
from jnn.compiler_options import (CPU_YNN_FUSION_OPTION as YNN_FUSION_TYPE,
                                  CPU_YNN_FUSION_TYPES)

XNN_FUSION_TYPE = "xla_cpu_experimental_xnn_fusion_type"

# (name, options) per step kind; the first of each, jnn's choice for the program (None:
# `jnn.train_compiler_options(jaxpr=...)` / `jnn.eval_compiler_options(jaxpr=...)`), is
# the baseline.
TRAIN_VARIANTS = (
    ("jnn", None),
    ("convolution-list", {YNN_FUSION_TYPE: CPU_YNN_FUSION_TYPES}),
    ("ynn-reduce-only", {YNN_FUSION_TYPE: "LIBRARY_FUSION_TYPE_REDUCE"}),
    ("ynn-off", {YNN_FUSION_TYPE: ""}),
    ("xnn-dot", {YNN_FUSION_TYPE: "", XNN_FUSION_TYPE: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}),
)
EVAL_VARIANTS = (
    ("jnn", None),
    ("xla-defaults", {}),
    ("ynn-off", {YNN_FUSION_TYPE: ""}),
    ("xnn-dot", {YNN_FUSION_TYPE: "", XNN_FUSION_TYPE: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}),
)
SAME_VALUES_RTOL = 1e-4
MIN_TIMED_S = 0.1  # per variant and round, at least 3 steps


def _compiled(models: list[str], batch_size: int):
    """{(model, kind, variant): (run, metrics, options)}: run() does one step, metrics are
    the step's outputs from the initial state (train: its metrics; eval: the eval step's),
    options what it was compiled with."""
    import jax
    import optax

    import jnn
    from benchmarks.frameworks import random_batch
    from benchmarks.frameworks.jnn_bench import make_model
    from benchmarks.models import model_spec

    steps = {}
    for name in models:
        x, y = random_batch(model_spec(name).input_shape, batch_size)
        batch = jax.device_put({"x": x, "y": y})
        state = jnn.create_train_state(make_model(name), optax.adam(1e-3),
                                       jax.random.PRNGKey(0), x[:1])
        for variant, options in TRAIN_VARIANTS:
            traced = jax.jit(jnn.make_train_step()).trace(state, batch)
            if options is None:
                options = jnn.train_compiler_options("cpu", jaxpr=traced.jaxpr)
            step = traced.lower().compile(options)
            metrics = jax.device_get(step(state, batch)[1])
            holder = {"state": state}

            def run(step=step, holder=holder, batch=batch):
                holder["state"], out = step(holder["state"], batch)
                jax.block_until_ready(out)

            steps[name, "train", variant] = (run, metrics, options)
        for variant, options in EVAL_VARIANTS:
            traced = jax.jit(jnn.make_eval_step()).trace(state, batch)
            if options is None:
                options = jnn.eval_compiler_options("cpu", jaxpr=traced.jaxpr)
            step = traced.lower().compile(options)

            def run(step=step, state=state, batch=batch):
                jax.block_until_ready(step(state, batch))

            steps[name, "eval", variant] = (run, jax.device_get(step(state, batch)), options)
    return steps


def _timed_ms(run) -> float:
    run()
    start, count = time.perf_counter(), 0
    while count < 3 or time.perf_counter() - start < MIN_TIMED_S:
        run()
        count += 1
    return (time.perf_counter() - start) / count * 1e3


def _same_values(a, b) -> bool:
    import jax

    return all(math.isclose(float(u), float(v), rel_tol=SAME_VALUES_RTOL, abs_tol=1e-6)
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def measure(models: list[str], rounds: int, batch_size: int = 128) -> dict:
    steps = _compiled(models, batch_size)
    keys = list(steps)
    times = {key: [] for key in keys}
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            times[key].append(_timed_ms(steps[key][0]))
    rows = []
    for name, kind, variant in keys:
        base = (name, kind, "jnn")
        ratios = [t / b for t, b in zip(times[name, kind, variant], times[base])]
        rows.append({"model": name, "step": kind, "variant": variant,
                     "step_ms": statistics.median(times[name, kind, variant]),
                     "ratio": statistics.median(ratios), "ratio_min": min(ratios),
                     "ratio_max": max(ratios), "options": steps[name, kind, variant][2],
                     "same_values": _same_values(steps[name, kind, variant][1],
                                                 steps[base][1])})
    return {"rounds": rounds, "batch": batch_size, "rows": rows,
            "variants": {"train": dict(TRAIN_VARIANTS), "eval": dict(EVAL_VARIANTS)}}


def markdown(result: dict, device: str) -> str:
    lines = [f"# jnn's steps with other YNNPACK fusion lists ({device})", "",
             "`python -m benchmarks.cpu_fusion_options`: step ms is the median over "
             f"{result['rounds']} interleaved rounds (batch {result['batch']}); ratio = the "
             "variant's time / jnn's in the same round, median [min-max]. Variants: "
             "`jnn` = jnn's options for the step's program (`jnn.train_compiler_options` / "
             "`jnn.eval_compiler_options` given its jaxpr); "
             + "; ".join(f"{kind} `{n}` = `{o}`" for kind in ("train", "eval")
                         for n, o in result["variants"][kind].items() if n != "jnn") + ".",
             "", "| model | step | variant | step ms | ratio | same values | options |",
             "|---|---|---|---:|---:|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['model']} | {row['step']} | {row['variant']} | "
                     f"{row['step_ms']:.3f} | {row['ratio']:.2f}x [{row['ratio_min']:.2f}-"
                     f"{row['ratio_max']:.2f}] | {'yes' if row['same_values'] else 'NO'} | "
                     f"`{row['options']}` |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_fusion_options",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,resmlp-2,cnn,cifar_cnn",
                        help="benchmark models, comma-separated (mlp, cnn, cifar_cnn, resmlp-D)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default=None,
                        help="write cpu_fusion_options.{json,md} into DIR")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    from benchmarks.models import model_spec

    models = args.models.split(",")
    for name in models:
        try:
            model_spec(name)
        except ValueError as error:
            parser.error(str(error))
    from train.unrolling import cap_full_unrolling

    cap_full_unrolling()  # as python -m train and the suite's jnn workers do
    import jax

    if jax.default_backend() != "cpu":
        parser.error(f"these are XLA:CPU options; jax's backend here is {jax.default_backend()}")
    result = measure(models, args.rounds)
    publish_study(result, markdown, args.out, "cpu_fusion_options")
    return 0 if all(row["same_values"] for row in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
