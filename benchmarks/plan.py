"""Which measurements a run makes: every framework on the seed models and the residual-MLP
depths, jnn's ensembles (vmap), and jnn's data parallelism over 1-8 devices; and which of
them are timed interleaved, as one group (`groups`)."""

from __future__ import annotations

import fnmatch

from benchmarks.frameworks import FRAMEWORKS, JAX_FRAMEWORKS

SEED_MODELS = ("mlp", "cnn", "cifar_cnn")
FULL_DEPTHS = (2, 8, 32, 128)
QUICK_DEPTHS = (2, 8)
ENSEMBLES = (1, 4, 16)
DEVICE_COUNTS = (1, 2, 4, 8)
BATCH = 128  # the seed's batch size
# untimed steps before the first round, timed steps per round (at least `repeats`, and as
# many as fill min_round_ms), rounds. Many short rounds: a ratio is the median of per-round
# ratios, and the machine drifts within seconds (5 rounds of 6 steps reproduced the seed
# models' ratios only within 31%, 12 rounds of 3 within 23%: 3 steps of the 1 ms MLP are
# 3 ms of timing, so min_round_ms times it over many steps a round instead). With 12
# rounds of 200 ms, the median of the per-round ratios still had a sampling error (its
# bootstrap standard error) of 5-10% on the seed models, so two runs differed by up to
# 26% in jnn / torch; 30 rounds of 100 ms cut that error by about a third and interleave
# twice as finely (a model whose 3 steps take over 100 ms, the CIFAR-10 CNN or
# resmlp-128, spends 2.5x the time timing).
QUICK_TIMING = {"warmup": 3, "repeats": 3, "rounds": 5, "min_round_ms": 100.0}
FULL_TIMING = {"warmup": 5, "repeats": 3, "rounds": 30, "min_round_ms": 100.0}
# cold compiles per framework and model under jit, each in a fresh process (the compile
# ratios are medians of per-round ratios, like the step ratios); other transforms compile
# once. One cold compile per framework gave jnn/flax on the MLP 1.03x, 1.12x and 1.54x in
# three runs on 2-core AVX2 hosts. With 3, a rerun of the seed models still moved their
# compile ratios by up to 29% (34dd135's results): the seed models, whose compile ratios
# are the headline, get 7 (about 45-60 s a model per round; a rerun then moved them by up
# to 18%, 0b5f3fb's results); the residual MLPs, whose torch.compile takes minutes at
# depth 128, keep 3.
QUICK_COMPILE_ROUNDS = 1
FULL_COMPILE_ROUNDS = 3
FULL_SEED_COMPILE_ROUNDS = 7


def spec_name(spec: dict) -> str:
    """framework/model/transform/devices/ensemble, the string --only patterns match."""
    return (f"{spec['framework']}/{spec['model']}/{spec['transform']}/{spec['devices']}dev/"
            f"k{spec['ensemble']}")


# Which workers get a setting that `python -m train` makes for its process (keeping freed
# memory, train.allocator; capping LLVM's full unrolling, train.unrolling): "harness", jnn's
# alone, as the harness runs it (the peers as their users run them, with the defaults);
# "all" or "none", every framework it applies to alike.
HARNESS_SETTING_CHOICES = ("harness", "all", "none")


def applies_harness_setting(framework: str, choice: str, *, option: str) -> bool:
    """Whether `framework`'s worker makes a harness setting, given the run's `choice` of
    HARNESS_SETTING_CHOICES for it (`option`: the setting's name, for the error)."""
    if choice not in HARNESS_SETTING_CHOICES:
        raise ValueError(f"{option} must be one of {HARNESS_SETTING_CHOICES}, not {choice!r}")
    return choice == "all" or (choice == "harness" and framework == "jnn")


def make_plan(*, quick: bool, only: str | None = None, rounds: int | None = None,
              compile_rounds: int | None = None, allocator: str = "harness",
              unroll_cap: str = "harness") -> list[dict]:
    """The specs of a run, in order. `only`: an fnmatch pattern on `spec_name`; `rounds`:
    instead of the default rounds (QUICK_TIMING's or FULL_TIMING's); `compile_rounds`: cold compiles per
    spec under jit, instead of the default (1 quick; full: 7 for the seed models, 3 for
    the residual MLPs); `allocator` (which workers keep
    freed memory) and `unroll_cap` (which cap LLVM's full unrolling): one of
    HARNESS_SETTING_CHOICES."""
    timing = {**(QUICK_TIMING if quick else FULL_TIMING)}
    for name, value in (("rounds", rounds), ("compile_rounds", compile_rounds)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, not {value}")
    if rounds is not None:
        timing["rounds"] = rounds

    def cold_compiles(model: str, transform: str) -> int:
        if transform != "jit":
            return 1
        if compile_rounds is not None:
            return compile_rounds
        if quick:
            return QUICK_COMPILE_ROUNDS
        return FULL_SEED_COMPILE_ROUNDS if model in SEED_MODELS else FULL_COMPILE_ROUNDS

    def spec(framework, model, transform="jit", devices=1, ensemble=1):
        return {"framework": framework, "model": model, "transform": transform,
                "devices": devices, "ensemble": ensemble, "batch": BATCH, **timing,
                "compile_rounds": cold_compiles(model, transform),
                "keep_freed_memory": applies_harness_setting(framework, allocator,
                                                             option="allocator"),
                # an XLA setting: for the JAX frameworks alone
                "cap_full_unrolling": (applies_harness_setting(framework, unroll_cap,
                                                               option="unroll_cap")
                                       and framework in JAX_FRAMEWORKS)}

    depths = QUICK_DEPTHS if quick else FULL_DEPTHS
    plan = [spec(f, m) for m in SEED_MODELS for f in FRAMEWORKS]
    depth_frameworks = ("jnn", "flax") if quick else FRAMEWORKS
    plan += [spec(f, f"resmlp-{d}") for d in depths for f in depth_frameworks]
    ensemble_models = ("mlp",) if quick else SEED_MODELS
    plan += [spec("jnn", m, "vmap", ensemble=k) for m in ensemble_models
             for k in (ENSEMBLES[:2] if quick else ENSEMBLES)]
    device_counts = (1, 2) if quick else DEVICE_COUNTS
    parallel_models = ("mlp",) if quick else SEED_MODELS
    plan += [spec("jnn", m, t, devices=n) for m in parallel_models for t in ("shard", "pmap")
             for n in device_counts]
    if only:
        plan = [s for s in plan if fnmatch.fnmatch(spec_name(s), only)]
    return plan


def groups(specs: list[dict]) -> list[list[dict]]:
    """`specs` grouped to be timed interleaved (benchmarks.interleave): one group per model
    and transform, i.e. the frameworks of one model under jit, the ensemble sizes of one
    model under vmap, the device counts of one model under shard or pmap. Groups come in
    the order of their first spec."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for spec in specs:
        grouped.setdefault((spec["model"], spec["transform"]), []).append(spec)
    return list(grouped.values())
