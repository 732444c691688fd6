"""Sharding the run axis over fake CPU devices gives the same metrics as one
device, with a run count that the devices do not divide (padded).

Four devices need their own process (JAX fixes the device list at start);
the one-device reference runs in the test's own process. One device against
two processes on loopback is tests/test_multiprocess.py; the measurement on
one device per core under a timeout is tests/test_host_linalg.py."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from tests.conftest import ROOT


def measure(num_seeds: int) -> dict:
  """Two learning rates x ``num_seeds`` seeds of the tiny config, trained on
  every device of this process; the metrics of every logging point."""
  from qkvjax import metrics, tasks, train  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  cfg = tiny_config(num_seeds=num_seeds)
  points = [{"optim.learning_rate": 1e-3}, {"optim.learning_rate": 1e-2}]
  trainer = train.Trainer(cfg, tasks.make("selection", cfg), points,
                          [metrics.weight_norms, metrics.spectra, metrics.target_attention])
  out = {"devices": len(jax.devices()), "padded": trainer.padded_runs, "metrics": []}
  for _, m, state in train.train(trainer):
    out["metrics"].append([{k: v.tolist() for k, v in part.items()}
                           for part in trainer.split_runs(m)])
  out["shards"] = len(state.params["embed"]["embedding"][...].sharding.device_set)
  return out


SCRIPT = ("import json, sys\n"
          "from tests.test_sharding import measure\n"
          "print(json.dumps(measure(int(sys.argv[1]))))\n")


def test_runs_are_padded_to_a_multiple_of_the_devices_and_match_one_device():
  one = measure(3)  # 2 points x 3 seeds = 6 runs; on 4 devices, padded to 8
  proc = subprocess.run([sys.executable, "-c", SCRIPT, "3"], cwd=ROOT, capture_output=True,
                        text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "4"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  four = json.loads(proc.stdout.strip().splitlines()[-1])
  assert (one["devices"], one["padded"], one["shards"]) == (1, 6, 1)
  assert (four["devices"], four["padded"], four["shards"]) == (4, 8, 4)
  assert all(len(part["loss"]) == 3 for part in four["metrics"][0])
  assert len(one["metrics"]) == len(four["metrics"]) == 3
  for pa, pb in zip(one["metrics"], four["metrics"]):
    for x, y in zip(pa, pb):
      assert x.keys() == y.keys()
      for key in x:
        np.testing.assert_allclose(x[key], y[key], rtol=2e-5, atol=1e-6, err_msg=key)
