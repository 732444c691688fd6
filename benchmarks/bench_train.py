"""Speed of the specialization experiment's training, by hand:

    python -m benchmarks.bench_train [--quick]

Reports, for the default config: compile time, steps/s and seed-steps/s of
the vmapped ``lax.scan`` chunk, the cost of the in-jit metrics relative to
plain training, the achieved model GFLOP/s (XLA's cost analysis) beside the
machine's measured float32 matmul peak, the gain from rolling steps into one
``lax.scan`` call, and seed-steps/s for 16 seeds in one vmapped program
against 16 sequential single-seed runs, for a tiny and the default model.
Writes the numbers to ``results/benchmarks/<timestamp>.json`` too.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import platform
import time

import jax
import jax.numpy as jnp

from qkvjax import config as config_lib
from qkvjax import results
from qkvjax import train


def _time(fn, repeats: int) -> float:
  """Best wall time of ``repeats`` calls of ``fn`` (which must block)."""
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def matmul_peak_gflops(n: int = 1024, repeats: int = 10) -> float:
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


def bench_config(cfg, chunk: int, repeats: int) -> dict:
  """Compile times and throughput of one config's vmapped training."""
  out = {"num_seeds": cfg.num_seeds, "chunk_steps": chunk}
  t0 = time.perf_counter()
  trainer = train.make_trainer(cfg)
  state = trainer.init_states()
  jax.block_until_ready(state)
  out["compile_init_s"] = time.perf_counter() - t0
  step_fn = trainer.train_chunk(chunk)
  t0 = time.perf_counter()
  step_fn.lower(state).compile()
  out["compile_chunk_s"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  compiled_measure = trainer.measure.lower(state).compile()
  out["compile_measure_s"] = time.perf_counter() - t0
  holder = [step_fn(state)]
  jax.block_until_ready(holder[0])

  def run_chunk():
    holder[0] = step_fn(holder[0])
    jax.block_until_ready(holder[0])

  t_chunk = _time(run_chunk, repeats)
  t_measure = _time(lambda: jax.block_until_ready(trainer.measure(holder[0])), repeats)
  out["steps_per_s"] = chunk / t_chunk
  out["seed_steps_per_s"] = chunk * cfg.num_seeds / t_chunk
  # XLA counts a scan body once, so take FLOPs from a one-step program.
  flops = _flops(jax.jit(jax.vmap(trainer.train_step)).lower(holder[0]).compile())
  out["gflop_per_step"] = None if flops is None else flops / 1e9
  out["achieved_gflops"] = None if flops is None else flops * chunk / t_chunk / 1e9
  out["measure_s"] = t_measure
  out["measure_gflop"] = (lambda f: None if f is None else f / 1e9)(_flops(compiled_measure))
  # Metrics cost: one measure per log_every steps, relative to those steps.
  out["metrics_overhead"] = t_measure / (t_chunk / chunk * cfg.log_every)
  return out


def scan_gain(cfg, n: int, repeats: int) -> dict:
  """n steps as one scan call vs n calls of a one-step program."""
  trainer = train.make_trainer(cfg)
  one, many = trainer.train_chunk(1), trainer.train_chunk(n)
  holder = [many(one(trainer.init_states()))]
  jax.block_until_ready(holder[0])

  def run(f, times):
    def go():
      for _ in range(times):
        holder[0] = f(holder[0])
      jax.block_until_ready(holder[0])
    return go

  t_one = _time(run(one, n), repeats)
  t_many = _time(run(many, 1), repeats)
  return {"steps": n, "per_step_dispatch_s": t_one, "one_scan_s": t_many,
          "scan_speedup": t_one / t_many}


def vmap_gain(cfg, num_seeds: int, chunk: int, repeats: int) -> dict:
  """Seed-steps/s: ``num_seeds`` seeds in one vmapped program against the
  same seeds run one after another (a single-seed program each)."""
  cfg = config_lib.apply_overrides(cfg, {"num_seeds": str(num_seeds)})
  together = train.make_trainer(cfg)
  f = together.train_chunk(chunk)
  holder = [f(together.init_states())]
  jax.block_until_ready(holder[0])

  def run_vmapped():
    holder[0] = f(holder[0])
    jax.block_until_ready(holder[0])

  t_vmapped = _time(run_vmapped, repeats)
  single = train.make_trainer(config_lib.apply_overrides(cfg, {"num_seeds": "1"}))
  g = single.train_chunk(chunk)
  states = [g(single.init_states()) for _ in range(num_seeds)]
  jax.block_until_ready(states)

  def run_sequential():
    for i in range(num_seeds):
      states[i] = g(states[i])
      jax.block_until_ready(states[i])

  t_seq = _time(run_sequential, repeats)
  # The naive baseline: each seed dispatched one step at a time.
  g1 = single.train_chunk(1)
  states = [g1(s) for s in states]
  jax.block_until_ready(states)

  def run_per_step():
    for i in range(num_seeds):
      for _ in range(chunk):
        states[i] = g1(states[i])
      jax.block_until_ready(states[i])

  t_step = _time(run_per_step, max(1, repeats // 2))
  return {"num_seeds": num_seeds,
          "vmapped_seed_steps_per_s": num_seeds * chunk / t_vmapped,
          "sequential_seed_steps_per_s": num_seeds * chunk / t_seq,
          "sequential_per_step_seed_steps_per_s": num_seeds * chunk / t_step,
          "vmap_speedup": t_seq / t_vmapped,
          "vmap_speedup_vs_per_step": t_step / t_vmapped}


def tiny(cfg):
  return config_lib.apply_overrides(cfg, {
      "model.d_model": "16", "model.n_heads": "2", "model.d_head": "8",
      "model.n_layers": "1", "model.d_mlp": "32", "batch_size": "8"})


def reference_shape(cfg):
  """One seed of the issue's reference model: d_model 64, 4 heads, 2 layers,
  batch 64 x 32 tokens, Adam (31 noun slots + the verb = 32 tokens)."""
  return config_lib.apply_overrides(cfg, {
      "num_seeds": "1", "task.n_categories": "31", "task.n_slots": "31",
      "task.nouns_per_category": "2", "batch_size": "64"})


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke test)")
  parser.add_argument("--out", default="results/benchmarks")
  args = parser.parse_args()
  repeats = 2 if args.quick else 5
  cfg = config_lib.load_config("specialization")
  report = {
      "machine": {"platform": platform.platform(), "processor": platform.processor(),
                  "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                  "cpu_count": __import__("os").cpu_count()},
      "versions": results.provenance()["versions"],
      "matmul_peak_gflops": matmul_peak_gflops(repeats=repeats * 2),
      "default": bench_config(cfg, cfg.log_every, repeats),
      "reference_1seed_32tok": bench_config(reference_shape(cfg), 10, repeats),
      "scan": scan_gain(reference_shape(cfg), 10, repeats),
      "vmap16_tiny": vmap_gain(tiny(cfg), 16, cfg.log_every, repeats),
      "vmap16_default": vmap_gain(cfg, 16, cfg.log_every, repeats),
  }
  d = report["default"]
  print(f"machine: {report['machine']['processor'] or report['machine']['platform']}, "
        f"{report['machine']['cpu_count']} cores, backend {report['machine']['backend']}")
  print(f"float32 matmul peak (1024^3, jitted): {report['matmul_peak_gflops']:.1f} GFLOP/s")
  print(f"default config ({d['num_seeds']} seeds vmapped): "
        f"{d['steps_per_s']:.1f} steps/s, {d['seed_steps_per_s']:.0f} seed-steps/s")
  if d["achieved_gflops"]:
    print(f"  model FLOPs: {d['gflop_per_step']:.3f} GFLOP/step -> "
          f"{d['achieved_gflops']:.1f} GFLOP/s "
          f"({100 * d['achieved_gflops'] / report['matmul_peak_gflops']:.0f}% of matmul peak)")
  print(f"  compile: init {d['compile_init_s']:.1f} s, chunk {d['compile_chunk_s']:.1f} s, "
        f"measure {d['compile_measure_s']:.1f} s")
  print(f"  metrics cost: {d['measure_s'] * 1e3:.0f} ms per logging point = "
        f"{100 * d['metrics_overhead']:.1f}% of the {cfg.log_every} steps between them")
  r = report["reference_1seed_32tok"]
  print(f"reference shape (1 seed, batch 64 x 32 tokens): {r['steps_per_s']:.1f} steps/s, "
        f"{r['gflop_per_step']:.2f} GFLOP/step -> {r['achieved_gflops']:.1f} GFLOP/s")
  s = report["scan"]
  print(f"reference shape, lax.scan of {s['steps']} steps vs {s['steps']} one-step "
        f"dispatches: {s['scan_speedup']:.2f}x")
  for name in ("vmap16_tiny", "vmap16_default"):
    v = report[name]
    print(f"{name}: vmapped {v['vmapped_seed_steps_per_s']:.0f} vs sequential "
          f"{v['sequential_seed_steps_per_s']:.0f} seed-steps/s (each seed a 40-step scan) "
          f"-> {v['vmap_speedup']:.2f}x; vs sequential one-step dispatches "
          f"{v['sequential_per_step_seed_steps_per_s']:.0f} -> "
          f"{v['vmap_speedup_vs_per_step']:.2f}x")
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  path = out / f"{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
  results.write_json(path, report)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
