"""No LAPACK call inside a compiled program, and a sharded measurement that
would deadlock if one were there finishes.

XLA's CPU LAPACK kernels (SVD, eig, eigh, QR...) split their batch over the
same thread pool that runs the devices of a multi-device CPU program; with the
run axis sharded over as many devices as cores, every worker thread ended up
waiting inside one LAPACK call for sub-tasks that had no thread left (the
measurement of a 24-run sweep hung for good). Spectra and OV eigenvalues are
therefore finished on the host (``metrics.HostMetric``). The first test reads
every study's compiled programs (lowered, not compiled) for LAPACK custom
calls; the second runs the headline's measurement with 12 runs per device on
one device per core under a timeout, so a hang fails the suite.
"""

import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from qkvjax import config as config_lib
from qkvjax import registry
from qkvjax import runner
from qkvjax import study as study_lib
from qkvjax import train
from tests.conftest import ROOT

LAPACK = re.compile(r"custom_call[^\n]*(lapack|eig|svd|geqrf|potrf|getrf|syevd|gesdd)", re.I)


def _training_studies():
  out = []
  for exp in registry.available_experiments():
    try:
      out.append(study_lib.study_of(exp))
    except config_lib.ConfigError:
      continue  # claims, figures, pretrained: no training program
  return out


def _lowered_texts(study):
  """The measurement and one training chunk of each of the study's programs
  at its tiny variant (the same operations as the default config's at
  smaller sizes), as StableHLO text."""
  config = registry.load_config(study.name, "tiny")
  programs = runner.plan(study, [config])
  built = runner.build_tasks(programs)
  for p in programs[:2]:  # further programs differ only in sizes and flags
    trainer = train.Trainer(p.config, built[runner._task_key(p)], p.points,  # pylint: disable=protected-access
                            study.logged_metrics(), study.model_fn)
    keys = jax.ShapeDtypeStruct((trainer.padded_runs, 2), np.uint32)
    values = {f: jax.ShapeDtypeStruct((trainer.padded_runs,), np.float32)
              for f in trainer.folded}
    state = jax.eval_shape(trainer.init, keys, values)
    yield "measure", trainer.measure.lower(state, values).as_text()
    yield "chunk", trainer.train_chunk(1).lower(state).as_text()


@pytest.mark.parametrize("study", _training_studies(), ids=lambda s: s.name)
def test_no_study_program_calls_lapack(study):
  for kind, text in _lowered_texts(study):
    found = LAPACK.findall(text)
    assert not found, f"{study.name} {kind} program calls {sorted(set(found))}"


def test_the_audit_sees_a_lapack_call():
  """The pattern the audit looks for is what XLA emits for eig and SVD on CPU."""
  text = jax.jit(lambda m: (jax.numpy.linalg.eigvals(m), jax.numpy.linalg.svd(m)[1])).lower(
      jax.ShapeDtypeStruct((4, 4), np.float32)).as_text()
  assert LAPACK.search(text)


def test_folded_sweep_measurement_finishes_with_12_runs_per_device():
  """The headline's every metric group (spectra and OV copying among them)
  on a folded program of 12 runs per device, one device per core, must
  finish: XLA's CPU SVD once deadlocked when the run axis was sharded, so
  the spectra are finished on the host. A hang fails here, not CI."""
  devices = max(2, os.cpu_count() or 1)
  script = (
      "import jax\n"
      "from qkvjax import registry as C, tasks, train\n"
      "from qkvjax.studies import specialization as S\n"
      "cfg = C.load_config('specialization')\n"
      "cfg.num_seeds = 4\n"
      f"points = [{{'optim.learning_rate': 1e-3 * (i + 1)}} for i in range({3 * devices})]\n"
      "t = train.Trainer(cfg, tasks.make('selection', cfg), points,\n"
      "                  S.STUDY.logged_metrics())\n"
      "m = t.fetch(t.measure_states(t.init_states()))\n"
      "print(len(jax.devices()), t.padded_runs, len(m['ov_copying/L0/H0']),\n"
      "      len(m['sv/L0/query/000']), m['eff_rank/L1/value'].min() > 1)\n")
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                        text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu",
                             "JAX_NUM_CPU_DEVICES": str(devices)})
  assert proc.returncode == 0, proc.stderr[-3000:]
  runs = 12 * devices
  assert proc.stdout.split() == [str(devices), str(runs), str(runs), str(runs), "True"]
