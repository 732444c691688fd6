"""Running a study: plan programs, train them with checkpoints, resume.

A *unit* is one run directory (``qkvjax.rundir.RunDir``: its status, metrics
file and checkpoints) with the study's config and one sweep point applied (a
plain run is a sweep of one point). The study's conditions of every
unit are grouped into *programs*: (unit, condition) pairs whose configs
differ only in foldable values train in one vmapped program, in the order the
study lists them. Each program streams its logging points to each unit's
``metrics.jsonl`` and saves its train state every ``checkpoint_every``
logging points and at the end (``qkvjax.checkpoints``). ``resume`` continues
from the last checkpoint: the metrics written after it are dropped and
recomputed, so a resumed run's ``metrics.jsonl`` equals an uninterrupted one.
With several processes (``qkvjax.distributed``) every process computes and
only process 0 writes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import shutil
from typing import Any, Callable, NamedTuple, Sequence

import jax
import ml_collections
import numpy as np

from qkvjax import config as config_lib
from qkvjax import distributed
from qkvjax import interrupts
from qkvjax import loggers
from qkvjax import results
from qkvjax import rundir
from qkvjax import tasks
from qkvjax import train

# Logging points between checkpoints when a config does not say
# (``checkpoint_every``): about 1-2% of the headline run's time per save.
CHECKPOINT_EVERY = 10


@dataclasses.dataclass
class Unit:
  """One run directory: the config with a sweep point applied."""

  dir: rundir.RunDir
  config: ml_collections.ConfigDict
  point: dict[str, Any]


class Member(NamedTuple):
  unit: int
  condition: str


class Program(NamedTuple):
  """(unit, condition) pairs trained as one compiled program."""

  task: str
  config: ml_collections.ConfigDict
  members: list[Member]
  points: list[dict[str, Any]]  # per member, its foldable values

  @property
  def conditions(self) -> list[str]:
    """Every member's condition, in order (for one unit: its conditions)."""
    return [m.condition for m in self.members]

  def unit_conditions(self, unit: int) -> list[str]:
    return [m.condition for m in self.members if m.unit == unit]


def _has(cfg, path: str) -> bool:
  try:
    config_lib.field(cfg, path)
  except config_lib.ConfigError:
    return False
  return True


def plan(study, configs: Sequence[ml_collections.ConfigDict]) -> list[Program]:
  """Programs over every unit's conditions: the same task and the same
  config apart from foldable fields share one program."""
  groups: dict[str, Program] = {}
  for u, config in enumerate(configs):
    for name, overrides in study.conditions(config).items():
      overrides = dict(overrides)
      task = overrides.pop("task", study.task)
      cfg = config_lib.apply_overrides(config, overrides)
      foldable = [f for f in train.FOLDABLE if _has(cfg, f)]
      static = config_lib.copy(cfg)
      for f in foldable:
        config_lib.set_field(static, f, None)
      key = json.dumps([task, static.to_dict()], sort_keys=True, default=str)
      if key not in groups:
        groups[key] = Program(task, cfg, [], [])
      groups[key].members.append(Member(u, name))
      groups[key].points.append({f: config_lib.field(cfg, f) for f in foldable})
  return list(groups.values())


def build_tasks(programs: Sequence[Program]) -> dict[tuple, tasks.Task]:
  built = {}
  for p in programs:
    key = _task_key(p)
    if key not in built:
      built[key] = tasks.make(p.task, p.config)
  return built


def _task_key(p: Program) -> tuple:
  block = p.config.get("task", p.config.get("data"))
  return (p.task, json.dumps(block.to_dict() if block is not None else None, sort_keys=True),
          p.config.get("seed"))


# ---- memory and disk, before anything is written ------------------------------------
BYTES_PER_ROW = 16_000  # a generous metrics.jsonl row (the headline's is ~9 kB)


def available_memory() -> int:
  """Bytes the run may use: the accelerator's limit, or the host's available RAM."""
  dev = jax.devices()[0]
  stats = dev.memory_stats() if dev.platform != "cpu" else None
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"])
  try:
    with open("/proc/meminfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def estimate(study, programs: Sequence[Program], built) -> dict[str, int]:
  """Bytes of device memory the largest program needs (parameters, optimizer
  state, initial copy, gradients and activations for every run) and bytes of
  disk for every metrics row; shapes only, nothing is allocated."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  memory, rows = 0, 0
  for p in programs:
    c, task = p.config, built[_task_key(p)]
    model = nnx.eval_shape(lambda: study.model_fn(config_lib.view(c), task,  # pylint: disable=cell-var-from-loop
                                                  nnx.Rngs(params=0)))
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    width = max(int(np.prod(x.shape[-1:])) for x in jax.tree.leaves(nnx.state(model)))
    runs = len(p.members) * c.num_seeds
    activations = c.batch_size * task.seq_len * max(width, 1) * 64
    memory = max(memory, runs * (6 * params + activations) * 4)
    points = c.steps // c.log_every + 2 + (1 if study.init_seeds else 0)
    rows += points * runs
  return {"memory": memory, "disk": rows * BYTES_PER_ROW}


def check_resources(study, programs, built, results_dir) -> None:
  need = estimate(study, programs, built)
  have = available_memory()
  if need["memory"] > have:
    raise config_lib.ConfigError(
        f"this config needs about {need['memory'] / 2**30:.1f} GiB of memory for its "
        f"largest program and {have / 2**30:.1f} GiB is available; accepted: a smaller "
        "model, batch or seed count")
  probe = pathlib.Path(results_dir).expanduser()
  while not probe.exists():
    probe = probe.parent
  free = shutil.disk_usage(probe).free
  if need["disk"] > free:
    raise config_lib.ConfigError(
        f"this config would write about {need['disk'] / 2**30:.3g} GiB of metrics and "
        f"{free / 2**30:.1f} GiB of disk is free; accepted: fewer steps or logging points")


# ---- training one program ------------------------------------------------------------
def _member_slices(program: Program, num_seeds: int) -> dict[int, slice]:
  """Each unit's contiguous block of the run axis (members are unit-major)."""
  out: dict[int, list[int]] = {}
  for i, m in enumerate(program.members):
    out.setdefault(m.unit, []).append(i)
  return {u: slice(idx[0] * num_seeds, (idx[-1] + 1) * num_seeds) for u, idx in out.items()}


def resume_step(program: Program, units: Sequence[Unit]) -> int | None:
  """The latest step every unit of the program has a checkpoint of, or None."""
  common = None
  for u in {m.unit for m in program.members}:
    have = set(units[u].dir.checkpoint_steps(program.unit_conditions(u)))
    common = have if common is None else common & have
  return max(common) if common else None


def restore(trainer: train.Trainer, program: Program, units: Sequence[Unit], step: int):
  """The program's state from the checkpoints at ``step``."""
  slices = _member_slices(program, program.config.num_seeds)
  abstract = jax.eval_shape(trainer.init, jax.ShapeDtypeStruct(
      (trainer.padded_runs, 2), np.uint32), {f: jax.ShapeDtypeStruct(
          (trainer.padded_runs,), np.float32) for f in trainer.folded})
  parts = []
  for u, sl in slices.items():
    like = jax.tree.map(lambda x, sl=sl: jax.ShapeDtypeStruct(
        (sl.stop - sl.start,) + x.shape[1:], x.dtype), abstract)
    parts.append(units[u].dir.restore_checkpoint(program.unit_conditions(u), step, like))
  pad = trainer.padded_runs - trainer.num_runs
  host = jax.tree.map(lambda *xs: np.concatenate(
      list(xs) + ([np.repeat(xs[-1][-1:], pad, 0)] if pad else [])), *parts)
  return jax.device_put(host, trainer.sharding)


def _save(program, units, step, state) -> None:
  host = distributed.gather(state)
  for u, sl in _member_slices(program, program.config.num_seeds).items():
    units[u].dir.save_checkpoint(program.unit_conditions(u), step,
                                 jax.tree.map(lambda x, sl=sl: x[sl], host))


def train_program(study, program: Program, units: Sequence[Unit], task: tasks.Task,
                  writers: dict, sinks: dict, bar, start: int | None) -> dict[str, Any]:
  """Trains one program from its checkpoint at ``start`` (or from scratch)
  to its last step, writing every logging point and saving checkpoints;
  returns its samples (``Study.samples``) by unit."""
  cfg = program.config
  trainer = train.Trainer(cfg, task, program.points, study.logged_metrics(),
                          study.model_fn,
                          **({"compile_options": study.compile_options}
                             if study.compile_options else {}))
  names = [m.condition for m in program.members]
  bar.set_description(f"{'/'.join(dict.fromkeys(names))[:40]} ({trainer.num_runs} runs)")
  state = None if start is None else restore(trainer, program, units, start)
  start = start or 0

  def write(step, metrics, phase):
    if not distributed.is_writer():
      return
    for m, part in zip(program.members, trainer.split_runs(metrics)):
      fields = {"condition": m.condition, "phase": phase}
      writers[m.unit].write(step, part, fields)
      for sink in sinks.get(m.unit, ()):
        sink.write(step, part, fields)

  if state is None:
    if study.init_seeds:
      at_init = trainer.measure_at_init(int(config_lib.field(cfg, study.init_seeds)))
      for i, m in enumerate(program.members):
        if distributed.is_writer():
          writers[m.unit].write(0, {k: v[i] for k, v in at_init.items()},
                                {"condition": m.condition, "phase": "init"})
    state = trainer.init_states()
  every = int(cfg.get("checkpoint_every", CHECKPOINT_EVERY))
  bar.update(start)

  def after_chunk(step, n, state):
    bar.update(n)
    if step < cfg.steps and (step // cfg.log_every) % every == 0:
      _save(program, units, step, state)

  for step, metrics, final in train.train(trainer, state, start, after_chunk):
    write(step, metrics, "train")
  state = final
  _save(program, units, step, state)
  if not study.samples:
    return {}
  # Samples are taken from the first process's copy of the state.
  gathered = train.TrainState(*distributed.gather(tuple(state)))
  out: dict[int, dict] = {}
  s = cfg.num_seeds
  for u, sl in _member_slices(program, s).items():
    sub = jax.tree.map(lambda x, sl=sl: x[sl], gathered)
    out[u] = study.samples(trainer, sub, program.unit_conditions(u))
  return out


def execute(study, units: Sequence[Unit], finish: Callable[[rundir.RunDir], None],
            progress: bool = True, resume: bool = False, tensorboard: bool = False,
            target: rundir.RunDir | None = None, programs: Sequence[Program] | None = None,
            built=None) -> None:
  """Trains every given unit and finishes each with ``finish(unit_dir)``
  (the study's summary, figures and report). ``target`` (the run, or the
  sweep the units are points of) takes the interrupt note and the traceback
  of a failure; a sweep's ``sweep.json`` follows its points' status."""
  target = target or units[0].dir
  try:
    _execute(study, units, finish, progress, resume, tensorboard, target, programs, built)
  finally:
    target.sync_points([u.dir for u in units])


def _execute(study, units, finish, progress, resume, tensorboard, target, programs, built):
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  programs = plan(study, [u.config for u in units]) if programs is None else programs
  built = build_tasks(programs) if built is None else built
  dirs = [u.dir for u in units]
  note = functools.partial(target.interrupted, dirs)
  remove = interrupts.on_interrupt(note)
  writers: dict[int, results.MetricsWriter] = {}
  sinks: dict[int, list] = {}
  samples: dict[int, dict] = {}
  bar = tqdm(total=sum(p.config.steps for p in programs), unit="step", dynamic_ncols=True,
             disable=not progress or not distributed.is_writer())
  starts = [resume_step(p, units) if resume else None for p in programs]
  try:
    if distributed.is_writer():
      if resume:  # before the writers open: the rewrite replaces the file
        for p, start in zip(programs, starts):
          for u in {m.unit for m in p.members}:
            units[u].dir.drop_metrics_from(p.unit_conditions(u), start)
      for i, u in enumerate(units):
        u.dir.set_status("running")
        if not resume:
          u.dir.write_json("task.json", {
              p.task: built[_task_key(p)].tables() for p in programs
              if any(m.unit == i for m in p.members)})
        writers[i] = u.dir.metrics_writer()
        sinks[i] = [loggers.TensorBoardSink(u.dir.path)] if tensorboard else []
    for p, start in zip(programs, starts):
      got = train_program(study, p, units, built[_task_key(p)], writers, sinks, bar, start)
      for u, s in got.items():
        samples.setdefault(u, {}).update(s)
  except KeyboardInterrupt:  # in-process: the signal watcher is not installed
    note("SIGINT")
    raise
  except Exception as e:  # pylint: disable=broad-except
    failed = e
  else:
    failed = None
  finally:
    bar.close()
    for w in writers.values():
      w.close()
    for s in sinks.values():
      for sink in s:
        sink.close()
    remove()
  if failed is not None:
    raise target.failed(dirs, failed)
  if not distributed.is_writer():
    return
  for i, u in enumerate(units):
    if samples.get(i):
      u.dir.write_json("samples.json", samples[i])
    u.dir.set_status("complete")
    try:
      finish(u.dir)
    except Exception as e:  # pylint: disable=broad-except
      raise u.dir.failed([u.dir], e, finishing=True) from None
