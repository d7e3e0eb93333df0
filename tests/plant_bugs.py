"""Plants bugs that matter, one at a time, in a copy of the repository, and runs the tests
that must catch each: `python tests/plant_bugs.py [INDEX ...]` (about 8 minutes on 2 cores).

Each line printed says CAUGHT (a test failed, as it must) or NOT CAUGHT. The copy holds the
working tree, uncommitted changes included; the repository itself is never touched.
"""
import os
import shutil
import subprocess
import sys
import tempfile

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (what the bug is, file, the correct code, the planted code, the tests that must catch it)
BUGS = [
    ("no BatchNorm averaging across devices under pmap (step)", "jnn/step.py",
     "model_state = _average_over_devices(model_state, weight_sum, axis_name)", "pass",
     ["tests/test_parallel.py", "tests/test_batch_norm.py", "tests/test_model.py"]),
    ("no cross-device statistics in jnn's BatchNorm (axis_name ignored)",
     "jnn/models/batch_norm.py", "sums = jax.lax.psum(sums, self.axis_name)", "pass",
     ["tests/test_parallel.py", "tests/test_batch_norm.py"]),
    ("mask left out of the loss's denominator", "jnn/step.py",
     "grads = jax.tree.map(lambda g: g / jnp.where(weight_sum > 0, weight_sum, 1.0), grads)",
     "grads = jax.tree.map(lambda g: g / units['count'], grads)",
     ["tests/test_step.py", "tests/test_model.py", "tests/test_properties.py"]),
    ("BatchNorm statistics ignore the mask (padded rows counted)", "jnn/models/cnn.py",
     "param_dtype=self.param_dtype)(x, mask=mask)",
     "param_dtype=self.param_dtype)(x, mask=None)",
     ["tests/test_model.py", "tests/test_step.py", "tests/test_parallel.py",
      "tests/test_batch_norm.py"]),
    ("nesterov without nesterov", "jnn/optim.py", "momentum=momentum, nesterov=True)",
     "momentum=momentum)", ["tests/test_optim.py"]),
    ("adam's betas swapped", "jnn/optim.py", "opt = optax.adam(learning_rate, b1=b1, b2=b2)",
     "opt = optax.adam(learning_rate, b1=b2, b2=b1)", ["tests/test_optim.py"]),
    ("rmsprop without momentum", "jnn/optim.py",
     "opt = optax.rmsprop(learning_rate, momentum=momentum)",
     "opt = optax.rmsprop(learning_rate)", ["tests/test_optim.py"]),
    ("augmentation ignores the epoch", "jnn/data/pipeline.py",
     "ds = ds.random_map(augment, seed=int(augment_seed.generate_state(1)[0]))",
     "ds = ds.random_map(augment, seed=int(shuffle_seed))", ["tests/test_data.py"]),
    ("crop does nothing", "jnn/data/pipeline.py",
     "out = padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]",
     "out = x.copy()  #", ["tests/test_data.py"]),
    ("initialisers all zeros", "jnn/models/initializers.py", "    return _INITIALIZERS[name]",
     "    return jax.nn.initializers.zeros", ["tests/test_models.py"]),
    ("dropout keeps with probability rate", "jnn/models/dropout.py",
     "keep_prob = 1.0 - self.rate", "keep_prob = self.rate", ["tests/test_models.py"]),
    ("dropout without 1/(1-p) scaling", "jnn/models/dropout.py",
     "return jnp.where(keep, x / keep_prob, jnp.zeros_like(x))",
     "return jnp.where(keep, x, jnp.zeros_like(x))", ["tests/test_models.py"]),
    ("early stopping one epoch late", "train/loop.py",
     "if patience and epoch + 1 - best_epoch >= patience:",
     "if patience and epoch + 1 - best_epoch > patience:", ["tests/test_loop.py"]),
    ("every process writes files", "train/loop.py", "lead = jax.process_index() == 0\n",
     "lead = True\n", ["tests/test_distributed.py"]),
    ("steps_per_call: a padded group's empty steps still run", "jnn/multistep.py",
     "return jax.lax.cond(_has_units(batch, axis_name), step, skip, state, batch)",
     "return step(state, batch)", ["tests/test_multistep.py"]),
]
only = sys.argv[1:]
missed = 0
for i, (name, path, old, new, tests) in enumerate(BUGS):
    if only and str(i) not in only:
        continue
    work = tempfile.mkdtemp(prefix="plant-")
    subprocess.run(["git", "clone", "-q", SRC, work], check=True)
    # the working tree, uncommitted changes included
    for rel in subprocess.run(["git", "ls-files", "-m", "-o", "--exclude-standard"], cwd=SRC,
                              capture_output=True, text=True).stdout.split():
        os.makedirs(os.path.dirname(os.path.join(work, rel)) or work, exist_ok=True)
        shutil.copy(os.path.join(SRC, rel), os.path.join(work, rel))
    with open(os.path.join(work, path)) as f:
        text = f.read()
    assert text.count(old) == 1, f"[{i}] {name}: the code to plant it in has changed: {old!r}"
    with open(os.path.join(work, path), "w") as f:
        f.write(text.replace(old, new))
    env = {**os.environ, "PYTHONPATH": work}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        "-m", "slow or not slow", *tests], cwd=work, env=env,
                       capture_output=True, text=True)
    failed = [line for line in r.stdout.splitlines() if line.startswith("FAILED")]
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:]
    missed += r.returncode == 0
    print(f"[{i}] {name}: {'CAUGHT' if r.returncode else 'NOT CAUGHT'} -- {failed[:1]} {last}",
          flush=True)
    shutil.rmtree(work, ignore_errors=True)
sys.exit(1 if missed else 0)
