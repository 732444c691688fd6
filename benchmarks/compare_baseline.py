"""This checkout against a baseline commit, in the same run, by hand:

    python -m benchmarks.compare_baseline [--baseline=a2c83cb] [--trials=5] [--headline]

The baseline's source is exported with ``git archive`` into a temporary
directory, and trials alternate between it and this checkout, each in a
fresh process (so compilation is measured too): the default headline config
(8 seeds, 2 layers x 4 heads, d_model 64), its training chunk's compile time
and seed-steps/s (median of 5 chunks of ``log_every`` steps), and the
measurement's compile and run time. With ``--headline``, also the wall time of
the whole headline command (``--exp=specialization``), alternated the same
way. Prints min / median / max per side and the ratio of medians (this
checkout / baseline). The default baseline is the last commit before the
models became Flax NNX modules.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASELINE = "a2c83cb"  # plain-pytree model, before the NNX redesign

TRIAL = r"""
import json, time
import jax
t0 = time.perf_counter()
from qkvjax import config as config_lib, train
try:
  from qkvjax import registry  # configs by name; the baseline had them in config
except ImportError:
  registry = config_lib
cfg = registry.load_config("specialization")
if hasattr(train, "make_trainer"):  # the pytree baseline
  trainer = train.make_trainer(cfg)
  measure = lambda s: trainer.measure(s)
else:
  from qkvjax import tasks
  from qkvjax.studies import specialization
  trainer = train.Trainer(cfg, tasks.make("selection", cfg),
                          metrics=specialization.STUDY.metrics)
  measure = trainer.measure_states
state = trainer.init_states()
jax.block_until_ready(state)
out = {"init_s": time.perf_counter() - t0}
chunk = trainer.train_chunk(cfg.log_every)
t0 = time.perf_counter()
state = chunk(state)
jax.block_until_ready(state)
out["compile_chunk_s"] = time.perf_counter() - t0
t0 = time.perf_counter()
jax.block_until_ready(measure(state))
out["compile_measure_s"] = time.perf_counter() - t0
times = []
for _ in range(5):
  t0 = time.perf_counter()
  state = chunk(state)
  jax.block_until_ready(state)
  times.append(time.perf_counter() - t0)
times.sort()
out["seed_steps_per_s"] = cfg.log_every * cfg.num_seeds / times[2]
t0 = time.perf_counter()
jax.block_until_ready(measure(state))
out["measure_s"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def export(commit: str, dest: pathlib.Path) -> None:
  archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True,
                           check=True).stdout
  subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def trial(tree: pathlib.Path) -> dict:
  env = {**os.environ, "PYTHONPATH": str(tree), "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", TRIAL], cwd=tree, env=env,
                        capture_output=True, text=True, timeout=900, check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def headline(tree: pathlib.Path, results_dir: str) -> dict:
  env = {**os.environ, "PYTHONPATH": str(tree), "JAX_PLATFORMS": "cpu"}
  t0 = time.perf_counter()
  subprocess.run([sys.executable, "-m", "experiments.run", "--exp=specialization",
                  f"--results_dir={results_dir}", "--noprogress"], cwd=tree, env=env,
                 capture_output=True, text=True, timeout=1800, check=True)
  return {"headline_wall_s": time.perf_counter() - t0}


def spread(values) -> str:
  return (f"min {min(values):.3g} / median {statistics.median(values):.3g} / "
          f"max {max(values):.3g}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--baseline", default=BASELINE)
  parser.add_argument("--trials", type=int, default=5)
  parser.add_argument("--headline", action="store_true",
                      help="also time the whole --exp=specialization command")
  args = parser.parse_args()
  sides = {"baseline": {}, "this checkout": {}}
  with tempfile.TemporaryDirectory() as tmp:
    base = pathlib.Path(tmp) / "baseline"
    base.mkdir()
    export(args.baseline, base)
    trees = {"baseline": base, "this checkout": ROOT}
    for i in range(args.trials):
      for name in (("baseline", "this checkout") if i % 2 == 0 else
                   ("this checkout", "baseline")):
        got = trial(trees[name])
        if args.headline:
          got.update(headline(trees[name], str(pathlib.Path(tmp) / f"r{i}{name[0]}")))
        for k, v in got.items():
          sides[name].setdefault(k, []).append(v)
        print(f"trial {i} {name}: {json.dumps({k: round(v, 3) for k, v in got.items()})}",
              flush=True)
  print(f"\nbaseline {args.baseline} vs this checkout, {args.trials} alternated trials:")
  for key in sides["baseline"]:
    a, b = sides["baseline"][key], sides["this checkout"][key]
    print(f"  {key}: baseline {spread(a)}; this checkout {spread(b)}; "
          f"ratio of medians {statistics.median(b) / statistics.median(a):.3f}")


if __name__ == "__main__":
  main()
