"""The harness under every transform (8 forced CPU devices): same results as one device."""

import numpy as np
import pytest

from train import config as configs
from train.__main__ import main
from train.loop import train_and_evaluate

pytestmark = pytest.mark.slow  # end-to-end harness runs on 8 devices


def _run(tmp_path, name="digits_cnn", **fields):
    config = configs.get_config(name)
    config.update({"epochs": 2, "steps_per_call": 1, **fields})
    return train_and_evaluate(config, str(tmp_path), progress=False, log=lambda _: None)


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("none"), parallel="none")


@pytest.mark.parametrize("mode,fsdp,steps_per_call", [
    ("shard", False, 1), ("shard", True, 1), ("pmap", False, 1),
    ("shard", False, 4), ("pmap", False, 4), ("none", False, 4)])
def test_data_parallel_runs_match_the_single_device_run(tmp_path, single_device, mode, fsdp,
                                                         steps_per_call):
    summary = _run(tmp_path, parallel=mode, fsdp=fsdp, steps_per_call=steps_per_call)
    if mode == "none":
        assert summary["devices"] == 1
        np.testing.assert_allclose(summary["test_loss"], single_device["test_loss"], rtol=1e-5)
        return
    assert summary["parallel"] == mode and summary["devices"] == 8
    assert summary["steps"] == single_device["steps"]
    np.testing.assert_allclose(summary["test_loss"], single_device["test_loss"], rtol=1e-3)
    assert summary["test_accuracy"] == pytest.approx(single_device["test_accuracy"], abs=0.005)


def test_auto_shards_over_several_devices(tmp_path):
    assert _run(tmp_path, epochs=1)["parallel"] == "shard"


def test_an_ensemble_reports_members_and_the_averaged_prediction(tmp_path, single_device):
    summary = _run(tmp_path, parallel="none", ensemble=3)
    assert len(summary["test_member_accuracies"]) == 3
    assert summary["steps"] == single_device["steps"]  # one compiled step trains all members
    # member 0 has the single run's seed, so it is the single run
    assert summary["test_member_accuracies"][0] == pytest.approx(single_device["test_accuracy"],
                                                                 abs=1e-9)
    assert 0.0 <= summary["test_accuracy"] <= 1.0


def test_a_sharded_ensemble_with_learning_rate_scales_trains(tmp_path):
    summary = _run(tmp_path, epochs=1, parallel="shard", ensemble=2,
                   ensemble_learning_rate_scales=(1.0, 0.5))
    assert len(summary["test_member_accuracies"]) == 2


def test_per_device_batch_size_sets_the_global_batch(tmp_path):
    summary = _run(tmp_path, epochs=1, parallel="shard", per_device_batch_size=4)
    assert summary["global_batch_size"] == 32


def test_dp_sgd_config_trains(tmp_path):
    summary = _run(tmp_path, name="digits_mlp", epochs=1, parallel="none", dp_clip_norm=1.0,
                   dp_noise_multiplier=0.5)
    assert summary["test_accuracy"] > 0.3


@pytest.mark.parametrize("argv,match", [
    (["--parallel", "shard", "--batch-size", "30"],
     "global batch size 30 does not divide over 8 devices; use --set batch_size=24 or 32 "
     "(or --per-device-batch-size)"),
    (["--parallel", "pmap", "--batch-size", "30"],
     "global batch size 30 does not divide over 8 devices; use --set batch_size=24 or 32 "
     "(or --per-device-batch-size)"),
    (["--parallel", "shard", "--batch-size", "5"],
     "global batch size 5 does not divide over 8 devices; use --set batch_size=8 "
     "(or --per-device-batch-size)"),
    (["--parallel", "none", "--fsdp"], "use --parallel shard"),
    (["--parallel", "pmap", "--ensemble", "2"], "not pmap"),
    (["--ensemble", "0"], "ensemble must be >= 1"),
    (["--coordinator", "127.0.0.1:1234"], "needs all of --coordinator"),
    (["--set", "ensemble_learning_rate_scales=1,2", "--ensemble", "3"], "give one per member"),
])
def test_bad_transform_options_give_one_line(capsys, tmp_path, argv, match):
    assert main(argv + ["--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and match in err
