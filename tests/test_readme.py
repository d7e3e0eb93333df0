"""The README's code runs as written."""

import os
import re

import jax
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # runs every README block, each compiling several steps

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _python_block_after(heading: str) -> str:
    text = open(README).read()
    return re.search(re.escape(heading) + r".*?```python\n(.*?)```", text, re.S).group(1)


def _batch(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, n)


def test_the_five_minute_tour_runs():
    x, y = _batch()
    ns = {"x": x, "y": y, "mask": np.ones(len(y), bool)}
    exec(_python_block_after("## The library in five minutes"), ns)
    assert int(ns["state"].step) == 1


def test_the_transform_tour_runs_with_your_own_module():
    x, y = _batch()
    ns = {"x": x, "y": y}
    exec(_python_block_after("## One step, every transform"), ns)
    assert ns["metrics"]["loss"][0].shape == (4,)  # the ensemble's
    assert jax.tree.leaves(ns["grads"])[0].shape[0] == 32  # per-example gradients
    assert float(ns["eval_metrics"]["loss"][1]) == 32


def test_your_own_model_loss_and_precision_run():
    x, y = _batch()
    ns = {"x": x, "y": y}
    exec(_python_block_after("## Your own model, loss and precision"), ns)
    assert int(ns["linen_state"].step) == 2 and int(ns["nnx_state"].step) == 2
    assert "batch_stats" in ns["linen_state"].model_state
    assert set(ns["metrics"]) == {"loss", "margin"}
    lm = {k: float(v) for k, v in __import__("jnn").summarize(ns["lm_metrics"]).items()}
    assert set(lm) == {"loss", "accuracy", "perplexity"}
    assert float(ns["lm_metrics"]["loss"][1]) == sum(range(8, 16))  # real next tokens
    np.testing.assert_allclose(lm["perplexity"], np.exp(lm["loss"]), rtol=1e-6)
