"""Configs: ConfigDicts from named configs and files, typed overrides, and checks that
refuse every mistake in one line naming the fix."""

import dataclasses
import inspect
import json
import os
import textwrap

import jax
import ml_collections
import numpy as np
import pytest

import jnn
from train import config as configs
from train import config_fields

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train",
                       "configs", "examples", "own_model_and_data.py")


def refusal(fn, *args) -> str:
    """The message of the ValueError `fn(*args)` raises, checked to be one line."""
    with pytest.raises(ValueError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def invalid(name="digits_cnn", **fields) -> str:
    config = configs.get_config(name)
    with config.ignore_type():
        for field, value in fields.items():
            config[field] = value
    return refusal(configs.validate, config)


# ----------------------------------------------------------------- named configs
def test_the_seed_configs_exist():
    assert {"digits_cnn", "digits_mlp", "mnist_cnn", "mnist_mlp", "cifar10_cnn",
            "diabetes_mlp"} <= set(configs.config_names())


@pytest.mark.parametrize("name", configs.config_names())
def test_every_config_is_a_valid_config_dict_that_documents_its_command_and_result(name):
    config = configs.get_config(name)
    assert isinstance(config, ml_collections.ConfigDict) and config["config_file"] is None
    assert set(config.keys()) == set(configs.base_config().keys())
    configs.validate(config)
    doc = __import__(f"train.configs.{name}", fromlist=["x"]).__doc__
    assert f"python -m train --config {name}" in doc and "Expected" in doc


@pytest.mark.parametrize("name", configs.config_names())
def test_every_config_summary_is_its_whole_first_line(name):
    doc = __import__(f"train.configs.{name}", fromlist=["x"]).__doc__
    first, blank = doc.strip().splitlines()[:2]
    assert configs.config_doc(name) == first and blank == ""  # not cut mid-sentence


def test_examples_are_not_named_configs():
    assert "examples" not in configs.config_names()


def test_the_loop_and_runner_read_a_config_dict_as_a_dict():
    config = configs.get_config("cifar10_cnn")
    assert config["epochs"] == 30 and config.get("clip_norm") is None
    assert config.get("missing", 5) == 5 and "epochs" in config
    assert dict(configs.get_config("diabetes_mlp")["model_kwargs"]) == {
        "hidden_sizes": (32,), "dropout_rate": 0.0}

    def options(**kwargs):
        return kwargs
    assert options(**config["schedule_kwargs"]) == {"step_epochs": 7, "gamma": 0.7}
    config.update({"epochs": 1})
    assert config["epochs"] == 1


def test_get_config_returns_a_fresh_copy():
    configs.get_config("digits_cnn")["model_kwargs"]["x"] = 1
    assert configs.to_dict(configs.get_config("digits_cnn")["model_kwargs"]) == {}


def test_the_checkpointing_fields_have_their_defaults():
    config = configs.get_config("digits_cnn")
    assert (config.checkpoint_every_steps, config.max_to_keep, config.early_stopping_min_delta,
            config.skip_nonfinite, config.save_checkpoint) == (500, 3, 0.0, False, True)


# --------------------------------------------------------------------- overrides
def test_overrides_parse_by_the_type_of_the_field():
    config = configs.get_config("digits_cnn")
    for assignment in ("epochs=3", "learning_rate=1e-2", "augment=true", "clip_norm=1.5",
                       "model=mlp", "model_kwargs.hidden_sizes=64,32",
                       "model_kwargs.dropout_rate=0.25", "data_dir=/tmp/x",
                       "ensemble_learning_rate_scales=1,0.5", "skip_nonfinite=yes",
                       "checkpoint_every_steps=0"):
        configs.apply_override(config, assignment)
    assert config["epochs"] == 3 and config["learning_rate"] == 0.01 and config["augment"] is True
    assert config["clip_norm"] == 1.5 and config["model"] == "mlp"
    assert configs.to_dict(config["model_kwargs"]) == {"hidden_sizes": (64, 32),
                                                      "dropout_rate": 0.25}
    assert config["data_dir"] == "/tmp/x" and config["ensemble_learning_rate_scales"] == (1, 0.5)
    assert config["skip_nonfinite"] is True and config["checkpoint_every_steps"] == 0


@pytest.mark.parametrize("text,value", [("false", False), ("False", False), ("0", False),
                                        ("true", True), ("on", True)])
def test_batch_norm_false_is_the_boolean_false(text, value):
    config = configs.get_config("digits_cnn")
    configs.apply_override(config, f"model_kwargs.batch_norm={text}")
    assert config["model_kwargs"]["batch_norm"] is value


@pytest.mark.parametrize("batch_norm", [False, True])
def test_the_model_built_from_batch_norm_false_has_no_batch_norm(batch_norm):
    config = configs.get_config("digits_cnn")
    configs.apply_override(config, f"model_kwargs.batch_norm={str(batch_norm).lower()}")
    model = jnn.models.get(config["model"], num_outputs=10, **config["model_kwargs"])
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1)))
    assert ("batch_stats" in variables) is batch_norm
    assert any("BatchNorm" in name for name in variables["params"]) is batch_norm


def test_group_overrides_are_typed_by_the_model_set_on_the_same_command_line():
    config = configs.get_config("digits_mlp")
    configs.apply_overrides(config, ["model_kwargs.batch_norm=false", "model=cnn",
                                     "model_kwargs.features=8"])
    assert configs.to_dict(config["model_kwargs"]) == {"hidden_sizes": (128,),
                                                      "batch_norm": False, "features": 8}
    assert "hidden_sizes" in invalid("digits_mlp", model="cnn")  # mlp's field, left behind


def test_a_group_is_cleared_and_refilled_for_another_schedule():
    config = configs.get_config("cifar10_cnn")
    configs.apply_overrides(config, ["schedule_kwargs.final_fraction=0.1", "schedule=cosine",
                                     "schedule_kwargs={}"])
    assert configs.to_dict(config["schedule_kwargs"]) == {"final_fraction": 0.1}
    configs.validate(config)


def test_optional_fields_take_none():
    config = configs.get_config("digits_cnn")
    configs.apply_overrides(config, ["clip_norm=2", "clip_norm=none", "compute_dtype=None"])
    assert config["clip_norm"] is None and config["compute_dtype"] is None


@pytest.mark.parametrize("assignment,match", [
    ("epochs=ten", "epochs expects an integer, e.g. --set epochs=10"),
    ("learning_rate=fast", "learning_rate expects a number"),
    ("augment=maybe", "augment expects true or false"),
    ("batch_size=1e3", "batch_size expects an integer"),
    ("epoch=3", "unknown field 'epoch'; did you mean epochs? (--set epochs=3)"),
    ("epochs", "expected FIELD=VALUE"),
    ("model_kwargs=3", "is a group; set one of its fields as --set model_kwargs.NAME=VALUE"),
    ("epochs.x=3", "epochs is not a config group"),
    ("model_kwargs.dropout_rate=high", "model_kwargs.dropout_rate expects a number, e.g. "
                                       "--set model_kwargs.dropout_rate=0.0"),
    ("model_kwargs.features=8,8", "model_kwargs.features expects an integer"),
    ("model_kwargs.batch_norm=maybe", "model_kwargs.batch_norm expects true or false"),
    ("model_kwargs.dropout=0.2", "model_kwargs has no field 'dropout' for model 'cnn'; its "
                                 "fields are activation, batch_norm, dropout_rate"),
    ("model_kwargs.dropout=0.2", "(--set model_kwargs.dropout_rate=0.2)"),
    ("model_kwargs.hidden_sizes=64", "hidden_sizes is a field of model mlp: --set model=mlp"),
    ("model_kwargs.num_outputs=3", "the harness sets it"),
    ("schedule_kwargs.gamma=0.5", "schedule 'constant' takes none (gamma is a field of "
                                  "schedule step: --set schedule=step"),
    ("clip_norm=big", "clip_norm expects a number or none"),
])
def test_bad_overrides_name_the_fix(assignment, match):
    message = refusal(configs.apply_override, configs.get_config("digits_cnn"), assignment)
    assert message.startswith(f"--set {assignment}") and match in message


def test_a_misspelt_schedule_field_is_refused_with_the_fix():
    config = configs.get_config("cifar10_cnn")
    assert refusal(configs.apply_override, config, "schedule_kwargs.gama=0.7").endswith(
        "schedule_kwargs has no field 'gama' for schedule 'step'; its fields are gamma, "
        "step_epochs (--set schedule_kwargs.gamma=0.7)")
    config.schedule_kwargs.gama = 0.7  # the same mistake in a config file
    assert refusal(configs.validate, config) == (
        "schedule_kwargs has no field 'gama' for schedule 'step'; its fields are gamma, "
        "step_epochs (--set schedule_kwargs.gamma=0.7)")


# ----------------------------------------------------------------------- validate
@pytest.mark.parametrize("fields,match", [
    ({"model": "resnet"}, "unknown model 'resnet'; choose one of"),
    ({"optimizer": "lion"}, "unknown optimizer"), ({"dataset": "svhn"}, "unknown dataset"),
    ({"schedule": "poly"}, "unknown schedule"), ({"parallel": "gpu"}, "unknown parallel"),
    ({"compute_dtype": "int8"}, "unknown compute_dtype 'int8'"),
    ({"epochs": 0}, "epochs must be >= 1, got 0 (--set epochs=10)"),
    ({"batch_size": -1}, "batch_size must be >= 1"),
    ({"batch_size": 1.5}, "batch_size must be an integer, got 1.5 (--set batch_size=128)"),
    ({"microbatches": 3}, "batch_size 32 does not split into 3 microbatches; use --set "
                          "microbatches=2 or 4"),
    ({"learning_rate": 0.0}, "learning_rate must be > 0"),
    ({"learning_rate": float("nan")}, "learning_rate must be > 0"),
    ({"learning_rate": "fast"}, "learning_rate must be a number, got 'fast'"),
    ({"label_smoothing": 2}, "label_smoothing must be in [0, 1), got 2"),
    ({"validation_fraction": 1.0}, "validation_fraction must be in [0, 1)"),
    ({"momentum": 1.5}, "momentum must be in [0, 1]"),
    ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
    ({"clip_norm": 0.0}, "clip_norm must be > 0"), ({"l2": -1.0}, "l2 must be >= 0"),
    ({"seed": -1}, "seed must be >= 0"), ({"seed": 1.0}, "seed must be an integer"),
    ({"augment": "false"}, "augment must be true or false, got 'false'"),
    ({"early_stopping_patience": -1}, "early_stopping_patience must be >= 0"),
    ({"early_stopping_min_delta": -0.1}, "early_stopping_min_delta must be >= 0"),
    ({"checkpoint_every_steps": -1}, "checkpoint_every_steps must be >= 0"),
    ({"max_to_keep": 0}, "max_to_keep must be >= 1"),
    ({"steps_per_call": 0}, "steps_per_call must be >= 1, got 0 (--set steps_per_call=8)"),
    ({"steps_per_call": 2.5}, "steps_per_call must be an integer, got 2.5"),
    ({"skip_nonfinite": 1}, "skip_nonfinite must be true or false"),
    ({"ensemble": 0}, "ensemble must be >= 1"),
    ({"per_device_batch_size": -8}, "per_device_batch_size must be >= 0"),
    ({"dp_clip_norm": 0.0}, "dp_clip_norm must be > 0"),
    ({"dp_noise_multiplier": 1.0}, "use --set dp_clip_norm=1.0"),
    ({"dp_clip_norm": 1.0, "microbatches": 2}, "--set microbatches=1"),
    ({"dp_clip_norm": 1.0, "parallel": "pmap"}, "DP-SGD (dp_clip_norm) has no pmap variant"),
    ({"ensemble": 2, "ensemble_learning_rate_scales": (1.0,)}, "give one per member"),
    ({"ensemble": 2, "ensemble_learning_rate_scales": (1.0, -1.0)}, "must be > 0"),
    ({"ensemble": 2, "parallel": "pmap"}, "not pmap"),
    ({"fsdp": True, "parallel": "none"}, "use --parallel shard"),
    ({"loss": "mse"}, "use --set loss=cross_entropy"),
    ({"validation_fraction": 0.0, "early_stopping_patience": 3}, "validation_fraction is 0"),
    ({"epoch": 3}, "unknown field 'epoch'; did you mean epochs? (--set epochs=3)"),
])
def test_validate_rejects_bad_values_with_the_fix(fields, match):
    assert match in invalid(**fields)


def test_label_smoothing_is_refused_for_a_loss_without_it():
    assert "use --set label_smoothing=0" in invalid("diabetes_mlp", label_smoothing=0.1)


def test_a_config_missing_fields_says_to_start_from_the_base():
    config = configs.get_config("digits_cnn")
    del config["max_to_keep"]
    assert "lacks the fields max_to_keep; build it from" in refusal(configs.validate, config)


@pytest.mark.parametrize("model_kwargs,match", [
    ({"dropout_rate": "high"}, "model_kwargs.dropout_rate must be a number, got 'high' "
                               "(--set model_kwargs.dropout_rate=0.0)"),
    ({"dropout_rate": (0.1, 0.2)}, "model_kwargs.dropout_rate must be a number, got (0.1, 0.2)"),
    ({"dropout_rate": 1.0}, "model_kwargs.dropout_rate must be in [0, 1)"),
    ({"features": 0}, "model_kwargs.features must be >= 1"),
    ({"batch_norm": "false"}, "model_kwargs.batch_norm must be true or false, got 'false'"),
    ({"activation": "swish2"}, "unknown model_kwargs.activation 'swish2'; choose one of"),
    ({"kernel_init": "ones"}, "unknown model_kwargs.kernel_init"),
    ({"hidden_sizes": (64,)}, "hidden_sizes is a field of model mlp"),
    ({"batchnorm": True}, "(--set model_kwargs.batch_norm=true)"),
    ({"axis_name": "batch"}, "the harness sets it"),
])
def test_model_kwargs_are_checked_against_the_models_fields(model_kwargs, match):
    config = configs.get_config("digits_cnn")
    config.model_kwargs = model_kwargs
    assert match in refusal(configs.validate, config)


def test_tuples_of_integers_are_checked_item_by_item():
    config = configs.get_config("digits_mlp")
    config.model_kwargs.hidden_sizes = (64, 0)
    assert "each of model_kwargs.hidden_sizes must be >= 1, got 0" in refusal(
        configs.validate, config)
    config.model_kwargs.hidden_sizes = (64, 32.5)
    assert "model_kwargs.hidden_sizes must be integers separated by commas" in refusal(
        configs.validate, config)


@pytest.mark.parametrize("schedule,kwargs,match", [
    ("cosine", {"step_epochs": 3}, "schedule_kwargs has no field 'step_epochs' for schedule "
                                   "'cosine'; its fields are final_fraction (step_epochs is a "
                                   "field of schedule step: --set schedule=step"),
    ("constant", {"gamma": 0.5}, "schedule 'constant' takes none"),
    ("step", {"gamma": 0.0}, "schedule_kwargs.gamma must be in (0, 1]"),
    ("step", {"step_epochs": 2.5}, "schedule_kwargs.step_epochs must be an integer"),
    ("warmup_cosine", {"warmup_epochs": -1.0}, "schedule_kwargs.warmup_epochs must be >= 0"),
    ("cosine", {"final_fraction": 2.0}, "schedule_kwargs.final_fraction must be in [0, 1]"),
])
def test_schedule_kwargs_are_checked_against_the_schedules_options(schedule, kwargs, match):
    config = configs.get_config("digits_cnn")
    config.schedule, config.schedule_kwargs = schedule, kwargs
    assert match in refusal(configs.validate, config)


def test_schedule_options_are_keyword_options_of_make_schedule():
    parameters = inspect.signature(jnn.make_schedule).parameters
    assert set(config_fields.SCHEDULE_OPTIONS) == set(jnn.schedule_names())
    for options in config_fields.SCHEDULE_OPTIONS.values():
        assert all(parameters[o].kind is inspect.Parameter.KEYWORD_ONLY for o in options)


def test_registries_behind_validation_agree_with_jnn():
    assert "cnn" in jnn.models.names() and "adam" in jnn.optimizer_names()


# ------------------------------------------------------------- plain dicts, files
def test_to_dict_is_plain_json_and_from_dict_gives_the_config_back():
    config = configs.get_config("diabetes_mlp")
    configs.apply_overrides(config, ["clip_norm=2", "model_kwargs.hidden_sizes=16,8"])
    plain = configs.to_dict(config)
    assert type(plain) is dict and type(plain["model_kwargs"]) is dict
    restored = configs.from_dict(json.loads(json.dumps(plain)))  # lists come back as tuples
    assert isinstance(restored, ml_collections.ConfigDict)
    assert configs.to_dict(restored) == plain
    configs.validate(restored)
    configs.validate(plain)  # a plain dict is checked the same way


def test_a_config_file_is_loaded_with_its_model_and_arrays(registries):
    config = configs.load_config(EXAMPLE)
    assert config["config_file"] == EXAMPLE and os.path.isabs(config["config_file"])
    assert config["model"] in jnn.models.names() and config["dataset"] in jnn.data.dataset_names()
    configs.apply_override(config, "model_kwargs.layer_norm=true")  # typed by its own model
    assert config["model_kwargs"]["layer_norm"] is True
    configs.validate(config)


def test_from_dict_loads_the_config_file_again_for_its_registrations(registries):
    plain = configs.to_dict(configs.load_config(EXAMPLE))
    del jnn.models._REGISTRY[plain["model"]], jnn.data.SPECS[plain["dataset"]]
    restored = configs.from_dict(json.loads(json.dumps(plain)))
    configs.validate(restored)  # the model and dataset are registered again
    assert configs.to_dict(restored) == plain


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "my_config.py"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_a_relative_config_file_path_is_stored_absolute(tmp_path, monkeypatch):
    _write(tmp_path, """
        from train.configs.base import base_config

        def get_config():
            config = base_config()
            config.epochs = 2
            return config
    """)
    monkeypatch.chdir(tmp_path)
    config = configs.load_config("my_config.py")
    assert config["config_file"] == str(tmp_path / "my_config.py") and config["epochs"] == 2


@pytest.mark.parametrize("body,match", [
    ("x = 1\n", "defines no get_config()"),
    ("def get_config():\n    return 3\n", "returned int; return a ConfigDict"),
    ("def get_config():\n    return undefined_name\n", "line 2: NameError: name 'undefined_name'"),
    ("def get_config(:\n", "line 1: SyntaxError"),
    ("import jnn, numpy as np\njnn.data.register_arrays('d', train={'x': np.zeros(2)}, "
     "test={})\n", "line 2: d/train must be a dict with the keys 'x' and 'y'"),
])
def test_a_broken_config_file_is_refused_in_one_line(tmp_path, body, match):
    path = _write(tmp_path, body)
    message = refusal(configs.load_config, path)
    assert message.startswith(f"config file {path}") and match in message


def test_a_config_file_with_a_misspelt_field_is_refused_by_validate(tmp_path):
    path = _write(tmp_path, """
        from train.configs.base import base_config

        def get_config():
            config = base_config()
            config.learning_rte = 0.1
            return config
    """)
    assert "did you mean learning_rate? (--set learning_rate=0.1)" in refusal(
        configs.validate, configs.load_config(path))


def test_a_missing_config_file_or_name_names_the_alternatives(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; pass a named config"):
        configs.load_config(str(tmp_path / "nope.py"))
    assert "unknown config 'digits'; choose one of" in refusal(configs.load_config, "digits")


# ---------------------------------------------------------- datasets from arrays
def _arrays(n, classes=3, shape=(4,), seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(2.0, 3.0, (n, *shape)).astype(np.float32),
            "y": rng.integers(0, classes, n)}


def test_registered_arrays_load_like_a_tfds_dataset(registries):
    jnn.data.register_arrays("toy", train=_arrays(100, shape=(6, 6, 2)), test=_arrays(20))
    ds = jnn.data.load("toy", validation_fraction=0.2)
    assert (len(ds.train["y"]), len(ds.validation["y"]), len(ds.test["y"])) == (80, 20, 20)
    assert ds.num_outputs == 3 and ds.input_shape == (6, 6, 2) and ds.spec.task == "classification"
    # per-channel statistics of the training split (not of validation or test)
    np.testing.assert_allclose(ds.x_mean, ds.train["x"].mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(ds.x_std, ds.train["x"].std(axis=(0, 1, 2)), rtol=1e-5)
    assert "toy" in jnn.data.dataset_names()


def test_registered_regression_arrays_standardise_targets_from_train(registries):
    train = {"x": np.arange(40.0).reshape(20, 2), "y": np.arange(20.0)}
    jnn.data.register_arrays("line", train=train, test=train, task="regression")
    ds = jnn.data.load("line", validation_fraction=0.0)
    assert ds.num_outputs == 1 and ds.y_mean == 9.5 and ds.x_mean.shape == (2,)


@pytest.mark.parametrize("kwargs,match", [
    ({"train": {"x": np.zeros((3, 2)), "y": np.array([0, 4, 1])}, "num_classes": 3},
     "labels go up to 4 but num_classes is 3; pass num_classes=5 or remap the labels"),
    ({"train": {"x": np.zeros((3, 2)), "y": np.zeros(4, int)}}, "x has 3 examples but y has 4"),
    ({"train": {"x": np.zeros((3, 2)), "y": np.array([0.5, 1, 2])}}, "must be integers"),
    ({"train": {"x": np.zeros((3, 2)), "y": np.zeros(3)}, "task": "regression",
      "num_classes": 2}, "num_classes is for classification"),
    ({"train": {"x": np.zeros((3, 2)), "y": np.zeros((3, 2))}, "task": "regression"},
     "one value per example"),
    ({"train": _arrays(10), "task": "ranking"}, "task must be one of"),
])
def test_bad_arrays_are_refused_when_registered(registries, kwargs, match):
    kwargs.setdefault("test", _arrays(4))
    assert match in refusal(lambda: jnn.data.register_arrays("toy", **kwargs))


def test_a_built_in_dataset_name_cannot_be_replaced(registries):
    assert "is a built-in dataset" in refusal(
        lambda: jnn.data.register_arrays("digits", train=_arrays(4), test=_arrays(4)))


# ----------------------------------------------------------- data-dependent checks
def _loaded(registries_fixture, n_train=100, n_test=20, fraction=0.2, **kwargs):
    jnn.data.register_arrays("toy", train=_arrays(n_train), test=_arrays(n_test), **kwargs)
    return jnn.data.load("toy", validation_fraction=fraction)


def _config(**fields):
    config = configs.get_config("digits_mlp")
    config.dataset = "toy"
    config.update(fields)
    return config


def test_check_dataset_passes_a_dataset_that_fits(registries):
    configs.check_dataset(_config(batch_size=32), _loaded(registries))


def test_a_batch_larger_than_the_training_split_names_the_largest_that_fits(registries):
    message = refusal(configs.check_dataset, _config(batch_size=4096, validation_fraction=0.0),
                      _loaded(registries, n_train=1437, fraction=0.0))
    assert message == ("batch_size 4096 is larger than the 1437 training examples; use --set "
                       "batch_size=1437 or less")


def test_a_validation_fraction_leaving_less_than_a_batch_is_refused(registries):
    message = refusal(configs.check_dataset, _config(batch_size=32, validation_fraction=0.9),
                      _loaded(registries, fraction=0.9))
    assert "validation_fraction 0.9 leaves only 10 of the 100 training examples" in message
    assert "use --set validation_fraction=0.68 or less" in message


def test_a_validation_fraction_leaving_no_training_data_is_refused(registries):
    message = refusal(configs.check_dataset, _config(batch_size=1, validation_fraction=0.999),
                      _loaded(registries, n_train=10, fraction=0.999))
    assert "leaves none of the 10 training examples" in message


def test_an_empty_test_split_is_refused(registries):
    assert "empty test split" in refusal(configs.check_dataset, _config(batch_size=8),
                                         _loaded(registries, n_test=0))


def test_labels_beyond_the_models_outputs_are_refused(registries):
    dataset = dataclasses.replace(_loaded(registries), num_outputs=2)
    assert "labels must lie in [0, 1]" in refusal(configs.check_dataset,
                                                  _config(batch_size=8), dataset)


def test_augmentation_of_inputs_that_are_not_images_is_refused(registries):
    assert "use --set augment=false" in refusal(
        configs.check_dataset, _config(batch_size=8, augment=True), _loaded(registries))


def test_check_batch_divides_names_the_sizes_that_do():
    assert "use --set batch_size=" in refusal(configs.check_batch_divides, 30, 8)
    configs.check_batch_divides(32, 8)
