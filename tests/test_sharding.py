"""Sharding the run axis over fake CPU devices gives the same metrics as one
device, including a run count that the devices do not divide (padded).

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
from qkvjax import metrics, tasks, train
cfg = tiny_config(num_seeds=int(sys.argv[2]), steps=4, log_every=2)
points = [{"optim.learning_rate": 1e-3}, {"optim.learning_rate": 1e-2}]
trainer = train.Trainer(cfg, tasks.make("selection", cfg), points,
                        [metrics.weight_norms, metrics.spectra, metrics.target_attention])
out = {"devices": len(jax.devices()), "padded": trainer.padded_runs, "metrics": []}
for step, m, state in train.train(trainer):
  out["metrics"].append([{k: v.tolist() for k, v in part.items()}
                         for part in trainer.split_runs(m)])
out["shards"] = len(state.params["embed"]["embedding"][...].sharding.device_set)
print(json.dumps(out))
"""


def _run(n_devices: int, num_seeds: int) -> dict:
  proc = subprocess.run([sys.executable, "-c", SCRIPT, str(n_devices), str(num_seeds)],
                        cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _same(a, b):
  assert len(a["metrics"]) == len(b["metrics"]) == 3
  for pa, pb in zip(a["metrics"], b["metrics"]):
    for x, y in zip(pa, pb):
      assert x.keys() == y.keys()
      for key in x:
        np.testing.assert_allclose(x[key], y[key], rtol=2e-5, atol=1e-6, err_msg=key)


def test_run_axis_sharded_over_four_devices_matches_one_device():
  one, four = _run(1, 2), _run(4, 2)
  assert (one["devices"], one["padded"], one["shards"]) == (1, 4, 1)
  assert (four["devices"], four["padded"], four["shards"]) == (4, 4, 4)
  _same(one, four)


def test_runs_are_padded_to_a_multiple_of_the_devices():
  one, four = _run(1, 3), _run(4, 3)  # 2 points x 3 seeds = 6 runs on 4 devices
  assert one["padded"] == 6 and four["padded"] == 8 and four["shards"] == 4
  assert all(len(part["loss"]) == 3 for part in four["metrics"][0])
  _same(one, four)


def test_every_metric_of_the_headline_measures_on_one_device_per_core():
  """The full measurement on as many CPU devices as cores (at least 2) must
  finish: XLA's CPU SVD once deadlocked when the run axis was sharded, so the
  spectra are finished on the host. A hang fails here instead of hanging CI."""
  script = (
      "import jax\n"
      "from qkvjax import registry as C, tasks, train\n"
      "from qkvjax.studies import specialization\n"
      "cfg = C.load_config('specialization')\n"
      "t = train.Trainer(cfg, tasks.make('selection', cfg), metrics=specialization.STUDY.metrics)\n"
      "m = t.fetch(t.measure_states(t.init_states()))\n"
      "print(len(jax.devices()), len(m['sv/L0/query/000']), m['eff_rank/L1/value'].min() > 1)\n")
  devices = max(2, os.cpu_count() or 1)
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                        timeout=420, env={**os.environ, "JAX_PLATFORMS": "cpu",
                                          "JAX_NUM_CPU_DEVICES": str(devices)})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == [str(devices), "8", "True"]
