"""Exported predictors: a trained model saved as StableHLO + weights, runnable without its code.

An export folder holds three files:

    model.jax_export  `jax.export.Exported.serialize()` of predict(leaves, x); the batch
                      dimension of x is symbolic, so any batch size (>= 1) works
    variables.npz     the variables' leaves, `leaf_00000`, `leaf_00001`, ... in the order
                      of the exported function's argument tree (jax.tree.leaves order)
    export.json       input shape and dtype, outputs, platforms, jax version, checksums
                      of the two files above, and the caller's metadata

Platforms: by default the function is lowered for cpu, cuda and tpu at once (jax's
multi-platform export: one module with a branch per platform, picked at call time), so
one artifact runs on any of them. Ordinary conv/dense models lower for all three on a
CPU-only machine. If a model uses an op that cannot be lowered for every platform,
`export_predictor` falls back to cpu plus the platform it runs on; export.json records
what was chosen.

Loading imports only jax and numpy: never flax, jnn or the model's code. jax's
serialization needs the `flatbuffers` package. Integer and float inputs are cast to the
exported input dtype, except floats for an integer input (ids), which are refused.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import secrets
import shutil
from typing import Any, Callable, Sequence

import jax
import jax.export
import numpy as np

MODEL_FILE = "model.jax_export"
VARIABLES_FILE = "variables.npz"
INFO_FILE = "export.json"
EXPORT_FILES = (MODEL_FILE, VARIABLES_FILE, INFO_FILE)
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
FORMAT_NAME = "jnn.predictor"
FORMAT_VERSION = 1
BATCH_DIM = "batch"


# ----------------------------------------------------------------------- export
def export_predictor(predict_fn: Callable[[Any, jax.Array], Any], variables: Any,
                     input_shape: Sequence[int], input_dtype: Any, export_dir: str, *,
                     metadata: dict | None = None,
                     platforms: Sequence[str] | None = None) -> str:
    """Exports `predict_fn(variables, x)` with `variables` baked in as arrays; returns the
    absolute export dir.

    `input_shape` is one example's shape (no batch dim). `platforms` defaults to cpu, cuda
    and tpu (see the module docstring). An existing export at `export_dir` is replaced
    only once the new one is complete.
    """
    export_dir = os.path.abspath(export_dir)
    input_shape = _checked_input_shape(input_shape)
    input_dtype = _checked_numeric_dtype(input_dtype)
    _check_replaceable(export_dir)
    metadata_json = _checked_metadata(metadata)

    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    paths = [jax.tree_util.keystr(path) for path, _ in paths_and_leaves]
    leaves = [_host_array(leaf, path) for (_, leaf), path in zip(paths_and_leaves, paths)]

    def predict_from_leaves(leaves, x):
        return predict_fn(jax.tree.unflatten(treedef, leaves), x)

    predict_from_leaves.__name__ = getattr(predict_fn, "__name__", "predict")
    batch, = jax.export.symbolic_shape(BATCH_DIM)
    leaf_specs = [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves]
    x_spec = jax.ShapeDtypeStruct((batch, *input_shape), input_dtype)
    exported = _lower(predict_from_leaves, leaf_specs, x_spec, platforms)
    model_bytes = _serialized(exported)
    # The exported dtypes are canonical (float64 -> float32 without x64): store those.
    leaves = [leaf.astype(aval.dtype, copy=False) for leaf, aval in zip(leaves, exported.in_avals)]

    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = _unique_sibling(export_dir, "tmp")
    os.mkdir(staging)
    try:
        _write_file(os.path.join(staging, MODEL_FILE), model_bytes)
        with open(os.path.join(staging, VARIABLES_FILE), "wb") as f:
            np.savez(f, **{_leaf_key(i): _storable(leaf) for i, leaf in enumerate(leaves)})
            _sync(f)
        info = _info(exported, input_shape, leaves, paths, staging, metadata_json)
        _write_file(os.path.join(staging, INFO_FILE), json.dumps(info, indent=2).encode())
        _replace_dir(staging, export_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return export_dir


def _checked_input_shape(input_shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = None
    if shape is None or any(d < 1 for d in shape):
        raise ValueError(f"input_shape must be one example's shape as positive ints, e.g. "
                         f"(8, 8, 1), not {input_shape!r}")
    return shape


def _checked_numeric_dtype(dtype) -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"input_dtype {dtype!r} is not a dtype; pass e.g. 'float32'") from None
    if not _is_real_number(dtype):
        raise ValueError(f"input_dtype must be an integer or float dtype, not {dtype}; "
                         "pass e.g. 'float32'")
    return dtype


def _is_real_number(dtype: np.dtype) -> bool:
    return bool(jax.dtypes.issubdtype(dtype, np.integer)
                or jax.dtypes.issubdtype(dtype, np.floating))


def _check_replaceable(export_dir: str) -> None:
    if os.path.lexists(export_dir) and not os.path.isdir(export_dir):
        raise ValueError(f"{export_dir} is a file; choose a folder path for the export")
    if (os.path.isdir(export_dir) and os.listdir(export_dir)
            and not os.path.isfile(os.path.join(export_dir, INFO_FILE))):
        raise ValueError(f"{export_dir} is not empty and holds no export; "
                         "choose a new or empty folder")


def _checked_metadata(metadata: dict | None) -> Any:
    if metadata is None:
        return {}
    try:
        return json.loads(json.dumps(metadata, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata is not JSON-serialisable ({e}); pass numbers, strings, "
                         "lists and dicts") from None


def _host_array(leaf, path: str) -> np.ndarray:
    array = np.asarray(jax.device_get(leaf))
    if not (_is_real_number(array.dtype) or array.dtype == np.bool_):
        raise ValueError(f"variables{path} has dtype {array.dtype}; variables must hold "
                         "numeric arrays only")
    return array


def _lower(fn, leaf_specs, x_spec, platforms) -> jax.export.Exported:
    """`fn` exported for `platforms`, or by default for DEFAULT_PLATFORMS, falling back to
    cpu + the local platform when some op has no lowering for one of them."""
    jitted = jax.jit(fn)
    if platforms is not None:
        return jax.export.export(jitted, platforms=tuple(platforms))(leaf_specs, x_spec)
    try:
        return jax.export.export(jitted, platforms=DEFAULT_PLATFORMS)(leaf_specs, x_spec)
    except Exception:  # noqa: BLE001 - a genuine error recurs just below
        local = jax.export.default_export_platform()
        fallback = ("cpu",) if local == "cpu" else ("cpu", local)
        return jax.export.export(jitted, platforms=fallback)(leaf_specs, x_spec)


def _serialized(exported: jax.export.Exported) -> bytes:
    try:
        return bytes(exported.serialize())
    except ImportError:
        raise ValueError("jax export needs the flatbuffers package; pip install flatbuffers"
                         ) from None
    except (TypeError, ValueError) as e:
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"cannot serialize the exported predictor ({first_line}); "
                         "make predict_fn return an array or a tuple/list/dict of arrays"
                         ) from None


def _leaf_key(index: int) -> str:
    return f"leaf_{index:05d}"


def _storable(leaf: np.ndarray) -> np.ndarray:
    """`leaf`, or for dtypes .npy cannot name (bfloat16, float8...) its raw bits as uints;
    loading views them back as the exported dtype."""
    if leaf.dtype.kind == "V":
        return leaf.view(np.dtype(f"u{leaf.dtype.itemsize}"))
    return leaf


def _shape_description(shape) -> list:
    return [str(d) if jax.export.is_symbolic_dim(d) else int(d) for d in shape]


def _info(exported, input_shape, leaves, paths, staging, metadata_json) -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "input_shape": list(input_shape),
        "input_dtype": str(exported.in_avals[-1].dtype),
        "batch_dim": f"{BATCH_DIM} (symbolic: any size >= 1)",
        "outputs": [{"shape": _shape_description(aval.shape), "dtype": str(aval.dtype)}
                    for aval in exported.out_avals],
        "output_structure": str(exported.out_tree),
        "platforms": list(exported.platforms),
        "jax_version": jax.__version__,
        "calling_convention_version": exported.calling_convention_version,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "variables": [{"path": path, "shape": list(leaf.shape), "dtype": str(leaf.dtype)}
                      for path, leaf in zip(paths, leaves)],
        "sha256": {name: _sha256(os.path.join(staging, name))
                   for name in (MODEL_FILE, VARIABLES_FILE)},
        "metadata": metadata_json,
    }


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        _sync(f)


def _unique_sibling(path: str, tag: str) -> str:
    """A fresh hidden name beside `path` (same filesystem, so renames are atomic)."""
    return os.path.join(os.path.dirname(path),
                        f".{os.path.basename(path)}.{tag}-{secrets.token_hex(6)}")


def _replace_dir(staging: str, target: str) -> None:
    """Puts the complete folder `staging` at `target` by renames, so `target` is never
    half-written; a previous export there is removed only after the swap."""
    if not os.path.isdir(target) or not os.listdir(target):
        os.replace(staging, target)  # a missing or empty target is replaced atomically
        return
    old = _unique_sibling(target, "old")
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------- load
class Predictor:
    """A loaded export: call it on a batch `x` of shape (N, *input_shape) to get numpy
    outputs. `info` is the export.json dict (its "metadata" holds the caller's)."""

    def __init__(self, exported: jax.export.Exported, leaves: list, info: dict, device):
        self.input_shape = tuple(int(d) for d in exported.in_avals[-1].shape[1:])
        self.input_dtype = np.dtype(exported.in_avals[-1].dtype)
        self.info = info
        self._device = device
        self._leaves = jax.device_put(leaves, device)
        self._run = jax.jit(exported.call)

    def __call__(self, x, *, name: str = "input"):
        """Outputs for the batch `x`; `name` is what error messages call `x`."""
        x = _checked_batch(x, self.input_shape, self.input_dtype, name)
        outputs = self._run(self._leaves, jax.device_put(x, self._device))
        return jax.tree.map(np.asarray, outputs)


def load_predictor(export_dir: str) -> Predictor:
    """The predictor saved by `export_predictor` at `export_dir`."""
    export_dir = os.path.abspath(export_dir)
    missing = [n for n in EXPORT_FILES if not os.path.isfile(os.path.join(export_dir, n))]
    if missing:
        raise ValueError(f"no export at {export_dir}; run python -m train export WORKDIR first")
    info = _read_info(export_dir)
    exported = _read_exported(export_dir, info)
    leaves = _read_leaves(export_dir, info, exported)
    return Predictor(exported, leaves, info, _device_for(exported.platforms, export_dir))


def _damaged(export_dir: str, name: str, why: str) -> ValueError:
    return ValueError(f"{name} in {export_dir} is damaged; export again ({why})")


def _read_info(export_dir: str) -> dict:
    try:
        with open(os.path.join(export_dir, INFO_FILE), encoding="utf-8") as f:
            info = json.load(f)
    except ValueError:
        raise _damaged(export_dir, INFO_FILE, "not JSON") from None
    if (not isinstance(info, dict) or info.get("format") != FORMAT_NAME
            or not isinstance(info.get("sha256"), dict)):
        raise _damaged(export_dir, INFO_FILE, f"not a {FORMAT_NAME} description")
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{export_dir} was exported by a newer version of this code; "
                         "upgrade it or export again")
    return info


def _read_verified(export_dir: str, name: str, info: dict) -> bytes:
    with open(os.path.join(export_dir, name), "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != info["sha256"].get(name):
        raise _damaged(export_dir, name, "checksum mismatch")
    return data


def _read_exported(export_dir: str, info: dict) -> jax.export.Exported:
    data = _read_verified(export_dir, MODEL_FILE, info)
    try:
        return jax.export.deserialize(bytearray(data))
    except ImportError:
        raise ValueError("jax export needs the flatbuffers package; pip install flatbuffers"
                         ) from None
    except Exception as e:  # noqa: BLE001 - any failure here means an unusable artifact
        raise _damaged(export_dir, MODEL_FILE,
                       f"{type(e).__name__}; exported with jax {info.get('jax_version')}, "
                       f"this is {jax.__version__}") from None


def _read_leaves(export_dir: str, info: dict, exported) -> list[np.ndarray]:
    data = _read_verified(export_dir, VARIABLES_FILE, info)
    avals = exported.in_avals[:-1]
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            stored = [archive[_leaf_key(i)] for i in range(len(avals))]
    except Exception as e:  # noqa: BLE001 - a bad zip, a missing key, a bad header...
        raise _damaged(export_dir, VARIABLES_FILE, type(e).__name__) from None
    leaves = []
    for i, (array, aval) in enumerate(zip(stored, avals)):
        dtype = np.dtype(aval.dtype)
        if array.dtype != dtype and array.dtype.itemsize == dtype.itemsize:
            array = array.view(dtype)  # raw bits of bfloat16 & co (see _storable)
        if array.shape != tuple(aval.shape) or array.dtype != dtype:
            raise _damaged(export_dir, VARIABLES_FILE, f"{_leaf_key(i)} does not match the model")
        leaves.append(array)
    return leaves


def _device_for(platforms: Sequence[str], export_dir: str):
    """The default device when the export runs on its platform, else a CPU device."""
    if jax.export.default_export_platform() in platforms:
        return jax.devices()[0]
    if "cpu" in platforms:
        try:
            return jax.devices("cpu")[0]
        except RuntimeError:
            pass
    raise ValueError(f"{export_dir} was exported for {', '.join(platforms)} only; export "
                     f"again on this machine ({jax.export.default_export_platform()})")


def _checked_batch(x, input_shape: tuple, dtype: np.dtype, name: str) -> np.ndarray:
    """`x` as an array of dtype `dtype` and shape (N >= 1, *input_shape)."""
    try:
        x = np.asarray(x)
    except ValueError:
        raise ValueError(f"{name} is not a rectangular array; pass an array of shape "
                         f"{_batch_shape_text(input_shape)}") from None
    if not _is_real_number(x.dtype):
        raise ValueError(f"{name} has dtype {x.dtype} but the model takes numbers ({dtype}); "
                         f"convert it with .astype('{dtype}')")
    if jax.dtypes.issubdtype(dtype, np.integer) and not jax.dtypes.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} has dtype {x.dtype} but the model takes integers ({dtype}); "
                         f"round it and convert with .astype('{dtype}')")
    if x.ndim == 0:
        raise ValueError(f"{name} is a single number but the model takes examples of shape "
                         f"{input_shape}; reshape to {_batch_shape_text(input_shape)}")
    if x.shape[1:] != input_shape:
        raise ValueError(f"{name} has examples of shape {x.shape[1:]} but the model takes "
                         f"{input_shape}; reshape to {_batch_shape_text(input_shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} has no examples; pass at least one")
    return x.astype(dtype, copy=False)


def _batch_shape_text(input_shape: tuple) -> str:
    return str(("N", *input_shape)).replace("'N'", "N")


# ---------------------------------------------------------------------- predict
def predict_file(export_dir: str, input_path: str, out_path: str | None = None) -> str:
    """Predicts for the examples in INPUT.npy (one example, or a batch of them) and saves
    the outputs to `out_path` (default: INPUT.pred.npy beside it); returns its absolute path."""
    x = _read_npy(input_path)
    predictor = load_predictor(export_dir)
    name = os.path.basename(input_path)
    if x.shape == predictor.input_shape:
        x = x[None]  # one example
    outputs = predictor(x, name=name)
    if not isinstance(outputs, np.ndarray):
        raise ValueError("this export returns several arrays; call "
                         "train.export.load_predictor(EXPORT_DIR) from Python to get them all")
    out_path = os.path.abspath(out_path or _default_out_path(input_path))
    _save_npy_atomically(out_path, outputs)
    return out_path


def _read_npy(input_path: str) -> np.ndarray:
    if not os.path.isfile(input_path):
        raise ValueError(f"no input file at {input_path}; save the examples there with "
                         "numpy.save(PATH, array)")
    try:
        loaded = np.load(input_path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - pickles, text files, truncated headers...
        raise ValueError(f"{input_path} is not a .npy array ({type(e).__name__}); save one "
                         "with numpy.save(PATH, array)") from None
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise ValueError(f"{input_path} is a .npz archive, not a .npy array; save one array "
                         "with numpy.save(PATH, array)")
    return loaded


def _default_out_path(input_path: str) -> str:
    stem = input_path[:-len(".npy")] if input_path.endswith(".npy") else input_path
    return stem + ".pred.npy"


def _save_npy_atomically(path: str, array: np.ndarray) -> None:
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise ValueError(f"no folder {folder} for the predictions; create it or choose "
                         "another output path")
    staging = _unique_sibling(path, "tmp")
    try:
        with open(staging, "xb") as f:
            np.save(f, array)
            _sync(f)
        os.replace(staging, path)
    except BaseException:
        if os.path.exists(staging):
            os.remove(staging)
        raise
