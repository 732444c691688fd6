"""Sharding the seed axis over 4 fake CPU devices gives the same metrics as one.

Each device count needs its own process (JAX fixes the device list at start).
"""

import json
import os
import subprocess
import sys

import numpy as np

from tests.conftest import ROOT

SCRIPT = r"""
import json, sys
import jax
jax.config.update("jax_num_cpu_devices", int(sys.argv[1]))
from tests.conftest import tiny_config
from qkvjax import train
cfg = tiny_config(num_seeds=4, steps=4, log_every=2)
trainer = train.make_trainer(cfg)
out = {"devices": len(jax.devices()), "mesh": int(trainer.mesh.devices.size), "metrics": []}
for step, m, state in train.train(trainer):
  out["metrics"].append({k: v.tolist() for k, v in m.items()})
out["shards"] = len(state.params["embed"].sharding.device_set)
print(json.dumps(out))
"""


def _run(n_devices: int) -> dict:
  proc = subprocess.run([sys.executable, "-c", SCRIPT, str(n_devices)], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_seed_axis_sharded_over_four_devices_matches_one_device():
  one, four = _run(1), _run(4)
  assert (one["devices"], one["mesh"], one["shards"]) == (1, 1, 1)
  assert (four["devices"], four["mesh"], four["shards"]) == (4, 4, 4)
  assert len(one["metrics"]) == len(four["metrics"]) == 3
  for a, b in zip(one["metrics"], four["metrics"]):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=2e-5, atol=1e-6, err_msg=key)


def test_mesh_uses_the_most_devices_that_divide_the_seeds():
  proc = subprocess.run([sys.executable, "-c", (
      "import jax; jax.config.update('jax_num_cpu_devices', 4)\n"
      "from qkvjax import train\n"
      "print([int(train.seed_mesh(n).devices.size) for n in (1, 2, 3, 4, 6, 8)])")],
      cwd=ROOT, capture_output=True, text=True, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == "[1, 2, 3, 4, 3, 4]"
