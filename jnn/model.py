"""The model adapter: a Flax Linen or NNX module seen as two pure functions over pytrees.

    model = jnn.as_model(module)                      # flax.linen.Module or flax.nnx.Module
    params, model_state = model.init(rng, batch)
    outputs, model_state = model.apply(params, model_state, batch, train=True, rng=key)

`params` is a nested dict of arrays; `model_state` holds everything else the module
keeps between steps (Linen: every collection but "params", e.g. {"batch_stats": ...};
NNX: every variable that is neither an `nnx.Param` nor RNG state), also as a nested
dict of arrays. Both are plain pytrees, so jit, vmap, pmap, sharded jit and orbax carry
them, and the adapter itself is a hashable value (equal for equal modules), so a train
state can hold it as static data.

Conventions, explicit rather than guessed:
- inputs: the module is called with the batch entries named in `inputs` (default
  ("x",)), positionally.
- train/eval mode: a Linen module receives its mode through the keyword `mode` names
  ("train" by default; "training" also means train, "deterministic" means not train;
  None for a module that behaves the same in both). A module whose `__call__` cannot
  receive that keyword is refused when the adapter is made. An NNX module is switched
  with its own `.train()` / `.eval()`.
- padding: with `mask="mask"` the batch's mask is passed as the keyword `mask`, so that
  BatchNorm (`nn.BatchNorm(...)(x, mask=...)`) computes statistics over real rows only.
  The default, "auto", does so when the module's `__call__` takes `mask`. A module with
  batch statistics that does not receive the mask is refused for a masked batch in
  training, because padded rows would change its statistics.
- randomness: the key given to `apply` feeds the Linen RNG streams in `rng_streams`
  ("dropout" by default), or every RNG stream of an NNX module.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

Params = Any
ModelState = Any
Batch = dict

_MODES = ("train", "training", "deterministic")


def _call_parameters(fn) -> tuple[set[str], bool]:
    """(the keyword names `fn` accepts, whether it takes **kwargs)."""
    parameters = inspect.signature(fn).parameters.values()
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind == p.VAR_KEYWORD for p in parameters)


def _resolve_mask(mask: str | None, accepted: set[str], takes_kwargs: bool) -> str | None:
    if mask == "auto":
        return "mask" if "mask" in accepted else None
    if mask is not None and mask not in accepted and not takes_kwargs:
        raise ValueError(f"the module's __call__ takes no `{mask}` argument; pass mask=None "
                         "or add it to __call__")
    return mask


def _model_inputs(batch: Batch, inputs: Sequence[str]) -> list:
    missing = [k for k in inputs if k not in batch]
    if missing:
        raise ValueError(f"the batch has no {', '.join(map(repr, missing))} for the model "
                         f"(its keys: {', '.join(sorted(batch))}); build the model with "
                         f"inputs=(...) naming the batch keys it reads")
    return [batch[k] for k in inputs]


def _check_mask_reaches_batch_stats(name: str, has_batch_stats: bool, batch: Batch,
                                    mask_arg: str | None) -> None:
    if has_batch_stats and mask_arg is None and batch.get("mask") is not None:
        raise ValueError(
            f"{name} keeps batch statistics but does not receive the batch's mask, so padded "
            "rows would change them; add `mask=None` to its __call__ and pass it on "
            "(flax BatchNorm: `nn.BatchNorm(...)(x, mask=mask[:, None, None, None])`, "
            "broadcast to x), or train on unpadded batches without a 'mask' entry")


def _row_mask(batch: Batch):
    mask = batch.get("mask")
    return None if mask is None else mask.astype(bool)


# -------------------------------------------------------------------------- Linen
@dataclasses.dataclass(frozen=True)
class LinenModel:
    """A `flax.linen.Module` as `init` / `apply` over plain pytrees (see the module doc)."""

    module: nn.Module
    inputs: tuple[str, ...] = ("x",)
    mode: str | None = "train"
    mask: str | None = None
    rng_streams: tuple[str, ...] = ("dropout",)

    @property
    def name(self) -> str:
        return type(self.module).__name__

    def _call_kwargs(self, batch: Batch, train: bool) -> dict:
        kwargs = {}
        if self.mode is not None:
            kwargs[self.mode] = (not train) if self.mode == "deterministic" else train
        if self.mask is not None and batch.get("mask") is not None:
            kwargs[self.mask] = _row_mask(batch)
        return kwargs

    def init(self, rng: jax.Array, batch: Batch) -> tuple[Params, ModelState]:
        """(params, model_state) of the module initialised on `batch` (a sample batch)."""
        rngs = {"params": rng}  # the streams' keys only matter to a module that draws at init
        rngs.update({s: jax.random.fold_in(rng, i + 1) for i, s in enumerate(self.rng_streams)})
        variables = dict(self.module.init(rngs, *_model_inputs(batch, self.inputs),
                                          **self._call_kwargs(batch, False)))
        params = variables.pop("params", {})
        return params, variables

    def apply(self, params: Params, model_state: ModelState, batch: Batch, *, train: bool,
              rng: jax.Array | None = None) -> tuple[Any, ModelState]:
        """(outputs, new model_state). In training every collection of model_state is
        mutable; in evaluation model_state is returned unchanged."""
        kwargs = self._call_kwargs(batch, train)
        if rng is not None:
            kwargs["rngs"] = {s: jax.random.fold_in(rng, i) for i, s in enumerate(self.rng_streams)}
        variables = {"params": params, **model_state}
        args = _model_inputs(batch, self.inputs)
        if train and model_state:
            _check_mask_reaches_batch_stats(self.name, "batch_stats" in model_state, batch,
                                            self.mask)
            outputs, updates = self.module.apply(variables, *args, mutable=list(model_state),
                                                 **kwargs)
            return outputs, {**model_state, **updates}
        return self.module.apply(variables, *args, **kwargs), model_state


def from_linen(module: nn.Module, *, inputs: Sequence[str] = ("x",), mode: str | None = "train",
               mask: str | None = "auto", rng_streams: Sequence[str] = ("dropout",)) -> LinenModel:
    """Wraps a Linen module; see the module doc for `inputs`, `mode`, `mask`, `rng_streams`.

    Raises:
      ValueError: the module's `__call__` cannot receive `mode` (the message says what to do).
    """
    accepted, takes_kwargs = _call_parameters(type(module).__call__)
    name = type(module).__name__
    if mode is not None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)} or None, got {mode!r}")
        if mode not in accepted and not takes_kwargs:
            found = [m for m in _MODES if m in accepted]
            hint = (f"its __call__ takes `{found[0]}`: pass mode={found[0]!r}" if found else
                    f"add `{mode}: bool = False` to its __call__ and use it for Dropout and "
                    "BatchNorm, or pass mode=None if it behaves the same in training and "
                    "evaluation")
            raise ValueError(f"{name}.__call__ takes no `{mode}` argument, so jnn cannot switch "
                             f"it between training and evaluation; {hint}")
    return LinenModel(module, tuple(inputs), mode, _resolve_mask(mask, accepted, takes_kwargs),
                      tuple(rng_streams))


# ---------------------------------------------------------------------------- NNX
def _paths(tree) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)
                 for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0])


def _nest(paths, values) -> dict:
    out: dict = {}
    for path, value in zip(paths, values):
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


@dataclasses.dataclass(frozen=True)
class NNXModel:
    """A `flax.nnx.Module` as `init` / `apply` over plain pytrees (see the module doc).

    The module is split once into its graph definition (static, hashable) and its
    variables; `apply` merges them back, switches the mode with `.train()` / `.eval()`,
    calls it and splits the updated non-parameter variables out again.
    """

    graphdef: Any
    inputs: tuple[str, ...] = ("x",)
    mask: str | None = None
    rng_key_paths: tuple = ()  # paths of the RNG keys in the module's RNG state
    rng_count_paths: tuple = ()
    factory: Callable | None = None  # rngs -> module, for a fresh init per seed
    # The module's own initial values (when built from an instance); not part of equality.
    initial: Any = dataclasses.field(default=None, compare=False, hash=False, repr=False)

    @property
    def name(self) -> str:
        return getattr(self.graphdef, "type", type(self)).__name__

    @property
    def fresh_init(self) -> bool:
        """Whether `init` makes new values (from a factory) rather than return its own."""
        return self.factory is not None

    def _rng_state(self, rng: jax.Array) -> dict:
        keys = [jax.random.wrap_key_data(jax.random.fold_in(rng, i))
                for i in range(len(self.rng_key_paths))]
        counts = [jnp.zeros((), jnp.uint32) for _ in self.rng_count_paths]
        return _nest(self.rng_key_paths + self.rng_count_paths, keys + counts)

    def init(self, rng: jax.Array, batch: Batch) -> tuple[Params, ModelState]:
        """(params, model_state): a fresh init from `rng` when the model was made from a
        factory, else the instance's own values (`rng` unused)."""
        del batch
        if self.factory is None:
            return self.initial
        _, params, _, rest = nnx.split(self.factory(nnx.Rngs(rng)), nnx.Param, nnx.RngState, ...)
        return nnx.to_pure_dict(params), nnx.to_pure_dict(rest)

    def apply(self, params: Params, model_state: ModelState, batch: Batch, *, train: bool,
              rng: jax.Array | None = None) -> tuple[Any, ModelState]:
        """(outputs, new model_state); see LinenModel.apply."""
        rng = jax.random.PRNGKey(0) if rng is None else rng
        module = nnx.merge(self.graphdef, nnx.State(params), nnx.State(self._rng_state(rng)),
                           nnx.State(model_state))
        module.train() if train else module.eval()
        kwargs = {}
        if self.mask is not None and batch.get("mask") is not None:
            kwargs[self.mask] = _row_mask(batch)
        if train:
            has_stats = bool(jax.tree.leaves(nnx.state(module, nnx.BatchStat)))
            _check_mask_reaches_batch_stats(self.name, has_stats, batch, self.mask)
        outputs = module(*_model_inputs(batch, self.inputs), **kwargs)
        if not train:
            return outputs, model_state
        _, _, _, rest = nnx.split(module, nnx.Param, nnx.RngState, ...)
        return outputs, nnx.to_pure_dict(rest)


def from_nnx(module: nnx.Module | Callable[[nnx.Rngs], nnx.Module], *,
             inputs: Sequence[str] = ("x",), mask: str | None = "auto") -> NNXModel:
    """Wraps an NNX module, or a factory `rngs -> module` (then `init(rng)` builds a fresh
    module from `nnx.Rngs(rng)`, so ensemble members differ in their initial weights)."""
    factory = None
    if not isinstance(module, nnx.Module):
        if not callable(module):
            raise ValueError(f"expected an nnx.Module or a function rngs -> nnx.Module, "
                             f"got {module!r}")
        factory, module = module, nnx.eval_shape(lambda: module(nnx.Rngs(0)))
    graphdef, params, rng_state, rest = nnx.split(module, nnx.Param, nnx.RngState, ...)
    rng_pure = nnx.to_pure_dict(rng_state)
    flat = jax.tree_util.tree_flatten_with_path(rng_pure)[0]
    key_paths = tuple(p for p, (_, v) in zip(_paths(rng_pure), flat)
                      if jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key))
    count_paths = tuple(p for p in _paths(rng_pure) if p not in key_paths)
    initial = None if factory else (nnx.to_pure_dict(params), nnx.to_pure_dict(rest))
    accepted, takes_kwargs = _call_parameters(type(module).__call__)
    return NNXModel(graphdef, tuple(inputs), _resolve_mask(mask, accepted, takes_kwargs),
                    key_paths, count_paths, factory, initial)


Model = LinenModel | NNXModel


def as_model(module, **options) -> Model:
    """A Linen module, an NNX module (or factory), or an adapter already: the adapter.

    `options` go to `from_linen` / `from_nnx` (e.g. inputs=("tokens",), mode="training").
    """
    if isinstance(module, type):
        raise ValueError(f"got the class {module.__name__}; pass an instance, e.g. "
                         f"{module.__name__}(...) (an NNX module may also be a function "
                         "rngs -> module)")
    if isinstance(module, (LinenModel, NNXModel)):
        if options:
            raise ValueError("options apply when wrapping a module, not to a model adapter")
        return module
    if isinstance(module, nn.Module):
        return from_linen(module, **options)
    if isinstance(module, nnx.Module) or callable(module):
        return from_nnx(module, **options)
    raise ValueError(f"expected a flax.linen.Module, a flax.nnx.Module or a jnn model adapter, "
                     f"got {type(module).__name__}")
