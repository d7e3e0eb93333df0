"""Exported predictors: same outputs as the Python model at any batch size, runnable without
flax, and one-line errors for every bad export or input."""

import json
import os
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train.export import export_predictor, load_predictor, predict_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUT_SHAPE = (8, 8, 1)
CLASSES = ("zero", "one", "two")


class ConvBatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
        return nn.Dense(len(CLASSES))(x.reshape(x.shape[0], -1))


class DenseNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1)))
        return nn.Dense(len(CLASSES))(x)


def normalise(x):
    return (x / 16.0 - 0.3) / 0.4


def _with_nontrivial_batch_stats(variables, seed=1):
    """Running statistics that differ from init (mean 0, var 1), so dropping or misordering
    them changes the outputs."""
    if "batch_stats" not in variables:
        return variables
    rng = np.random.default_rng(seed)
    stats = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.5, 2.0, a.shape), a.dtype),
                         variables["batch_stats"])
    return {**variables, "batch_stats": stats}


def _predictor_parts(model):
    variables = model.init(jax.random.key(0), jnp.zeros((1, *INPUT_SHAPE)))
    variables = _with_nontrivial_batch_stats(variables)

    def predict_fn(variables, x):
        return jax.nn.softmax(model.apply(variables, normalise(x)))

    return predict_fn, variables


def _pixels(n, seed=0):
    return np.random.default_rng(seed).integers(0, 17, (n, *INPUT_SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def conv_export(tmp_path_factory):
    predict_fn, variables = _predictor_parts(ConvBatchNormNet())
    export_dir = tmp_path_factory.mktemp("conv") / "export"
    path = export_predictor(predict_fn, variables, INPUT_SHAPE, np.float32, str(export_dir),
                            metadata={"class_names": list(CLASSES), "config": {"epochs": 2}})
    return path, predict_fn, variables


@pytest.fixture(scope="module")
def conv_predictor(conv_export):
    return load_predictor(conv_export[0])


def _assert_one_line_error(call, *fragments):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


# ------------------------------------------------------------------ same outputs
@pytest.mark.parametrize("batch_size", [1, 7])
def test_conv_batchnorm_export_matches_the_python_model(conv_export, conv_predictor,
                                                        batch_size):
    _, predict_fn, variables = conv_export
    x = _pixels(batch_size)
    got = conv_predictor(x)
    assert isinstance(got, np.ndarray) and got.shape == (batch_size, len(CLASSES))
    np.testing.assert_allclose(got, np.asarray(jax.jit(predict_fn)(variables, x)), rtol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)


def test_dense_export_matches_the_python_model_at_two_batch_sizes(tmp_path):
    predict_fn, variables = _predictor_parts(DenseNet())
    predictor = load_predictor(export_predictor(predict_fn, variables, INPUT_SHAPE, "float32",
                                                str(tmp_path / "dense")))
    for batch_size in (1, 7):
        x = _pixels(batch_size, seed=batch_size)
        np.testing.assert_allclose(predictor(x), np.asarray(jax.jit(predict_fn)(variables, x)),
                                   rtol=1e-6)


def test_integer_input_is_cast_to_the_exported_dtype(conv_predictor):
    x = _pixels(3)
    np.testing.assert_array_equal(conv_predictor(x.astype(np.uint8)), conv_predictor(x))


# ------------------------------------------------------------------ the artifact
def test_export_writes_the_three_files_and_describes_them(conv_export):
    path, _, variables = conv_export
    assert os.path.isabs(path)
    assert sorted(os.listdir(path)) == ["export.json", "model.jax_export", "variables.npz"]
    with open(os.path.join(path, "export.json")) as f:
        info = json.load(f)
    assert info["input_shape"] == list(INPUT_SHAPE) and info["input_dtype"] == "float32"
    assert info["outputs"] == [{"shape": ["batch", len(CLASSES)], "dtype": "float32"}]
    assert info["platforms"] == ["cpu", "cuda", "tpu"]
    assert info["jax_version"] == jax.__version__
    assert info["metadata"] == {"class_names": list(CLASSES), "config": {"epochs": 2}}
    leaves = jax.tree.leaves(variables)
    with np.load(os.path.join(path, "variables.npz")) as archive:
        assert len(archive.files) == len(leaves) == len(info["variables"])
        for i, leaf in enumerate(leaves):  # stored in argument order
            np.testing.assert_array_equal(archive[f"leaf_{i:05d}"], np.asarray(leaf))


def test_reexport_replaces_the_old_export_and_leaves_no_temp_folders(tmp_path):
    predict_fn, variables = _predictor_parts(DenseNet())
    target = str(tmp_path / "export")
    export_predictor(predict_fn, variables, INPUT_SHAPE, "float32", target, metadata={"v": 1})
    export_predictor(predict_fn, variables, INPUT_SHAPE, "float32", target, metadata={"v": 2})
    assert load_predictor(target).info["metadata"] == {"v": 2}
    assert os.listdir(tmp_path) == ["export"]


def test_export_refuses_to_replace_a_folder_that_is_not_an_export(tmp_path):
    predict_fn, variables = _predictor_parts(DenseNet())
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "summary.json").write_text("{}")
    _assert_one_line_error(
        lambda: export_predictor(predict_fn, variables, INPUT_SHAPE, "float32",
                                 str(tmp_path / "runs")),
        "holds no export", "new or empty folder")
    assert os.listdir(tmp_path / "runs") == ["summary.json"]


# ------------------------------------------------------------------ predict_file
def test_predict_file_single_example_goes_to_the_default_out_path(conv_export, conv_predictor,
                                                                 tmp_path):
    example = _pixels(1)[0]
    input_path = tmp_path / "digit.npy"
    np.save(input_path, example)
    out_path = predict_file(conv_export[0], str(input_path))
    assert out_path == str(tmp_path / "digit.pred.npy")
    np.testing.assert_array_equal(np.load(out_path), conv_predictor(example[None]))
    assert sorted(os.listdir(tmp_path)) == ["digit.npy", "digit.pred.npy"]


def test_predict_file_batch_to_an_explicit_out_path(conv_export, conv_predictor, tmp_path):
    x = _pixels(5)
    np.save(tmp_path / "batch.npy", x)
    out_path = predict_file(conv_export[0], str(tmp_path / "batch.npy"),
                            str(tmp_path / "preds.npy"))
    np.testing.assert_array_equal(np.load(out_path), conv_predictor(x))


def test_loading_and_predicting_needs_no_flax(conv_export, conv_predictor, tmp_path):
    x = _pixels(2)
    np.save(tmp_path / "x.npy", x)
    script = ("import sys, numpy as np; from train.export import predict_file; "
              "out = predict_file(sys.argv[1], sys.argv[2]); "
              "assert 'flax' not in sys.modules and 'jnn' not in sys.modules, 'imported flax'; "
              "print(np.load(out).shape)")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    result = subprocess.run([sys.executable, "-c", script, conv_export[0],
                             str(tmp_path / "x.npy")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 3)"
    np.testing.assert_array_equal(np.load(tmp_path / "x.pred.npy"), conv_predictor(x))


# ------------------------------------------------------------------ bad exports
def test_missing_export_dir(tmp_path):
    _assert_one_line_error(lambda: load_predictor(str(tmp_path / "nowhere")),
                           "no export at", "python -m train export WORKDIR")


def test_export_dir_missing_a_file(conv_export, tmp_path):
    broken = shutil.copytree(conv_export[0], tmp_path / "export")
    os.remove(broken / "variables.npz")
    _assert_one_line_error(lambda: load_predictor(str(broken)), "no export at")


@pytest.mark.parametrize("name", ["model.jax_export", "variables.npz"])
def test_truncated_artifact_is_reported_as_damaged(conv_export, tmp_path, name):
    broken = shutil.copytree(conv_export[0], tmp_path / "export")
    size = os.path.getsize(broken / name)
    with open(broken / name, "r+b") as f:
        f.truncate(size - 5)
    _assert_one_line_error(lambda: load_predictor(str(broken)), name, "damaged; export again")


# ------------------------------------------------------------------ bad inputs
def test_wrong_trailing_shape_names_the_reshape(conv_export, tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((4, 8, 8), np.float32))
    message = _assert_one_line_error(lambda: predict_file(conv_export[0],
                                                          str(tmp_path / "flat.npy")))
    assert message == ("flat.npy has examples of shape (8, 8) but the model takes (8, 8, 1); "
                       "reshape to (N, 8, 8, 1)")


@pytest.mark.parametrize("bad", [np.array([["a"] * 8] * 8).reshape(1, 8, 8, 1),
                                 np.ones((1, *INPUT_SHAPE), bool),
                                 np.ones((1, *INPUT_SHAPE), np.complex64)],
                         ids=["str", "bool", "complex"])
def test_non_numeric_input_is_refused(conv_predictor, bad):
    _assert_one_line_error(lambda: conv_predictor(bad), f"dtype {bad.dtype}", ".astype('float32')")


def test_scalar_and_empty_inputs_are_refused(conv_predictor):
    _assert_one_line_error(lambda: conv_predictor(np.float32(1)), "single number")
    _assert_one_line_error(lambda: conv_predictor(np.zeros((0, *INPUT_SHAPE))), "no examples")


def test_missing_input_file(conv_export, tmp_path):
    _assert_one_line_error(lambda: predict_file(conv_export[0], str(tmp_path / "none.npy")),
                           "no input file at", "numpy.save")


@pytest.mark.parametrize("kind", ["text", "pickle", "npz"])
def test_input_that_is_not_a_npy_array(conv_export, tmp_path, kind):
    path = tmp_path / "input.npy"
    if kind == "text":
        path.write_text("1,2,3\n")
    elif kind == "pickle":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        with open(path, "wb") as f:
            np.savez(f, x=_pixels(1))
    _assert_one_line_error(lambda: predict_file(conv_export[0], str(path)),
                           "not a .npy array", "numpy.save")


@pytest.mark.slow  # trains a run first
def test_an_exported_run_predicts_what_the_run_tested(tmp_path):
    import jnn
    from train import config as configs
    from train.deploy import export_run
    from train.loop import train_and_evaluate

    config = configs.get_config("digits_mlp")
    config.update({"epochs": 1, "parallel": "none"})
    summary = train_and_evaluate(config, str(tmp_path), progress=False, log=lambda _: None)
    predictor = load_predictor(export_run(str(tmp_path)))
    test = jnn.data.load("digits").test
    for n in (1, len(test["y"])):  # raw inputs, as the dataset stores them
        probabilities = predictor(test["x"][:n])
        assert probabilities.shape == (n, 10)
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    hits = predictor(test["x"]).argmax(-1) == test["y"]
    assert hits.mean() == pytest.approx(summary["test_accuracy"])
