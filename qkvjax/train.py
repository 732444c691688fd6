"""Training as pure functions of state, vmapped over a run axis.

A *program* trains R runs at once: every (point, seed) pair, where a point is
a set of per-run values that change no array shape (learning rate, an
initialization scale, an attention scale...; ``FOLDABLE``). Every leaf of the
``TrainState`` has a leading run axis. The model (a Flax NNX module) is split
once into a graph definition and state; ``train_step`` and ``measure_one`` are
pure functions of the state that ``nnx.merge`` the model inside the trace.
``train_chunk`` (``lax.scan`` over ``n`` steps, state donated) and
``measure`` (metrics on the batch the next step trains on) are each jitted
once, vmapped over runs, with the run axis sharded over every device (padded
to a multiple of the device count; padded runs are never written).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from qkvjax import attention
from qkvjax import config as config_lib
from qkvjax import distributed
from qkvjax import models
from qkvjax.metrics.host import HostMetric
from qkvjax.tasks import Task

OPTIMIZERS = ("adamw", "sgd")


def validate_optim(o: ml_collections.ConfigDict) -> None:
  """The ``optim`` block (``qkvjax.train.make_optimizer``)."""
  c = ml_collections.ConfigDict({"optim": o})
  config_lib.require_choice(c, "optim.optimizer", OPTIMIZERS)
  config_lib.require(o.learning_rate > 0, "optim.learning_rate", o.learning_rate, "a number > 0")
  config_lib.require_at_least(c, [f"optim.{f}" for f in ("weight_decay", "warmup_steps",
                                              "grad_clip")], 0)
  for f in ("b1", "b2", "momentum"):
    config_lib.require(0 <= o[f] < 1, f"optim.{f}", o[f], "0 <= value < 1")
_HOST = "__host"  # key prefix of a HostMetric's collected arrays
# The eval batch of ``Measurement.eval_batch`` is drawn from PRNGKey(EVAL_KEY + seed).
EVAL_KEY = 20_000
# XLA options for studies whose runs are short, so compile time dominates
# (measured on 2 CPU cores): the one-shot init and measurement compile several
# times faster at backend level 0 (6 s -> 1 s, 5.7 s -> 1.6 s), training chunks
# about twice as fast at level 1 (7.2 s -> 3.9 s), each running as fast.
FAST_COMPILE = {"init": {"xla_backend_optimization_level": 0},
                "measure": {"xla_backend_optimization_level": 0},
                "chunk": {"xla_backend_optimization_level": 1}}

# Config fields whose values may differ between the runs of one program, and
# how a value becomes the number the program uses. Each is read where it is
# used as a traced per-run scalar (models.hyper, optax.inject_hyperparams).
FOLDABLE: dict[str, Callable[[ml_collections.ConfigDict, Any], float]] = {
    "model.qkv_init_scale": lambda c, v: float(v),
    "model.residual_scale": lambda c, v: float(v),
    "model.attn_scale": lambda c, v: attention.resolve_scale(v, c.model.d_head),
    "optim.learning_rate": lambda c, v: float(v),
    "optim.weight_decay": lambda c, v: float(v),
    "optim.b1": lambda c, v: float(v),
    "optim.b2": lambda c, v: float(v),
    "optim.momentum": lambda c, v: float(v),
}


class TrainState(NamedTuple):
  params: nnx.State        # the model's nnx.Param variables
  model_rest: nnx.State    # its other variables (models.Hyper per-run values)
  opt_state: Any
  init_params: nnx.State
  step: jax.Array          # int32
  data_key: jax.Array      # the run's data stream; batch = fold_in(key, step)
  diverged: jax.Array      # bool: a non-finite loss or parameter was seen
  diverged_step: jax.Array  # int32, -1 while finite


def make_optimizer(o, folded: Sequence[str] = ()) -> optax.GradientTransformation:
  """AdamW (default) or SGD with momentum, optional warmup and clipping.

  The hyperparameters named in ``folded`` (``learning_rate``, ``b1``...) are
  optimizer *state* (``optax.inject_hyperparams``), so each run of a program
  keeps its own; the others are constants of the compiled program. A linear
  warmup multiplies the update by min(step / warmup_steps, 1), which is
  exactly a warmed-up learning rate."""
  if o.optimizer == "adamw":
    names = ("learning_rate", "b1", "b2", "weight_decay")
    factory, kwargs = optax.adamw, dict(learning_rate=o.learning_rate, b1=o.b1, b2=o.b2,
                                        weight_decay=o.weight_decay)
  elif o.optimizer == "sgd":
    names = ("learning_rate", "momentum")
    factory, kwargs = optax.sgd, dict(learning_rate=o.learning_rate, momentum=o.momentum)
  else:
    raise ValueError(f"optimizer={o.optimizer!r}: expected one of {OPTIMIZERS}")
  static = tuple(n for n in names if n not in folded)
  opt = optax.inject_hyperparams(factory, static_args=static)(**kwargs)
  parts = [opt]
  if o.warmup_steps > 0:
    w = float(o.warmup_steps)
    parts.append(optax.scale_by_schedule(lambda count: jnp.minimum(count / w, 1.0)))
  if o.grad_clip > 0:
    parts.insert(0, optax.clip_by_global_norm(o.grad_clip))
  return optax.chain(*parts) if len(parts) > 1 else opt


def default_cache_dir() -> str:
  """``$QKVJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/qkvjax/jax`` (``~/.cache``)."""
  import os  # pylint: disable=g-import-not-at-top
  if os.environ.get("QKVJAX_CACHE_DIR"):
    return os.environ["QKVJAX_CACHE_DIR"]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "qkvjax", "jax")


def enable_compilation_cache(path: str | None = None) -> str | None:
  """Turns on JAX's persistent compilation cache in ``path`` (default
  ``default_cache_dir()``; "off" turns it off), so a rerun of an experiment
  loads its compiled programs instead of compiling them again. Every program
  is cached, however quick its compile. Returns the directory used."""
  path = default_cache_dir() if path is None else path
  if not path or path == "off":
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
  """One key per seed; seed i's key does not depend on ``num_seeds``."""
  base = jax.random.PRNGKey(seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(num_seeds))


def run_mesh(devices=None) -> Mesh:
  """A 1-D mesh over every device; the run axis is padded to fit it."""
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.array(devices), ("runs",))


def cpu_only(options: dict | None) -> dict | None:
  """XLA options measured on the CPU backend, applied only there."""
  return options if options and jax.default_backend() == "cpu" else None


def default_model(cfg, task: Task, rngs: nnx.Rngs) -> nnx.Module:
  """The decoder/encoder ``Transformer`` sized for ``task``."""
  return models.Transformer(cfg.model, task.vocab_size, task.seq_len, rngs=rngs)


class Measurement(NamedTuple):
  """Everything a metric function may read, for one run at one step."""

  model: nnx.Module          # the model at this step (merged inside the trace)
  params: nnx.State
  init_params: nnx.State
  grads: nnx.State
  updates: nnx.State         # the optimizer's next update
  batch: Any                 # the batch the next step trains on
  loss: jax.Array
  task_metrics: dict[str, jax.Array]
  captured: models.Captured  # attention traces and other sown values
  task: Task
  config: Any                # the run's config (a View: folded values traced)
  model_rest: nnx.State      # the model's non-parameter state
  trainer: "Trainer"

  def eval_batch(self, size: int):
    """One fixed batch, the same for every run and step."""
    return self.task.sample(jax.random.PRNGKey(EVAL_KEY + self.config.seed), size)

  def eval_key(self) -> jax.Array:
    """The key of the fixed eval batch, for a task's own fixed sets (a probe set)."""
    return jax.random.PRNGKey(EVAL_KEY + self.config.seed)

  def forward(self, batch, params: nnx.State | None = None, **call_kwargs):
    """``(loss, task_metrics, captured)`` of the model (or of ``params``) on ``batch``."""
    loss, (task_metrics, captured) = self.trainer.loss_fn(
        self.params if params is None else params, self.model_rest, batch, **call_kwargs)
    return loss, task_metrics, captured


MetricFn = Callable[[Measurement], dict[str, jax.Array]]


@dataclasses.dataclass
class Trainer:
  """The pure functions of one program and their jitted, run-vmapped forms.

  Args:
    config: the program's config (fields in ``points`` are per run).
    task: the task every run trains on.
    points: per-run values of foldable fields (``{"optim.learning_rate": 3e-3}``);
      the runs are every (point, seed) pair, point-major.
    metrics: metric functions of a ``Measurement``, merged into one flat dict.
    model_fn: ``(config view, task, rngs) -> nnx.Module``.
    devices: the devices of the run axis (default: all).
    compile_options: XLA options per program ("init", "measure", "chunk"),
      applied on the CPU backend only.
  """

  config: ml_collections.ConfigDict
  task: Task
  points: Sequence[dict[str, Any]] = ({},)
  metrics: Sequence[MetricFn] = ()
  model_fn: Callable = default_model
  devices: Sequence[Any] | None = None
  compile_options: dict[str, dict] = dataclasses.field(default_factory=lambda: {
      # Init runs once: XLA's backend optimizations cost it more compile time
      # (9.2 s -> 2.0 s for the default config) than they save.
      "init": {"xla_backend_optimization_level": 0}})

  def __post_init__(self):
    self.config = config_lib.copy(self.config)
    fields = sorted({f for p in self.points for f in p})
    self.points = [{f: p.get(f, config_lib.field(self.config, f)) for f in fields}
                   for p in self.points]
    bad = [f for f in fields if f not in FOLDABLE]
    if bad:
      raise ValueError(f"fields {bad} cannot vary within one program; foldable: "
                       f"{sorted(FOLDABLE)}")
    # Only the fields that differ between points are traced per run.
    self.folded = [f for f in fields if len({repr(p[f]) for p in self.points}) > 1]
    for p in self.points:
      for f in fields:
        if f not in self.folded:
          config_lib.set_field(self.config, f, p[f])
    self.mesh = run_mesh(self.devices)
    self.sharding = NamedSharding(self.mesh, P("runs"))
    n_dev = self.mesh.devices.size
    self.num_runs = len(self.points) * self.config.num_seeds
    self.padded_runs = -(-self.num_runs // n_dev) * n_dev
    self.optimizer = make_optimizer(self.config.optim,
                                    [f.split(".", 1)[1] for f in self.folded
                                     if f.startswith("optim.")])
    abstract = nnx.eval_shape(lambda: self.model_fn(
        self.view({f: jnp.float32(0) for f in self.folded}), self.task,
        nnx.Rngs(params=jax.random.PRNGKey(0))))
    self.graphdef = nnx.split(abstract, nnx.Param, ...)[0]
    opts = {k: cpu_only(v) for k, v in self.compile_options.items()}
    self.init = jax.jit(jax.vmap(self.init_state), in_shardings=self.sharding,
                        out_shardings=self.sharding, compiler_options=opts.get("init"))
    self.measure = jax.jit(jax.vmap(self.measure_one), in_shardings=self.sharding,
                           out_shardings=self.sharding, compiler_options=opts.get("measure"))
    self._chunk_options = opts.get("chunk")
    self._chunks: dict[int, Callable] = {}

  # ---- per-run configuration -------------------------------------------------------
  def view(self, values: dict[str, Any]) -> config_lib.View:
    """The config as one run sees it: folded fields replaced by ``values``."""
    return config_lib.view(self.config, values)

  def run_values(self) -> dict[str, np.ndarray]:
    """Per folded field, its value for each (padded) run, point-major."""
    out = {}
    for f in self.folded:
      per_point = [FOLDABLE[f](self.config, p[f]) for p in self.points]
      v = np.repeat(np.asarray(per_point, np.float32), self.config.num_seeds)
      out[f] = np.concatenate([v, np.full(self.padded_runs - v.size, v[-1], np.float32)])
    return out

  def run_keys(self, seeds: np.ndarray | None = None) -> jax.Array:
    """The (padded) runs' keys: run (point p, seed i) uses seed i's key."""
    s = self.config.num_seeds
    idx = np.tile(np.arange(s), len(self.points)) if seeds is None else seeds
    idx = np.concatenate([idx, np.full(self.padded_runs - idx.size, idx[-1])])
    return seed_keys(self.config.seed, int(idx.max()) + 1)[idx]

  # ---- pure, single-run functions --------------------------------------------------
  def init_state(self, key: jax.Array, values: dict[str, jax.Array]) -> TrainState:
    k_params, k_data = jax.random.split(key)
    cfg = self.view(values)
    model = self.model_fn(cfg, self.task, nnx.Rngs(params=k_params))
    _, params, rest = nnx.split(model, nnx.Param, ...)
    folded_optim = {f.split(".", 1)[1]: v for f, v in values.items() if f.startswith("optim.")}
    opt_state = make_optimizer(cfg.optim, list(folded_optim)).init(params)
    return TrainState(params, rest, opt_state, params, jnp.zeros((), jnp.int32), k_data,
                      jnp.zeros((), bool), jnp.full((), -1, jnp.int32))

  def batch(self, state: TrainState):
    return self.task.sample(jax.random.fold_in(state.data_key, state.step),
                            self.config.batch_size)

  def loss_fn(self, params: nnx.State, rest: nnx.State, batch, **call_kwargs):
    """``(loss, (task_metrics, captured))`` of the model on ``batch``."""
    model = nnx.merge(self.graphdef, params, rest)
    logits, captured = models.apply(model, *self.task.model_inputs(batch), **call_kwargs)
    loss, task_metrics = self.task.loss(logits, batch)
    return loss, (task_metrics, captured)

  def train_step(self, state: TrainState) -> TrainState:
    """One optimizer step. A run that meets a non-finite value is frozen at
    its last finite state and flagged, so it cannot disturb the others."""
    grads, _ = jax.grad(self.loss_fn, has_aux=True)(state.params, state.model_rest,
                                                    self.batch(state))
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # One fused sum of the gradients and the update is finite iff all of them
    # are (non-finite values propagate): cheaper than testing every element and
    # parameter (a sum of the gradients alone measured 1.05x seed-steps/s on the
    # headline, median of 5 alternated trials; benchmarks.step_variants). The
    # update is summed too, so a finite step keeps the parameters finite.
    finite = jnp.isfinite(sum(jnp.sum(x) for x in jax.tree.leaves((grads, updates))))
    newly = ~finite & ~state.diverged
    diverged = state.diverged | ~finite
    keep = lambda new, old: jnp.where(diverged, old, new)
    return state._replace(
        params=jax.tree.map(keep, params, state.params),
        opt_state=jax.tree.map(keep, opt_state, state.opt_state),
        step=state.step + 1,
        diverged=diverged,
        diverged_step=jnp.where(newly, state.step, state.diverged_step))

  def measurement(self, state: TrainState, values: dict[str, jax.Array]) -> Measurement:
    """Loss, gradients, the next update and the captured internals at
    ``state.step``, on the batch the next step will train on."""
    batch = self.batch(state)
    (loss, (task_metrics, captured)), grads = jax.value_and_grad(
        self.loss_fn, has_aux=True)(state.params, state.model_rest, batch)
    updates, _ = self.optimizer.update(grads, state.opt_state, state.params)
    model = nnx.merge(self.graphdef, state.params, state.model_rest)
    return Measurement(model, state.params, state.init_params, grads, updates, batch,
                       loss, task_metrics, captured, self.task, self.view(values),
                       state.model_rest, self)

  def measure_one(self, state: TrainState, values: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Every metric of one run: loss, the task's metrics, each metric
    function's, and the divergence flags."""
    m = self.measurement(state, values)
    out = {"loss": m.loss, **m.task_metrics}
    for i, fn in enumerate(self.metrics):
      if isinstance(fn, HostMetric):
        out.update({f"{_HOST}{i}/{k}": v for k, v in fn.collect(m).items()})
      else:
        out.update(fn(m))
    out["diverged"] = state.diverged
    out["diverged_step"] = state.diverged_step
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}

  def fetch(self, metrics: dict[str, jax.Array]) -> dict[str, np.ndarray]:
    """Measured metrics as host arrays of every run (from every process),
    with the host metrics finished."""
    got = dict(distributed.gather(metrics))
    for i, fn in enumerate(self.metrics):
      if isinstance(fn, HostMetric):
        prefix = f"{_HOST}{i}/"
        mine = {k[len(prefix):]: got.pop(k) for k in [k for k in got if k.startswith(prefix)]}
        got.update(fn.finish(mine))
    return got

  # ---- jitted, run-vmapped -----------------------------------------------------------
  def train_chunk(self, n: int) -> Callable[[TrainState], TrainState]:
    """``n`` steps in one compiled call, state donated."""
    if n not in self._chunks:
      def chunk(state):
        return jax.lax.scan(lambda s, _: (self.train_step(s), None), state,
                            None, length=n)[0]
      self._chunks[n] = jax.jit(jax.vmap(chunk), in_shardings=self.sharding,
                                out_shardings=self.sharding, donate_argnums=0,
                                compiler_options=self._chunk_options)
    return self._chunks[n]

  def device_values(self) -> dict[str, jax.Array]:
    """``run_values`` on the devices, sharded over the run axis."""
    return {f: jax.device_put(v, self.sharding) for f, v in self.run_values().items()}

  def init_states(self) -> TrainState:
    return self.init(jax.device_put(self.run_keys(), self.sharding), self.device_values())

  def measure_states(self, state: TrainState) -> dict[str, jax.Array]:
    return self.measure(state, self.device_values())

  def measure_at_init(self, num_seeds: int) -> dict[str, np.ndarray]:
    """Metrics at initialization of seeds 0..num_seeds-1 of every point, with
    the compiled init and measure programs (no new compilation). Points that
    differ only in optimizer values are the same model at step 0 and are
    measured once. Maps names to [points, num_seeds] arrays."""
    per_call = self.padded_runs
    model_key = lambda p: tuple((f, repr(p[f])) for f in self.folded
                                if not f.startswith("optim."))
    first = {}
    for i, p in enumerate(self.points):
      first.setdefault(model_key(p), i)
    pairs = [(p, s) for p in sorted(set(first.values())) for s in range(num_seeds)]
    values = self.run_values()
    parts = []
    for i in range(0, len(pairs), per_call):
      chunk = pairs[i:i + per_call]
      seeds = np.array([s for _, s in chunk])
      point_of = np.array([p for p, _ in chunk] + [chunk[-1][0]] * (per_call - len(chunk)))
      vals = {f: jax.device_put(np.asarray(values[f])[point_of * self.config.num_seeds],
                                self.sharding) for f in self.folded}
      keys = seed_keys(self.config.seed, num_seeds)[np.concatenate(
          [seeds, np.full(per_call - len(chunk), seeds[-1])])]
      state = self.init(jax.device_put(keys, self.sharding), vals)
      got = self.fetch(self.measure(state, vals))
      parts.append({k: v[:len(chunk)] for k, v in got.items()})
    measured = sorted(set(first.values()))
    at = [measured.index(first[model_key(p)]) for p in self.points]
    return {k: np.concatenate([p[k] for p in parts]).reshape(len(measured), num_seeds)[at]
            for k in parts[0]}

  def split_runs(self, metrics: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Per point, its seeds' metrics ([num_seeds] arrays); padding dropped."""
    s = self.config.num_seeds
    return [{k: v[i * s:(i + 1) * s] for k, v in metrics.items()}
            for i in range(len(self.points))]


def chunk_lengths(steps: int, log_every: int) -> list[int]:
  """Steps between logging points: ``log_every`` each, the rest last."""
  full, rest = divmod(steps, log_every)
  return [log_every] * full + ([rest] if rest else [])


def train(trainer: Trainer, state: TrainState | None = None, start: int = 0,
          after_chunk: Callable[[int, int, TrainState], None] | None = None
          ) -> Iterator[tuple[int, dict[str, np.ndarray], TrainState | None]]:
  """The training loop (the command line's, the sweeps' and the tests'): runs
  the config's steps from ``state`` at step ``start`` (default: fresh runs at
  step 0), yielding ``(step, metrics, state)`` at each logging point;
  ``metrics`` maps names to [padded_runs] arrays.

  The state is yielded only at the last point (it is donated otherwise).
  Metrics are fetched one logging point late, so the host writing them does
  not stall the device. ``after_chunk(step, n, state)`` runs after each chunk
  of ``n`` steps once the previous point is consumed (progress, checkpoints);
  its ``state`` is valid until it returns.
  """
  state = trainer.init_states() if state is None else state
  values = trainer.device_values()
  pending = (start, trainer.measure(state, values))
  step = start
  for n in chunk_lengths(trainer.config.steps - start, trainer.config.log_every):
    # Any implicit host<->device transfer in the loop is a bug: fail loudly.
    with jax.transfer_guard("disallow"):
      state = trainer.train_chunk(n)(state)
      step += n
      done_step, done = pending
      pending = (step, trainer.measure(state, values))
    yield done_step, trainer.fetch(done), None
    if after_chunk is not None:
      after_chunk(step, n, state)
  yield pending[0], trainer.fetch(pending[1]), state


def first_finite_run(state: TrainState, runs: Sequence[int]) -> int:
  """The first of ``runs`` that did not diverge (the first of them if all did)."""
  diverged = np.asarray(state.diverged)
  ok = [r for r in runs if not diverged[r]]
  return ok[0] if ok else runs[0]


__all__ = ["FOLDABLE", "HostMetric", "Measurement", "MetricFn", "TrainState", "Trainer",
           "chunk_lengths",
           "first_finite_run", "make_optimizer", "seed_keys", "train"]
