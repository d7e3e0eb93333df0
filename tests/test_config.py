import pytest

import jnn
from train import config as configs

REQUIRED = ("dataset", "model", "optimizer", "learning_rate", "batch_size", "epochs", "seed")


def test_the_seed_configs_exist():
    assert {"digits_cnn", "digits_mlp", "mnist_cnn", "mnist_mlp", "cifar10_cnn",
            "diabetes_mlp"} <= set(configs.config_names())


@pytest.mark.parametrize("name", configs.config_names())
def test_every_config_is_valid_and_documents_its_command_and_result(name):
    config = configs.get_config(name)
    assert all(field in config for field in REQUIRED)
    configs.validate(config)
    doc = __import__(f"train.configs.{name}", fromlist=["x"]).__doc__
    assert f"python -m train --config {name}" in doc and "Expected" in doc


def test_overrides_parse_by_the_type_of_the_field():
    config = configs.get_config("digits_cnn")
    for assignment in ("epochs=3", "learning_rate=1e-2", "augment=true", "clip_norm=1.5",
                       "model=mlp", "model_kwargs.hidden_sizes=64,32",
                       "model_kwargs.dropout_rate=0.25", "data_dir=/tmp/x"):
        configs.apply_override(config, assignment)
    assert config["epochs"] == 3 and config["learning_rate"] == 0.01 and config["augment"] is True
    assert config["clip_norm"] == 1.5 and config["model"] == "mlp"
    assert config["model_kwargs"] == {"hidden_sizes": (64, 32), "dropout_rate": 0.25}
    assert config["data_dir"] == "/tmp/x"


def test_get_config_returns_a_fresh_copy():
    configs.get_config("digits_cnn")["model_kwargs"]["x"] = 1
    assert configs.get_config("digits_cnn")["model_kwargs"] == {}


@pytest.mark.parametrize("assignment,match", [
    ("epochs=ten", "epochs expects an integer"),
    ("learning_rate=fast", "learning_rate expects a number"),
    ("augment=maybe", "augment expects true or false"),
    ("epoch=3", "unknown field 'epoch'"),
    ("epochs", "expected FIELD=VALUE"),
    ("model_kwargs=3", "is a group"),
    ("epochs.x=3", "is not a config group"),
])
def test_bad_overrides_name_the_fix(assignment, match):
    with pytest.raises(ValueError, match=match):
        configs.apply_override(configs.get_config("digits_cnn"), assignment)


@pytest.mark.parametrize("field,value,match", [
    ("model", "resnet", "unknown model 'resnet'"), ("optimizer", "lion", "unknown optimizer"),
    ("dataset", "svhn", "unknown dataset"), ("schedule", "poly", "unknown schedule"),
    ("epochs", 0, "epochs must be a positive integer"), ("batch_size", -1, "batch_size"),
    ("learning_rate", 0.0, "learning_rate must be > 0"), ("loss", "mse", "use --set loss=cross_entropy"),
])
def test_validate_rejects_bad_values_with_the_fix(field, value, match):
    config = configs.get_config("digits_cnn")
    config[field] = value
    with pytest.raises(ValueError, match=match):
        configs.validate(config)


def test_unknown_config_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown config 'digits'.*digits_cnn"):
        configs.get_config("digits")


def test_registries_behind_validation_agree_with_jnn():
    assert "cnn" in jnn.models.names() and "adam" in jnn.optimizer_names()
