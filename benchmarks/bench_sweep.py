"""Sweeps and checkpoints, by hand:

    python -m benchmarks.bench_sweep [--trials=3] [--devices=4]

1. A 4-learning-rate x 8-seed sweep of the headline config folded into one
   vmapped program, against the same 4 points trained one after another
   (a program each): wall time from nothing to ``steps`` trained (compile
   included) and steady-state seed-steps/s, alternated trials.
2. The folded sweep again on ``--devices`` fake CPU devices (a subprocess).
3. The checkpoint of the headline run: seconds and MB per save, and the share
   of the headline run's wall time its saves take.
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
RATES = (3e-4, 1e-3, 3e-3, 1e-2)

TRIAL = r"""
import json, sys, time
import jax
from qkvjax import config as config_lib, tasks, train
from qkvjax import registry
from qkvjax.studies import specialization
steps, mode = int(sys.argv[1]), sys.argv[2]
rates = [float(r) for r in sys.argv[3].split(",")]
cfg = registry.load_config("specialization")
cfg.steps, task = steps, tasks.make("selection", cfg)
points = [{"optim.learning_rate": r} for r in rates]
groups = [points] if mode == "folded" else [[p] for p in points]
t0 = time.perf_counter()
chunk_times = []
for group in groups:
  trainer = train.Trainer(cfg, task, group, specialization.STUDY.metrics)
  state = trainer.init_states()
  chunk = trainer.train_chunk(cfg.log_every)
  for i in range(steps // cfg.log_every):
    t = time.perf_counter()
    state = chunk(state)
    jax.block_until_ready(state)
    if i > 0:
      chunk_times.append((time.perf_counter() - t, trainer.num_runs))
wall = time.perf_counter() - t0
seed_steps = sum(n * cfg.log_every for _, n in chunk_times) / sum(t for t, _ in chunk_times)
print(json.dumps({"wall_s": wall, "seed_steps_per_s": seed_steps,
                  "devices": len(jax.devices())}))
"""


def trial(mode: str, steps: int, devices: int = 1) -> dict:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices)}
  proc = subprocess.run([sys.executable, "-c", TRIAL, str(steps), mode,
                         ",".join(map(str, RATES))], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=1800, check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def checkpoint_cost(saves: int = 5) -> dict:
  """Seconds and MB per save of the headline run's state (8 seeds)."""
  import jax  # pylint: disable=g-import-not-at-top
  from qkvjax import checkpoints, registry, tasks, train  # pylint: disable=g-import-not-at-top
  cfg = registry.load_config("specialization")
  trainer = train.Trainer(cfg, tasks.make("selection", cfg))
  host = jax.device_get(trainer.init_states())
  with tempfile.TemporaryDirectory() as tmp:
    times = []
    for step in range(1, saves + 1):
      t0 = time.perf_counter()
      checkpoints.save(tmp, ["default"], step, host)
      times.append(time.perf_counter() - t0)
    size = sum(p.stat().st_size for p in pathlib.Path(tmp).rglob("*") if p.is_file())
  return {"s_per_save": statistics.median(times), "mb_per_save": size / checkpoints.KEEP / 2**20,
          "saves_in_headline": cfg.steps // cfg.log_every // cfg.checkpoint_every + 1}


def headline_wall() -> float:
  with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "experiments.run", "--exp=specialization",
                    f"--results_dir={tmp}", "--noprogress"], cwd=ROOT, check=True,
                   capture_output=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return time.perf_counter() - t0


def spread(values) -> str:
  return f"min {min(values):.3g} / median {statistics.median(values):.3g} / max {max(values):.3g}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--trials", type=int, default=3)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--devices", type=int, default=4)
  args = parser.parse_args()
  got = {"folded": [], "sequential": [], f"folded_{args.devices}dev": []}
  for i in range(args.trials):
    order = ("folded", "sequential") if i % 2 == 0 else ("sequential", "folded")
    for mode in order:
      got[mode].append(trial(mode, args.steps))
    got[f"folded_{args.devices}dev"].append(trial("folded", args.steps, args.devices))
    print(f"trial {i}: " + json.dumps({k: v[-1] for k, v in got.items()}), flush=True)
  print(f"\n{len(RATES)} learning rates x 8 seeds, {args.steps} steps, {args.trials} "
        "alternated trials:")
  for mode, rows in got.items():
    print(f"  {mode}: wall {spread([r['wall_s'] for r in rows])} s; seed-steps/s "
          f"{spread([r['seed_steps_per_s'] for r in rows])}")
  med = lambda mode, k: statistics.median(r[k] for r in got[mode])
  print(f"  folded / sequential: wall x{med('sequential', 'wall_s') / med('folded', 'wall_s'):.2f}"
        f" faster, seed-steps/s x{med('folded', 'seed_steps_per_s') / med('sequential', 'seed_steps_per_s'):.2f}")
  cost = checkpoint_cost()
  wall = headline_wall()
  share = cost["s_per_save"] * cost["saves_in_headline"] / wall
  print(f"checkpoint of the headline state: {cost['s_per_save']:.3f} s and "
        f"{cost['mb_per_save']:.1f} MB per save; {cost['saves_in_headline']} saves in a "
        f"{wall:.1f} s headline run = {100 * share:.1f}% of it")


if __name__ == "__main__":
  main()
