"""A sweep (two learning rates folded into one program) gives the same
metrics on one device (in the test's process) and as two processes on loopback
(jax.distributed over gloo), and the two processes write one results
directory. One device against four in one process is tests/test_sharding.py."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np

from tests.conftest import ROOT

ARGS = ["-m", "experiments.run", "--exp=specialization", "--noprogress", "--figure_formats=none",
        "--sweep.optim.learning_rate=1e-3,1e-2", "--config.model.n_heads=2",
        "--config.num_seeds=3", "--config.steps=4", "--config.log_every=2",
        "--config.batch_size=8", "--config.model.d_model=16", "--config.model.d_head=8",
        "--config.model.d_mlp=16", "--config.task.n_slots=3", "--config.task.n_categories=3",
        "--config.task.nouns_per_category=3", "--config.task.n_details=3"]


def _env(devices: int) -> dict:
  return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices)}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _rows(results: pathlib.Path) -> dict[str, list[dict]]:
  (sweep_dir,) = (results / "specialization").iterdir()
  manifest = json.loads((sweep_dir / "sweep.json").read_text())
  assert [p["status"] for p in manifest["points"]] == ["complete"] * 2
  return {p["name"]: [json.loads(l) for l in
                      (sweep_dir / p["name"] / "metrics.jsonl").read_text().splitlines()]
          for p in manifest["points"]}


def _same(a, b):
  assert a.keys() == b.keys()
  for name in a:
    assert len(a[name]) == len(b[name]) == 3 * 3, name
    for ra, rb in zip(a[name], b[name]):
      assert ra.keys() == rb.keys()
      for k, v in ra.items():
        if isinstance(v, float):
          np.testing.assert_allclose(v, rb[k], rtol=2e-5, atol=1e-6, err_msg=f"{name} {k}")
        else:
          assert v == rb[k], (name, k)


def test_one_device_and_two_processes_agree(tmp_path):
  from experiments import run as run_cli  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 1
  assert run_cli.main(["run", *ARGS[2:], f"--results_dir={tmp_path}/d1"]) == 0
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, *ARGS, f"--results_dir={tmp_path}/p2",
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
      cwd=ROOT, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "wrote" in outs[0][0] and "wrote" not in outs[1][0]  # only process 0 writes
  assert len(list((tmp_path / "p2" / "specialization").iterdir())) == 1
  one, two = (_rows(tmp_path / d) for d in ("d1", "p2"))
  _same(one, two)
