"""results.md (tables with ratios to the hand-written Flax step and to PyTorch eager) and
the PNG plots, from the records of one run. A step-time ratio is the median of its
per-round ratios, with their min-max (`step_ratio`); so is a compile-time ratio, over the
rounds of cold compiles (`compile_ratio`)."""

from __future__ import annotations

import os
import statistics

from benchmarks.frameworks import JAX_FRAMEWORKS
from benchmarks.timing import cold_compile_s

FRAMEWORK_ORDER = ("jnn", "flax", "nnx", "keras", "torch", "torch-compile")


def _find(records, **match):
    for r in records:
        if all(r.get(k) == v for k, v in match.items()) and not r.get("error"):
            return r
    return None


def _fmt(value, digits=2):
    return "—" if value is None else f"{value:.{digits}f}"


def _per_round_ratio(values, references, value, reference) -> tuple[float, float, float]:
    """(median, min, max) of the ratios of per-round values taken in the same rounds; the
    ratio of `value` to `reference`, thrice, where either has no rounds or their counts
    differ (results from before rounds)."""
    if values and references and len(values) == len(references) and all(references):
        ratios = [v / r for v, r in zip(values, references)]
        return statistics.median(ratios), min(ratios), max(ratios)
    ratio = value / reference
    return ratio, ratio, ratio


def step_ratio(record, reference) -> tuple[float, float, float] | None:
    """`record`'s step time over `reference`'s: (median, min, max) of the per-round ratios,
    each of a round's median over the reference's median of the same round (interleaved,
    so drift between rounds cancels). Records without rounds (results from before them)
    give the ratio of their step_ms, thrice. None when either has no step time."""
    if not (record and reference and record.get("step_ms") and reference.get("step_ms")):
        return None
    return _per_round_ratio(record.get("round_step_ms"), reference.get("round_step_ms"),
                            record["step_ms"], reference["step_ms"])


def compile_total(record) -> float | None:
    """Cold trace + lower + compile seconds (what a user waits for before the first step):
    the median over the run's cold compiles (round_compile_s), or its one cold compile."""
    if record is None or record.get("compile_s") is None:
        return None
    if record.get("round_compile_s"):
        return statistics.median(record["round_compile_s"])
    return cold_compile_s(record)


def compile_ratio(record, reference) -> tuple[float, float, float] | None:
    """`record`'s cold compile time over `reference`'s, as step_ratio does step times: the
    median, min and max of the ratios of the cold compiles of the same round. None when
    either does not compile."""
    value, base = compile_total(record), compile_total(reference)
    if value is None or not base:
        return None
    return _per_round_ratio(record.get("round_compile_s"), reference.get("round_compile_s"),
                            value, base)


def _with_spread(ratio: tuple[float, float, float] | None) -> str:
    """A ratio as "0.98x (0.95–1.02)"; as "0.98x" where it has no spread (the reference
    itself, one round, or results from before rounds); "—" for None."""
    if ratio is None:
        return "—"
    median, low, high = ratio
    if low == high:
        return f"{median:.2f}x"
    return f"{median:.2f}x ({low:.2f}–{high:.2f})"


def models_in(records, transform="jit"):
    order = {"mlp": 0, "cnn": 1, "cifar_cnn": 2}
    names = {r["model"] for r in records if r["transform"] == transform}
    return sorted(names, key=lambda m: (order.get(m, 3), int(m.split("-")[1]) if "-" in m else 0))


def headline_table(records, step="train") -> list[str]:
    """Per model and framework: step ms (ratio to flax, to torch, with their spread over
    rounds) and cold compile s (ratio to flax)."""
    lines = ["| model | framework | step ms | vs flax | vs torch | compile s | vs flax | warm compile s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for model in models_in(records):
        flax = _find(records, framework="flax", model=model, transform="jit", step=step)
        torch = _find(records, framework="torch", model=model, transform="jit", step=step)
        for fw in FRAMEWORK_ORDER:
            r = _find(records, framework=fw, model=model, transform="jit", step=step)
            if r is None:
                continue
            lines.append(
                f"| {model} | {fw} | {_fmt(r['step_ms'])} | "
                f"{_with_spread(step_ratio(r, flax))} | {_with_spread(step_ratio(r, torch))} | "
                f"{_fmt(compile_total(r))} | {_with_spread(compile_ratio(r, flax))} | "
                f"{_fmt(r['compile_warm_s'])} |")
    return lines


def compile_speedup_table(records) -> list[str]:
    """Per model under jit, each compiling peer's cold train-step compile time over jnn's
    (above 1: jnn compiles faster), the median of per-round ratios with their spread."""
    lines = ["| model | peer | peer's compile s | jnn's compile s | peer / jnn |",
             "|---|---|---:|---:|---:|"]
    for model in models_in(records):
        jnn = _find(records, framework="jnn", model=model, transform="jit", step="train")
        for fw in FRAMEWORK_ORDER[1:]:
            peer = _find(records, framework=fw, model=model, transform="jit", step="train")
            ratio = compile_ratio(peer, jnn)
            if ratio is not None:
                lines.append(f"| {model} | {fw} | {_fmt(compile_total(peer))} | "
                             f"{_fmt(compile_total(jnn))} | {_with_spread(ratio)} |")
    return lines


def compile_phase_table(records) -> list[str]:
    lines = ["| model | framework | step | trace s | lower s | compile s | warm compile s |",
             "|---|---|---|---:|---:|---:|---:|"]
    for model in models_in(records):
        for fw in FRAMEWORK_ORDER:
            for step in ("train", "eval"):
                r = _find(records, framework=fw, model=model, transform="jit", step=step)
                if r is not None and r["compile_s"] is not None:
                    lines.append(f"| {model} | {fw} | {step} | {_fmt(r['trace_s'], 3)} | "
                                 f"{_fmt(r['lower_s'], 3)} | {_fmt(r['compile_s'], 3)} | "
                                 f"{_fmt(r['compile_warm_s'], 3)} |")
    return lines


def flops_table(records, matmul_flops_per_s: float) -> list[str]:
    """Per model, the JAX frameworks' train and eval steps: XLA's FLOP count of the step, the
    model's FLOPs (the hand-written Flax step's count, where it has one, else the step's own),
    the FLOP/s that makes at the step's median time, and that as a share of the matmul
    throughput measured in the same run. The model's count, not the step's own, is what a step
    achieves: XLA counts a loop's body once, so a scanned stack of blocks counts one block."""
    lines = ["| model | framework | step | XLA's GFLOP per step | model GFLOP | GFLOP/s | "
             "of matmul peak |", "|---|---|---|---:|---:|---:|---:|"]
    for model in models_in(records):
        for step in ("train", "eval"):
            reference = _find(records, framework="flax", model=model, transform="jit", step=step)
            for fw in FRAMEWORK_ORDER:
                r = _find(records, framework=fw, model=model, transform="jit", step=step)
                if r is None or not r.get("flops") or not r.get("step_ms"):
                    continue
                model_flops = (reference or {}).get("flops") or r["flops"]
                achieved = model_flops / (r["step_ms"] / 1e3)
                lines.append(f"| {model} | {fw} | {step} | {r['flops'] / 1e9:.3f} | "
                             f"{model_flops / 1e9:.3f} | {achieved / 1e9:.1f} | "
                             f"{achieved / matmul_flops_per_s:.0%} |")
    return lines


def transform_table(records) -> list[str]:
    lines = ["| model | transform | devices | ensemble | step ms | examples/s | compile s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in records:
        if r["framework"] == "jnn" and r["transform"] != "jit" and r["step"] == "train" \
                and not r.get("error"):
            lines.append(f"| {r['model']} | {r['transform']} | {r['devices']} | {r['ensemble']} | "
                         f"{_fmt(r['step_ms'])} | {_fmt(r['examples_per_s'], 0)} | "
                         f"{_fmt(compile_total(r))} |")
    return lines


def _timing_sentence(settings: dict) -> str:
    """How the steps were timed, from a run's settings (older runs had no rounds)."""
    if "rounds" not in settings:
        return (f"{settings['repeats']} timed steps after {settings['warmup']} warm-up steps; "
                "each measurement in a fresh process.")
    steps = (f"at least {settings['repeats']} timed steps, and as many as fill "
             f"{settings['min_round_ms']:.0f} ms" if settings.get("min_round_ms")
             else f"{settings['repeats']} timed steps")
    return (f"{settings['rounds']} rounds of {steps} (after "
            f"{settings['warmup']} warm-up steps, and one more before each later round). Each "
            "measurement runs in its own fresh process; the measurements of one model and "
            "transform (the frameworks of a model, say) take turns within each round, in an "
            "order that rotates from round to round, so drift of the machine between rounds "
            "falls on all of them alike.")


def _allocator_sentence(settings: dict) -> str:
    """Which workers kept freed memory (train.allocator); runs before the setting had none."""
    allocator = settings.get("allocator")
    if allocator is None:
        return ""
    return {"harness": " jnn's workers keep freed memory in the process, as `python -m train` "
                       "does (train.allocator: glibc's mmap off, its trim threshold 2 GiB); the "
                       "peers run with glibc's defaults, as their users run them.",
            "all": " Every worker keeps freed memory in the process (train.allocator: glibc's "
                   "mmap off, its trim threshold 2 GiB), the peers too.",
            "none": " Every worker runs with glibc's malloc defaults, jnn's too."}[allocator]


def _unroll_cap_sentence(settings: dict) -> str:
    """Which workers capped LLVM's full unrolling (train.unrolling); runs before the setting
    had none."""
    choice = settings.get("unroll_cap")
    if choice is None:
        return ""
    return {"harness": " jnn's workers cap LLVM's full unrolling at 8 iterations, as `python -m "
                       "train` does on a CPU (train.unrolling); the other JAX frameworks' "
                       "workers unroll as LLVM does by default.",
            "all": f" Every JAX framework's worker ({', '.join(JAX_FRAMEWORKS)}) caps LLVM's "
                   "full unrolling at 8 iterations (train.unrolling).",
            "none": " No worker caps LLVM's full unrolling, jnn's neither."}[choice]


HARNESS_SETTING_WORDS = {"keep_freed_memory": "keeping freed memory",
                         "cap_full_unrolling": "capping LLVM's full unrolling"}


def _refused_sentence(records: list[dict]) -> str:
    """The harness settings a worker was asked for but could not make, and why."""
    refused = sorted({(r["framework"], key, reason) for r in records
                      for key, reason in r.get("refused", {}).items()})
    if not refused:
        return ""
    return " Not applied, though asked for: " + "; ".join(
        f"{framework}'s {HARNESS_SETTING_WORDS.get(key, key)} ({reason})"
        for framework, key, reason in refused) + "."


def _flops_section(results: dict) -> list[str]:
    peaks = results["machine"].get("matmul_flops_per_s")
    if not peaks:  # results from before the suite measured it
        return []
    peak = max(peaks)
    return [
        "## How far from the hardware: achieved FLOP/s",
        "",
        f"The matmul throughput of this machine, measured in this run (a jitted float32 "
        f"1024x1024 matmul, at the start and at the end of the run): "
        f"{', '.join(f'{p / 1e9:.1f}' for p in peaks)} GFLOP/s; the share below is of "
        f"the higher, {peak / 1e9:.1f}. XLA's FLOPs per step are its count for the compiled "
        "step (frameworks compiled ahead of time only); it counts a loop's body once, so a "
        "scanned stack of blocks (jnn's residual MLPs) counts one block. The achieved FLOP/s "
        "divide the model's FLOPs, the hand-written Flax step's count (it unrolls its layers), "
        "by each step's median time.",
        "",
        *flops_table(results["records"], peak),
        "",
    ]


def _isa_words(machine: dict) -> str:
    isa = machine.get("vector_isa")
    return f" ({isa.upper()})" if isa and isa != "unknown" else ""


def _cold_compile_counts(records) -> str:
    """How many cold compiles each model's compile times are the median of: "7" or "7
    (mlp, cnn), 3 (resmlp-2, ...)"."""
    models_by_count: dict[int, list[str]] = {}
    for model in models_in(records):
        counts = [len(r["round_compile_s"]) for r in records
                  if r["model"] == model and r["transform"] == "jit" and r.get("round_compile_s")]
        if counts:
            models_by_count.setdefault(max(counts), []).append(model)
    if len(models_by_count) <= 1:
        return str(next(iter(models_by_count), 1))
    return ", ".join(f"{count} ({', '.join(models)})"
                     for count, models in sorted(models_by_count.items(), reverse=True))


def write_markdown(results: dict, path: str) -> None:
    records, machine = results["records"], results["machine"]
    errors = [r for r in records if r.get("error")]
    text = [
        "# jnn benchmarks",
        "",
        f"Machine: {machine['cpu']}{_isa_words(machine)}, {machine['cores']} cores, devices "
        f"{machine['devices']}; "
        f"versions {machine['versions']}.",
        f"Command: `{results['command']}`; batch {results['settings']['batch']}, "
        f"{_timing_sentence(results['settings'])}{_allocator_sentence(results['settings'])}"
        f"{_unroll_cap_sentence(results['settings'])}{_refused_sentence(records)}",
        "",
        "Ratios are this framework's time over the reference's in the same run (below 1: "
        "faster). "
        + ("Step ratios are taken round by round and given as the median over rounds "
           "(min–max over rounds); step ms is the median of every timed step of every round. "
           if "rounds" in results["settings"] else "") +
        "Compile s is trace + lower + compile, cold (empty persistent cache)"
        + (f", the median of {_cold_compile_counts(records)} cold compiles under "
           "jit, each in a fresh process, in rounds that rotate the frameworks' order (a "
           "compile ratio is the median of per-round ratios, with their spread)"
           if results["settings"].get("compile_rounds", 1) > 1 else "") +
        "; warm "
        "compile s is the compile phase in a second process with the persistent cache filled "
        "(JAX's compilation cache; torch's inductor cache). Keras and torch.compile compile on "
        "the first call: their compile s is the first call minus a steady step. The flax peer "
        "is the hand-written Linen + Optax step with `nn.max_pool`; jnn pools with "
        "`jnn.models.max_pool_2x2`.",
        "",
        "## Train step, one device",
        "",
        *headline_table(records, "train"),
        "",
        "## Eval step, one device",
        "",
        *headline_table(records, "eval"),
        "",
        "## Cold compile of the train step: each peer against jnn",
        "",
        *compile_speedup_table(records),
        "",
        "## Compile phases",
        "",
        "The phases of the first cold compile of each framework.",
        "",
        *compile_phase_table(records),
        "",
        *_flops_section(results),
        "## jnn under vmap (ensembles), pmap and sharded jit",
        "",
        "Devices here are forced CPU devices (`--xla_force_host_platform_device_count`): they "
        "share the same cores, so more devices cannot add throughput on a CPU; the rows show "
        "the transforms' overhead, not scaling. The global batch is 128. The vmap rows are "
        "jnn's ensembles with their default `members=\"auto\"`: on CPU the CNNs' members run "
        "one after another (lax.map), the MLP's side by side (vmap).",
        "",
        *transform_table(records),
    ]
    if errors:
        text += ["", "## Errors", ""] + [f"- {r['framework']}/{r['model']}/{r['transform']}: "
                                          f"{r['error']}" for r in errors]
    with open(path, "w") as f:
        f.write("\n".join(text) + "\n")


def _plain_ticks(ax, xticks) -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xticks(xticks, [str(t) for t in xticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    if ax.get_yscale() == "log":
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())


def write_plots(results: dict, out_dir: str) -> list[str]:
    """compile_vs_depth.png, step_time.png, throughput_vs_devices.png; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in results["records"] if not r.get("error") and r["step"] == "train"]
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for fw in FRAMEWORK_ORDER:
        points = sorted((int(r["model"].split("-")[1]), compile_total(r)) for r in records
                        if r["framework"] == fw and r["model"].startswith("resmlp-")
                        and r["transform"] == "jit" and compile_total(r) is not None)
        if points:
            ax.plot(*zip(*points), marker="o", label=fw)
    ax.set(xscale="log", yscale="log", xlabel="residual blocks (depth)",
           ylabel="cold compile time, s (trace+lower+compile)",
           title="Train-step compile time vs depth")
    _plain_ticks(ax, [2, 8, 32, 128])
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    paths.append(os.path.join(out_dir, "compile_vs_depth.png"))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    models = models_in(records)
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(models)), 4.5))
    width = 0.8 / len(FRAMEWORK_ORDER)
    for i, fw in enumerate(FRAMEWORK_ORDER):
        values = []
        for model in models:
            r = _find(records, framework=fw, model=model, transform="jit", step="train")
            values.append(r["step_ms"] if r else 0.0)
        ax.bar([m + i * width for m in range(len(models))], values, width, label=fw)
    ax.set_xticks([m + 0.4 - width / 2 for m in range(len(models))], models, rotation=20)
    ax.set(yscale="log", ylabel="train step, ms (median)", title="Step time per model")
    ax.legend(fontsize=8)
    paths.append(os.path.join(out_dir, "step_time.png"))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in sorted(set(models_in(records, "shard")) | set(models_in(records, "pmap"))):
        for transform in ("shard", "pmap"):
            points = sorted((r["devices"], r["examples_per_s"]) for r in records
                            if r["model"] == model and r["transform"] == transform)
            if points:
                ax.plot(*zip(*points), marker="o", label=f"{model} {transform}")
    ax.set(xscale="log", yscale="log", xlabel="devices", ylabel="examples / s",
           title="Throughput vs device count (CPU devices share the same cores)")
    _plain_ticks(ax, [1, 2, 4, 8])
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    paths.append(os.path.join(out_dir, "throughput_vs_devices.png"))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def publish_study(result: dict, markdown, out_dir: str | None, stem: str) -> None:
    """A side study's result (`benchmarks.steps_per_call`, `benchmarks.cpu_fusion_options`):
    names the device in it, prints its table (markdown(result, device)), and writes
    `stem`.json and `stem`.md into `out_dir` unless that is None."""
    import json

    import jax

    result["device"] = jax.devices()[0].device_kind
    text = markdown(result, result["device"])
    print(text)
    if out_dir is None:
        return
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{stem}.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out_dir, f"{stem}.md"), "w") as f:
        f.write(text)
