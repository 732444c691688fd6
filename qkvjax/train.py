"""Training as a pure function of (config, key), vmapped over seeds.

A run keeps one ``TrainState`` whose every leaf has a leading seed axis.
``train_chunk`` (``lax.scan`` over ``n`` pure ``train_step`` calls) and
``measure`` (metrics at the current step, on the batch the next step will
train on) are each jitted once (the chunk with its state donated), and the
seed axis is sharded across the available devices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from qkvjax import metrics as metrics_lib
from qkvjax import model as model_lib
from qkvjax import tasks


class TrainState(NamedTuple):
  params: model_lib.Params
  opt_state: Any
  init_params: model_lib.Params
  step: jax.Array          # int32
  data_key: jax.Array      # the seed's data stream; batch = fold_in(key, step)
  diverged: jax.Array      # bool: a non-finite loss or parameter was seen
  diverged_step: jax.Array  # int32, -1 while finite


OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW (default) or SGD with momentum, optional warmup and clipping."""
  lr = cfg.learning_rate
  if cfg.warmup_steps > 0:
    lr = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
  if cfg.optimizer == "adamw":
    opt = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay)
  elif cfg.optimizer == "sgd":
    opt = optax.sgd(lr, momentum=cfg.momentum or None)
  else:
    raise ValueError(f"optimizer={cfg.optimizer!r}: expected one of {OPTIMIZERS}")
  if cfg.grad_clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
  return opt


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
  """One key per seed; seed i's key does not depend on ``num_seeds``."""
  base = jax.random.PRNGKey(seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(num_seeds))


def seed_mesh(num_seeds: int, devices=None) -> Mesh:
  """A 1-D mesh over the most devices that evenly divide the seed axis."""
  devices = list(jax.devices() if devices is None else devices)
  n = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
  return Mesh(np.array(devices[:n]), ("seed",))


@dataclasses.dataclass
class Trainer:
  """The pure functions of one experiment config, and their jitted forms."""

  config: ml_collections.ConfigDict
  task: tasks.SelectionTask
  mesh: Mesh

  # XLA options per program. Init runs once, so backend optimizations cost it
  # more compile time (9.2 s -> 2.0 s for the default config) than they save;
  # subclasses with cheap measurements may compile those at -O0 too.
  init_compiler_options = {"xla_backend_optimization_level": 0}
  measure_compiler_options = None
  chunk_compiler_options = None

  def __post_init__(self):
    self.optimizer = make_optimizer(self.config.optim)
    sharding = NamedSharding(self.mesh, P("seed"))
    self.init = jax.jit(jax.vmap(self.init_state), out_shardings=sharding,
                        compiler_options=self.init_compiler_options)
    self.measure = jax.jit(jax.vmap(self.measure_one), in_shardings=sharding,
                           out_shardings=sharding,
                           compiler_options=self.measure_compiler_options)
    self._chunks: dict[int, Callable] = {}
    self._sharding = sharding

  # ---- pure, single-seed functions ------------------------------------------
  def init_state(self, key: jax.Array) -> TrainState:
    k_params, k_data = jax.random.split(key)
    params = model_lib.init_params(k_params, self.config.model,
                                   self.task.vocab_size, self.task.seq_len)
    return TrainState(params, self.optimizer.init(params), params,
                      jnp.zeros((), jnp.int32), k_data, jnp.zeros((), bool),
                      jnp.full((), -1, jnp.int32))

  def batch(self, state: TrainState) -> tasks.Batch:
    return self.task.sample(jax.random.fold_in(state.data_key, state.step),
                            self.config.batch_size)

  def loss_fn(self, params, batch: tasks.Batch):
    logits_BxTxV, trace = model_lib.forward(params, batch.tokens_BxT,
                                            self.config.model)
    logits_BxV = logits_BxTxV[:, -1]
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits_BxV, batch.target_B).mean()
    return loss, (logits_BxV, trace)

  def train_step(self, state: TrainState) -> TrainState:
    """One optimizer step. A seed that meets a non-finite value is frozen at
    its last finite state and flagged, so it cannot disturb the others."""
    grads, _ = jax.grad(self.loss_fn, has_aux=True)(state.params, self.batch(state))
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(x))
                                for x in jax.tree.leaves((grads, params))]))
    newly = ~finite & ~state.diverged
    diverged = state.diverged | ~finite
    keep = lambda new, old: jnp.where(diverged, old, new)
    return state._replace(
        params=jax.tree.map(keep, params, state.params),
        opt_state=jax.tree.map(keep, opt_state, state.opt_state),
        step=state.step + 1,
        diverged=diverged,
        diverged_step=jnp.where(newly, state.step, state.diverged_step))

  def measure_one(self, state: TrainState) -> metrics_lib.Metrics:
    """Metrics at ``state.step`` on the batch the next step will train on."""
    batch = self.batch(state)
    (loss, (logits_BxV, trace)), grads = jax.value_and_grad(
        self.loss_fn, has_aux=True)(state.params, batch)
    updates, _ = self.optimizer.update(grads, state.opt_state, state.params)
    out = metrics_lib.all_metrics(
        params=state.params, init_params=state.init_params, grads=grads,
        updates=updates, trace=trace, batch=batch, logits_BxV=logits_BxV,
        loss=loss, model_cfg=self.config.model)
    # Causal check of the Q.K route: with W_Q = W_K = 0 every score is 0, so
    # attention is uniform; what accuracy is left needs no selection at all.
    ablated = {**state.params, "layers": [
        {**layer, **{n: jnp.zeros_like(layer[n]) for n in ("query", "key") if n in layer}}
        for layer in state.params["layers"]]}
    abl_loss, (abl_logits_BxV, _) = self.loss_fn(ablated, batch)
    out["ablate_qk/loss"] = abl_loss
    out["ablate_qk/accuracy"] = jnp.mean(
        jnp.argmax(abl_logits_BxV, -1) == batch.target_B).astype(jnp.float32)
    out["diverged"] = state.diverged.astype(jnp.float32)
    out["diverged_step"] = state.diverged_step.astype(jnp.float32)
    return out

  # ---- jitted, seed-vmapped -------------------------------------------------
  def train_chunk(self, n: int) -> Callable[[TrainState], TrainState]:
    """``n`` steps in one compiled call, state donated."""
    if n not in self._chunks:
      def chunk(state):
        return jax.lax.scan(lambda s, _: (self.train_step(s), None), state,
                            None, length=n)[0]
      self._chunks[n] = jax.jit(jax.vmap(chunk), in_shardings=self._sharding,
                                out_shardings=self._sharding, donate_argnums=0,
                                compiler_options=self.chunk_compiler_options)
    return self._chunks[n]

  def init_states(self) -> TrainState:
    keys = seed_keys(self.config.seed, self.config.num_seeds)
    return self.init(jax.device_put(keys, self._sharding))


def chunk_lengths(steps: int, log_every: int) -> list[int]:
  """Steps between logging points: ``log_every`` each, the rest last."""
  full, rest = divmod(steps, log_every)
  return [log_every] * full + ([rest] if rest else [])


def make_trainer(config: ml_collections.ConfigDict, task=None, devices=None,
                 trainer_class: type[Trainer] | None = None) -> Trainer:
  """A Trainer for ``config``; the selection task unless ``task`` is given.

  ``task`` needs ``sample(key, batch_size) -> Batch``, ``vocab_size``,
  ``seq_len`` and ``vocab``; ``trainer_class`` may override the loss or metrics.
  """
  task = tasks.make_selection_task(config.task, config.seed) if task is None else task
  return (trainer_class or Trainer)(config, task, seed_mesh(config.num_seeds, devices))


def train(trainer: Trainer) -> Iterator[tuple[int, dict[str, np.ndarray], TrainState | None]]:
  """Runs the config's steps, yielding ``(step, metrics, state)`` at each
  logging point (step 0 first); ``metrics`` maps names to [num_seeds] arrays.

  The state is yielded only at the last point (it is donated otherwise).
  Metrics are fetched one logging point late, so the host writing them does
  not stall the device.
  """
  state = trainer.init_states()
  pending = (0, trainer.measure(state))
  step = 0
  for n in chunk_lengths(trainer.config.steps, trainer.config.log_every):
    # Any implicit host<->device transfer in the loop is a bug: fail loudly.
    with jax.transfer_guard("disallow"):
      state = trainer.train_chunk(n)(state)
      step += n
      done_step, done = pending
      pending = (step, trainer.measure(state))
    yield done_step, jax.device_get(done), None
  yield pending[0], jax.device_get(pending[1]), state

