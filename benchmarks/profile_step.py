"""Where a training step's time goes, by hand:

    python -m benchmarks.profile_step [--workload=headline] [--trace]

Times, per step of a ``log_every``-step ``lax.scan`` over the run-vmapped
program, nested pieces of the step — sampling the batch; the forward loss;
loss and gradients; gradients and the optimizer update; the whole step with
the divergence guard — so each difference is what that piece costs. With
``--trace``, also records a ``jax.profiler`` trace of the whole step and sums
its op time by XLA op name (the largest 15). Prints a table; the study built
on it is in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import optax

from qkvjax import config as config_lib
from qkvjax import registry
from qkvjax import tasks
from qkvjax import train

WORKLOADS = {"headline": {}, "larger model": {
    "model.d_model": 256, "model.n_layers": 4, "model.n_heads": 8, "model.d_head": 32,
    "model.d_mlp": 512}}


def pieces(trainer: train.Trainer) -> dict:
  """Step functions of one run, each doing a little more than the previous."""
  def sample(state):
    return state._replace(step=state.step + 1), trainer.batch(state).tokens_BxT.sum()

  def forward(state):
    loss = trainer.loss_fn(state.params, state.model_rest, trainer.batch(state))[0]
    return state._replace(step=state.step + 1), loss

  def grads(state):
    g = jax.grad(lambda p: trainer.loss_fn(p, state.model_rest, trainer.batch(state))[0])(
        state.params)
    return state._replace(step=state.step + 1), sum(jnp.sum(x) for x in jax.tree.leaves(g))

  def update(state):
    g = jax.grad(lambda p: trainer.loss_fn(p, state.model_rest, trainer.batch(state))[0])(
        state.params)
    updates, opt_state = trainer.optimizer.update(g, state.opt_state, state.params)
    return state._replace(params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state, step=state.step + 1), jnp.float32(0)

  def full(state):
    return trainer.train_step(state), jnp.float32(0)

  return {"sample the batch": sample, "+ forward loss": forward, "+ backward": grads,
          "+ AdamW update": update, "+ divergence guard (the whole step)": full}


def time_piece(trainer, fn, n: int, repeats: int = 7) -> float:
  """Seconds per step of ``fn`` scanned ``n`` times, vmapped, median."""
  def chunk(state):
    return jax.lax.scan(lambda s, _: fn(s), state, None, length=n)
  run = jax.jit(jax.vmap(chunk), in_shardings=trainer.sharding, donate_argnums=0)
  state = trainer.init_states()
  state, _ = run(state)
  jax.block_until_ready(state)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    state, out = run(state)
    jax.block_until_ready((state, out))
    times.append(time.perf_counter() - t0)
  return statistics.median(times) / n


def trace_ops(trainer, n: int, top: int = 12) -> tuple[list, list]:
  """Op time of the whole step from a jax.profiler trace: shares by op kind
  (``dot``, ``ynn_fusion``, ``fusion``...) and the largest single ops with
  their HLO shapes."""
  chunk = trainer.train_chunk(n)
  state = trainer.init_states()
  hlo = chunk.lower(state).compile().as_text()
  state = chunk(state)
  jax.block_until_ready(state)
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      state = chunk(state)
      jax.block_until_ready(state)
    (path,) = pathlib.Path(tmp).rglob("*.trace.json.gz")
    events = json.loads(gzip.open(path).read())["traceEvents"]
  total = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and "dur" in e and e.get("name") and not e["name"].startswith(
        ("$", "jit_", "PjitFunction", "PjRt", "Thunk", "TfrtCpu")):
      total[e["name"]] += e["dur"]
  whole = sum(total.values())
  kinds = collections.Counter()
  for name, dur in total.items():
    kinds[name.rsplit(".", 1)[0]] += dur
  lines = {l.split("=")[0].strip().lstrip("%"): l.strip() for l in hlo.splitlines() if " = " in l}
  def shape(name):
    line = lines.get(name, "")
    return line.split(" = ", 1)[1][:110] if line else ""
  return ([(k, d / whole) for k, d in kinds.most_common()],
          [(name, d / whole, shape(name)) for name, d in total.most_common(top)])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workload", default="headline", choices=list(WORKLOADS))
  parser.add_argument("--trace", action="store_true")
  args = parser.parse_args()
  cfg = config_lib.apply_overrides(registry.load_config("specialization"),
                                   WORKLOADS[args.workload])
  trainer = train.Trainer(cfg, tasks.make("selection", cfg))
  n = cfg.log_every
  print(f"{args.workload}: {cfg.num_seeds} runs on {len(jax.devices())} device(s), "
        f"batch {cfg.batch_size}, {n}-step scans; ms per step (all runs):")
  previous = 0.0
  for name, fn in pieces(trainer).items():
    t = time_piece(trainer, fn, n)
    print(f"  {name:40s} {1e3 * t:7.2f} ms  (this piece: {1e3 * (t - previous):+7.2f} ms)")
    previous = t
  if args.trace:
    kinds, ops = trace_ops(trainer, n)
    print("op time of the whole step by kind (share of traced op time): " + ", ".join(
        f"{k} {s:.1%}" for k, s in kinds))
    print("largest single ops:")
    for name, share, hlo in ops:
      print(f"  {share:6.1%}  {name}: {hlo}")


if __name__ == "__main__":
  main()
