"""Training speed, by hand:

    python -m benchmarks.bench_train [--quick]     # this code: compile, throughput, overheads
    python -m benchmarks.bench_train --torch       # against PyTorch (pip install -e '.[bench]')

Without ``--torch``: the machine's float32 matmul peak; for the headline
config, compile times, steps/s and seed-steps/s of the training chunk, the
model GFLOP/s (XLA's cost analysis) against that peak, and what the in-jit
metrics cost per logging point; the gain of ``lax.scan`` over one dispatch
per step; and seed-steps/s of 16 seeds in one vmapped program against 16
single-seed programs run one after another.

With ``--torch``: for each workload (the headline, 64 seeds, a 4x wider and
2x deeper model), qkvjax's training chunk on one CPU device and on one device
per core, against the same model and step in PyTorch (every seed its own
model, looped; all seeds batched in one model, eager; and batched under
``torch.compile``), each trial a fresh process, alternated; the median of
``--trials`` and the ratio qkvjax / PyTorch. Both start from the same weights
and compute the same loss at initialization (checked first).
``--workloads``, ``--sides`` and ``--chunk`` (steps per timed chunk) narrow a
long comparison, e.g. without the looped PyTorch models:

    python -m benchmarks.bench_train --torch --chunk=10 --workloads="64 seeds,larger model" \
        --sides="qkvjax;qkvjax, 1 device per core;torch batched;torch compiled"
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKLOADS = {  # name: config overrides of the headline config
    "headline": {},
    "64 seeds": {"num_seeds": 64},
    "larger model": {"model.d_model": 256, "model.n_layers": 4, "model.n_heads": 8,
                     "model.d_head": 32, "model.d_mlp": 512},
}


def _time(fn, repeats: int) -> float:
  """Best wall time of ``repeats`` calls of ``fn`` (which must block)."""
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def _config(overrides=None):
  from qkvjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from qkvjax import registry  # pylint: disable=g-import-not-at-top
  return config_lib.apply_overrides(registry.load_config("specialization"), overrides or {})


def _trainer(cfg, metric_fns=()):
  from qkvjax import tasks, train  # pylint: disable=g-import-not-at-top
  return train.Trainer(cfg, tasks.make("selection", cfg), metrics=metric_fns)


# ---- this code -------------------------------------------------------------------------
def matmul_peak_gflops(n: int = 1024, repeats: int = 10) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  f(a, b).block_until_ready()
  return 2 * n**3 / _time(lambda: f(a, b).block_until_ready(), repeats) / 1e9


def _flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return None if not cost else float(cost.get("flops", 0.0)) or None


def bench_config(cfg, repeats: int) -> dict:
  """Compile times, throughput and metrics cost of one config's training."""
  import jax  # pylint: disable=g-import-not-at-top
  from qkvjax.studies import specialization  # pylint: disable=g-import-not-at-top
  chunk = cfg.log_every
  out = {"num_seeds": cfg.num_seeds, "chunk_steps": chunk}
  t0 = time.perf_counter()
  trainer = _trainer(cfg, specialization.STUDY.metrics)
  state = trainer.init_states()
  jax.block_until_ready(state)
  out["compile_init_s"] = time.perf_counter() - t0
  step_fn = trainer.train_chunk(chunk)
  t0 = time.perf_counter()
  step_fn.lower(state).compile()
  out["compile_chunk_s"] = time.perf_counter() - t0
  values = trainer.device_values()
  t0 = time.perf_counter()
  trainer.measure.lower(state, values).compile()
  out["compile_measure_s"] = time.perf_counter() - t0
  holder = [step_fn(state)]
  jax.block_until_ready(holder[0])

  def run_chunk():
    holder[0] = step_fn(holder[0])
    jax.block_until_ready(holder[0])

  t_chunk = _time(run_chunk, repeats)
  t_measure = _time(lambda: jax.block_until_ready(trainer.measure(holder[0], values)), repeats)
  out["steps_per_s"] = chunk / t_chunk
  out["seed_steps_per_s"] = chunk * cfg.num_seeds / t_chunk
  # XLA counts a scan body once, so take FLOPs from a one-step program.
  flops = _flops(jax.jit(jax.vmap(trainer.train_step)).lower(holder[0]).compile())
  out["gflop_per_step"] = None if flops is None else flops / 1e9
  out["achieved_gflops"] = None if flops is None else flops * chunk / t_chunk / 1e9
  out["measure_s"] = t_measure
  # Metrics cost: one measure per log_every steps, relative to those steps.
  out["metrics_overhead"] = t_measure / (t_chunk / chunk * cfg.log_every)
  return out


def scan_gain(cfg, n: int, repeats: int) -> dict:
  """n steps as one scan call vs n calls of a one-step program."""
  import jax  # pylint: disable=g-import-not-at-top
  trainer = _trainer(cfg)
  one, many = trainer.train_chunk(1), trainer.train_chunk(n)
  holder = [many(one(trainer.init_states()))]
  jax.block_until_ready(holder[0])

  def run(f, times):
    def go():
      for _ in range(times):
        holder[0] = f(holder[0])
      jax.block_until_ready(holder[0])
    return go

  t_one, t_many = _time(run(one, n), repeats), _time(run(many, 1), repeats)
  return {"steps": n, "scan_speedup": t_one / t_many}


def vmap_gain(cfg, num_seeds: int, repeats: int) -> dict:
  """Seed-steps/s: ``num_seeds`` seeds in one vmapped program against the
  same seeds run one after another (a single-seed program each)."""
  import jax  # pylint: disable=g-import-not-at-top
  from qkvjax import config as config_lib  # pylint: disable=g-import-not-at-top
  chunk = cfg.log_every
  together = _trainer(config_lib.apply_overrides(cfg, {"num_seeds": num_seeds}))
  f = together.train_chunk(chunk)
  holder = [f(together.init_states())]
  jax.block_until_ready(holder[0])

  def run_vmapped():
    holder[0] = f(holder[0])
    jax.block_until_ready(holder[0])

  single = _trainer(config_lib.apply_overrides(cfg, {"num_seeds": 1}))
  g = single.train_chunk(chunk)
  states = [g(single.init_states()) for _ in range(num_seeds)]
  jax.block_until_ready(states)

  def run_sequential():
    for i in range(num_seeds):
      states[i] = g(states[i])
      jax.block_until_ready(states[i])

  t_vmapped, t_seq = _time(run_vmapped, repeats), _time(run_sequential, repeats)
  return {"num_seeds": num_seeds, "vmapped_seed_steps_per_s": num_seeds * chunk / t_vmapped,
          "sequential_seed_steps_per_s": num_seeds * chunk / t_seq,
          "vmap_speedup": t_seq / t_vmapped}


def tiny(cfg):
  from qkvjax import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.apply_overrides(cfg, {
      "model.d_model": 16, "model.n_heads": 2, "model.d_head": 8, "model.n_layers": 1,
      "model.d_mlp": 32, "batch_size": 8})


def report_this(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  repeats = 2 if args.quick else 5
  cfg = _config()
  rep = {"backend": jax.default_backend(), "devices": len(jax.devices()),
         "matmul_peak_gflops": matmul_peak_gflops(repeats=repeats * 2),
         "default": bench_config(cfg, repeats), "scan": scan_gain(cfg, 10, repeats),
         "vmap16_tiny": vmap_gain(tiny(cfg), 16, repeats),
         "vmap16_default": vmap_gain(cfg, 16, repeats)}
  d, peak = rep["default"], rep["matmul_peak_gflops"]
  print(f"{rep['devices']} {rep['backend']} device(s); float32 matmul peak "
        f"(1024^3, jitted): {peak:.1f} GFLOP/s")
  print(f"headline config ({d['num_seeds']} seeds vmapped): {d['steps_per_s']:.1f} steps/s, "
        f"{d['seed_steps_per_s']:.0f} seed-steps/s")
  if d["achieved_gflops"]:
    print(f"  model FLOPs: {d['gflop_per_step']:.3f} GFLOP/step -> {d['achieved_gflops']:.1f} "
          f"GFLOP/s ({100 * d['achieved_gflops'] / peak:.0f}% of matmul peak)")
  print(f"  compile: init {d['compile_init_s']:.1f} s, chunk {d['compile_chunk_s']:.1f} s, "
        f"measure {d['compile_measure_s']:.1f} s")
  print(f"  metrics cost: {d['measure_s'] * 1e3:.0f} ms per logging point = "
        f"{100 * d['metrics_overhead']:.1f}% of the {cfg.log_every} steps between them")
  print(f"lax.scan of 10 steps vs 10 one-step dispatches: {rep['scan']['scan_speedup']:.2f}x")
  for name in ("vmap16_tiny", "vmap16_default"):
    v = rep[name]
    print(f"{name}: vmapped {v['vmapped_seed_steps_per_s']:.0f} vs sequential "
          f"{v['sequential_seed_steps_per_s']:.0f} seed-steps/s -> {v['vmap_speedup']:.2f}x")
  return rep


# ---- against PyTorch ---------------------------------------------------------------------
PREPARE = r"""
import json, os, sys
sys.path.insert(0, os.getcwd())
overrides, out = json.loads(sys.argv[1]), sys.argv[2]
import jax, numpy as np
from flax import nnx
from benchmarks.bench_train import _config, _trainer
cfg = _config(overrides)
trainer = _trainer(cfg)
state = jax.device_get(trainer.init_states())
batches = [trainer.task.sample(jax.random.PRNGKey(i), cfg.batch_size * cfg.num_seeds)
           for i in range(8)]
tokens = np.stack([np.asarray(b.tokens_BxT).reshape(cfg.num_seeds, cfg.batch_size, -1)
                   for b in batches])
target = np.stack([np.asarray(b.target_B).reshape(cfg.num_seeds, -1) for b in batches])
def jax_loss(i):  # seed i's loss on its share of batch 0, from the same weights
  one = lambda x: x[i]
  batch = type(batches[0])(tokens[0, i], target[0, i], None)
  return float(trainer.loss_fn(jax.tree.map(one, state.params),
                               jax.tree.map(one, state.model_rest), batch)[0])
flat = {"/".join(map(str, k)): np.asarray(v) for k, v in
        nnx.to_flat_state(nnx.State(nnx.to_pure_dict(state.params)))}
np.savez(out, tokens=tokens, target=target, n_layers=cfg.model.n_layers,
         n_heads=cfg.model.n_heads,
         log_every=cfg.log_every, jax_loss=np.mean([jax_loss(i) for i in range(cfg.num_seeds)]),
         **{"p/" + k: v for k, v in flat.items()})
"""

TRIAL = r"""
import json, os, sys, time
side, overrides, data_path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
chunk_steps = int(sys.argv[4])
sys.path.insert(0, os.getcwd())
import numpy as np
if side == "qkvjax":
  import jax
  from benchmarks.bench_train import _config, _trainer
  cfg = _config(overrides)
  trainer = _trainer(cfg)
  state = trainer.init_states()
  steps = chunk_steps or cfg.log_every
  chunk = trainer.train_chunk(steps)
  state = chunk(state); jax.block_until_ready(state)
  times = []
  for _ in range(5):
    t0 = time.perf_counter(); state = chunk(state); jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
  print(json.dumps({"seed_steps_per_s": steps * cfg.num_seeds / sorted(times)[2],
                    "devices": len(jax.devices())}))
  sys.exit(0)
# PyTorch only: JAX is not imported here (its threads would compete with torch's).
import torch
from benchmarks import torch_model
torch.set_num_threads(os.cpu_count())
d = np.load(data_path)
tree = {}
for key in (k for k in d.files if k.startswith("p/")):
  node = tree
  *parents, leaf = key[2:].split("/")
  for p in parents:
    node = node.setdefault(int(p) if p.isdigit() else p, {})
  node[leaf] = d[key]
n_layers, steps = int(d["n_layers"]), chunk_steps or int(d["log_every"])
params = torch_model.from_jax(tree, n_layers)
data = [(torch.tensor(t, dtype=torch.long), torch.tensor(y, dtype=torch.long))
        for t, y in zip(d["tokens"], d["target"])]
seeds = data[0][0].shape[0]
with torch.no_grad():
  ours = torch_model.loss_fn(params, *data[0], n_layers).item() / seeds
theirs = float(d["jax_loss"])
if side.startswith("torch expert"):
  mode = side[len("torch expert "):] or "eager"
  model = torch_model.Expert(params, n_layers, int(d["n_heads"]), mode=mode)
  with torch.no_grad():
    ours = model.loss(*data[0]).item() / seeds
elif side == "torch looped":
  model = torch_model.Looped(params, n_layers)
else:
  model = torch_model.Batched(params, n_layers, compile_step=side == "torch compiled")
if abs(ours - theirs) > 1e-4 * max(1.0, abs(theirs)):
  raise SystemExit(f"loss at init differs: torch {ours} vs jax {theirs}")
for i in range(3):  # warm-up (and compilation)
  model.step(*data[i % len(data)])
times = []
for _ in range(5):
  t0 = time.perf_counter()
  for i in range(steps):
    model.step(*data[i % len(data)])
  times.append(time.perf_counter() - t0)
print(json.dumps({"seed_steps_per_s": steps * seeds / sorted(times)[2],
                  "loss_at_init": [ours, theirs]}))
"""

SIDES = ("qkvjax", "qkvjax, 1 device per core", "torch looped", "torch batched",
         "torch compiled", "torch expert eager", "torch expert compile",
         "torch expert max-autotune")
TORCH_SIDES = SIDES[2:]


def prepare(overrides: dict, path: str) -> None:
  """Initial weights, batches and JAX's loss at initialization, for PyTorch."""
  subprocess.run([sys.executable, "-c", PREPARE, json.dumps(overrides), path], cwd=ROOT,
                 env={**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1"},
                 capture_output=True, text=True, timeout=3600, check=True)


def torch_trial(side: str, overrides: dict, data_path: str, chunk: int = 0) -> dict:
  devices = os.cpu_count() if side == "qkvjax, 1 device per core" else 1
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices)}
  proc = subprocess.run([sys.executable, "-c", TRIAL, side.split(",")[0], json.dumps(overrides),
                         data_path, str(chunk)], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=3600)
  if proc.returncode != 0:
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1][:200]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def report_torch(args) -> dict:
  import tempfile  # pylint: disable=g-import-not-at-top
  out: dict = {}
  tmp = tempfile.mkdtemp()
  for w, (name, overrides) in enumerate(WORKLOADS.items()):
    if args.workloads and name not in args.workloads.split(","):
      continue
    data_path = f"{tmp}/workload{w}.npz"
    prepare(overrides, data_path)
    sides = [x for x in SIDES if not args.sides or x in args.sides.split(";")]
    got = {side: [] for side in sides}
    for t in range(args.trials):
      for side in (sides if t % 2 == 0 else sides[::-1]):
        got[side].append(torch_trial(side, overrides, data_path, args.chunk))
      print(f"{name}, trial {t}: " + ", ".join(
          f"{s}: {g[-1].get('seed_steps_per_s', g[-1].get('error'))}" for s, g in got.items()),
            flush=True)
    out[name] = {s: [r.get("seed_steps_per_s") for r in g] for s, g in got.items()}
  print(f"\nseed-steps/s, median of {args.trials} alternated trials (min-max), and the ratio "
        "of medians best qkvjax / the fastest PyTorch variant:")
  for name, sides in out.items():
    med = {s: statistics.median([v for v in vals if v]) if any(vals) else None
           for s, vals in sides.items()}
    cells = [f"{s} {med[s]:.0f} ({min(v for v in sides[s] if v):.0f}-"
             f"{max(v for v in sides[s] if v):.0f})" if med[s] else f"{s} failed"
             for s in sides]
    best = max((med[s] for s in SIDES[:2] if med.get(s)), default=None)
    fastest = max((s for s in TORCH_SIDES if med.get(s)), key=lambda s: med[s], default=None)
    ratios = [f"x{best / med[fastest]:.2f} vs {fastest} (the fastest PyTorch)"] if (
        best and fastest) else []
    print(f"  {name}: " + "; ".join(cells) + (f"  -> best qkvjax {', '.join(ratios)}"
                                              if ratios else ""))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke test)")
  parser.add_argument("--torch", action="store_true", help="compare with PyTorch")
  parser.add_argument("--trials", type=int, default=5)
  parser.add_argument("--workloads", default="", help="comma-separated (default: all)")
  parser.add_argument("--sides", default="", help="';'-separated sides of --torch "
                      f"(default: all of {'; '.join(SIDES)})")
  parser.add_argument("--chunk", type=int, default=0, help="steps per timed chunk in "
                      "--torch trials (default: the config's log_every)")
  parser.add_argument("--out", default="results/benchmarks")
  args = parser.parse_args()
  rep = report_torch(args) if args.torch else report_this(args)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  path = out / f"{'torch-' if args.torch else ''}{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
  path.write_text(json.dumps(rep, indent=1, default=str) + "\n")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
