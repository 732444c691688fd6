"""Where the training step's time goes: candidate changes, measured, by hand:

    python -m benchmarks.step_variants [--trials=5] [--devices=1] [--workload=headline]

Each variant changes one thing of the training step (see ``VARIANTS``) and
is timed in a fresh process (seed-steps/s of the ``log_every``-step chunk,
median of 9 chunks after compilation), trials alternated with the current
step ("baseline"). Only what measures faster is kept in the library; the
numbers and what was kept are in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

TRIAL = r"""
import json, os, sys, time
sys.path.insert(0, os.getcwd())
variant, overrides = sys.argv[1], json.loads(sys.argv[2])
import jax, jax.numpy as jnp, numpy as np, optax
from qkvjax import config as config_lib, tasks, train
from qkvjax import registry
from benchmarks import step_variants
cfg = config_lib.apply_overrides(registry.load_config("specialization"), overrides)
step_variants.apply(variant)
trainer = train.Trainer(cfg, tasks.make("selection", cfg))
state = trainer.init_states()
chunk = trainer.train_chunk(cfg.log_every)
state = chunk(state); jax.block_until_ready(state)
times = []
for _ in range(9):
  t0 = time.perf_counter(); state = chunk(state); jax.block_until_ready(state)
  times.append(time.perf_counter() - t0)
print(json.dumps({"seed_steps_per_s": cfg.log_every * cfg.num_seeds / sorted(times)[4]}))
"""


def _guard_grads_only():
  """The divergence guard reads one fused sum of the gradients (non-finite
  iff some gradient is) instead of checking every gradient and parameter."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from qkvjax import train  # pylint: disable=g-import-not-at-top

  def train_step(self, state):
    grads, _ = jax.grad(self.loss_fn, has_aux=True)(state.params, state.model_rest,
                                                    self.batch(state))
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(sum(jnp.sum(g) for g in jax.tree.leaves(grads)))
    newly = ~finite & ~state.diverged
    diverged = state.diverged | ~finite
    keep = lambda new, old: jnp.where(diverged, old, new)
    return state._replace(params=jax.tree.map(keep, params, state.params),
                          opt_state=jax.tree.map(keep, opt_state, state.opt_state),
                          step=state.step + 1, diverged=diverged,
                          diverged_step=jnp.where(newly, state.step, state.diverged_step))
  train.Trainer.train_step = train_step


def _no_guard():
  """No divergence guard at all (an upper bound on what the guard costs)."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from qkvjax import train  # pylint: disable=g-import-not-at-top

  def train_step(self, state):
    grads, _ = jax.grad(self.loss_fn, has_aux=True)(state.params, state.model_rest,
                                                    self.batch(state))
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    return state._replace(params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state, step=state.step + 1)
  train.Trainer.train_step = train_step


def _batches_before_scan():
  """A chunk samples all its batches first (one vmapped call over the steps),
  then scans over them, instead of sampling inside every step."""
  import jax  # pylint: disable=g-import-not-at-top
  from qkvjax import train  # pylint: disable=g-import-not-at-top
  original_step = train.Trainer.train_step

  def train_chunk(self, n):
    if n not in self._chunks:
      def chunk(state):
        keys = jax.vmap(lambda i: jax.random.fold_in(state.data_key, state.step + i))(
            jax.numpy.arange(n))
        batches = jax.vmap(lambda k: self.task.sample(k, self.config.batch_size))(keys)
        def body(s, batch):
          self._next_batch = batch
          return original_step(self, s), None
        return jax.lax.scan(body, state, batches)[0]
      self._chunks[n] = jax.jit(jax.vmap(chunk), in_shardings=self.sharding,
                                out_shardings=self.sharding, donate_argnums=0,
                                compiler_options=self._chunk_options)
    return self._chunks[n]
  original_batch = train.Trainer.batch

  def batch(self, state):
    got = getattr(self, "_next_batch", None)
    return original_batch(self, state) if got is None else got
  train.Trainer.train_chunk = train_chunk
  train.Trainer.batch = batch


def _scan_unroll(k: int):
  def apply():
    import jax  # pylint: disable=g-import-not-at-top
    from qkvjax import train  # pylint: disable=g-import-not-at-top

    def train_chunk(self, n):
      if n not in self._chunks:
        def chunk(state):
          return jax.lax.scan(lambda s, _: (self.train_step(s), None), state, None, length=n,
                              unroll=k)[0]
        self._chunks[n] = jax.jit(jax.vmap(chunk), in_shardings=self.sharding,
                                  out_shardings=self.sharding, donate_argnums=0,
                                  compiler_options=self._chunk_options)
      return self._chunks[n]
    train.Trainer.train_chunk = train_chunk
  return apply


def _chunk_options(options: dict):
  def apply():
    from qkvjax import train  # pylint: disable=g-import-not-at-top
    real = train.Trainer.__post_init__

    def post_init(self):
      self.compile_options = {**self.compile_options, "chunk": options}
      real(self)
    train.Trainer.__post_init__ = post_init
  return apply


VARIANTS = {
    "baseline": lambda: None,
    "guard: gradients only (one fused sum)": _guard_grads_only,
    "no guard (upper bound)": _no_guard,
    "batches sampled before the scan": _batches_before_scan,
    "scan unroll 2": _scan_unroll(2),
    "scan unroll 4": _scan_unroll(4),
    "chunk at XLA backend level 1": _chunk_options({"xla_backend_optimization_level": 1}),
}


def apply(name: str) -> None:
  VARIANTS[name]()


WORKLOADS = {"headline": {}, "larger model": {
    "model.d_model": 256, "model.n_layers": 4, "model.n_heads": 8, "model.d_head": 32,
    "model.d_mlp": 512}, "64 seeds": {"num_seeds": 64}}


def trial(variant: str, overrides: dict, devices: int) -> float:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices)}
  proc = subprocess.run([sys.executable, "-c", TRIAL, variant, json.dumps(overrides)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
  if proc.returncode != 0:
    print(f"{variant}: failed: {proc.stderr.strip().splitlines()[-1][:200]}", flush=True)
    return float("nan")
  return json.loads(proc.stdout.strip().splitlines()[-1])["seed_steps_per_s"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--trials", type=int, default=5)
  parser.add_argument("--devices", type=int, default=1)
  parser.add_argument("--workload", default="headline", choices=list(WORKLOADS))
  parser.add_argument("--variants", default=",".join(VARIANTS))
  args = parser.parse_args()
  names = [v for v in args.variants.split(",") if v]
  got = {v: [] for v in ["baseline"] + [n for n in names if n != "baseline"]}
  for t in range(args.trials):
    for v in (list(got) if t % 2 == 0 else list(got)[::-1]):
      got[v].append(trial(v, WORKLOADS[args.workload], args.devices))
    print(f"trial {t}: " + ", ".join(f"{v} {x[-1]:.0f}" for v, x in got.items()), flush=True)
  base = statistics.median(got["baseline"])
  print(f"\n{args.workload}, {args.devices} device(s), seed-steps/s over {args.trials} "
        "alternated trials (min / median / max), ratio of medians to baseline:")
  for v, xs in got.items():
    print(f"  {v}: {min(xs):.0f} / {statistics.median(xs):.0f} / {max(xs):.0f}  "
          f"x{statistics.median(xs) / base:.3f}")


if __name__ == "__main__":
  main()
