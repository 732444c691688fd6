"""The study framework: a study declares what is particular to it, and this
module does the rest.

A ``Study`` names its task, its *conditions* (name -> config overrides), the
metric functions it logs, its *claims* (``Claim``: a quote and its source,
what is measured, an effect function of the saved run, a rule) and its
figures (drawn from the saved run only). ``run`` groups the conditions into
programs — conditions whose configs differ only in foldable values
(``train.FOLDABLE``: learning rate, initialization scale...) share one
vmapped program, the others get one compiled program each — trains them with
every metric streamed to ``metrics.jsonl``, then ``finish`` writes
``summary.json``, the figures and ``report.md`` from the saved files alone.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from qkvjax import config as config_lib
from qkvjax import distributed
from qkvjax import models
from qkvjax import plotting
from qkvjax import report
from qkvjax import registry
from qkvjax import results
from qkvjax import rundir
from qkvjax import runner
from qkvjax import stats
from qkvjax import tasks
from qkvjax import train
from qkvjax.metrics import circuits

Overrides = dict[str, Any]  # dotted config field -> value; "task" -> a task name


@dataclasses.dataclass(frozen=True)
class Claim:
  """One claim, as data: what it says, where, how it is measured and judged."""

  name: str
  quote: str
  source: str                            # a key of bibliography.SOURCES
  measured: str                          # what the effect is, in words
  effect: Callable[[results.Run], Any]   # per-seed values from the saved run
  rule: stats.Rule


@dataclasses.dataclass(frozen=True)
class Figure:
  title: str
  name: str                              # file stem: name.png, name.pdf
  draw: Callable[[results.Run], Any]     # saved run -> matplotlib figure


def _no_claims(run):
  del run
  return []


@dataclasses.dataclass(frozen=True)
class Study:
  """What one ``--exp`` is. Only ``name``, ``title`` and ``task`` are required.

  Attributes:
    name: the ``--exp`` name (and results subdirectory).
    title: the report's heading.
    task: the default task (a key of ``qkvjax.tasks.BUILDERS``); a condition
      may name another with the override ``"task"``.
    conditions: config -> {condition name: overrides}.
    metrics: metric functions of a ``train.Measurement``, logged per run.
    default_metrics: metric groups every study logs after its own (the
      symmetry and directionality of W_Q W_K^T); ``()`` logs only ``metrics``.
    claims: saved run -> the claims to judge.
    figures: saved run -> the figures to draw.
    describe: saved run -> the report's paragraph on the task and setup.
    validate: checks the study's own config fields (ConfigError); the
      framework checks every condition's model, optimizer and task blocks.
    model_fn: (config view, task, rngs) -> the NNX model.
    compile_options: XLA options per program kind (see ``train.Trainer``).
    samples: (trainer, final state, condition names) -> {condition: JSON},
      saved as ``samples.json`` for figures (e.g. attention maps).
    sections: (saved run, summary) -> extra report lines.
    summary: saved run -> extra summary.json entries.
    init_seeds: a config field: seeds also measured at initialization
      (rows tagged ``phase="init"``), or None.
  """

  name: str
  title: str
  task: str
  conditions: Callable[[ml_collections.ConfigDict], dict[str, Overrides]] = (
      lambda config: {"default": {}})
  metrics: Sequence[train.MetricFn] = ()
  default_metrics: Sequence[train.MetricFn] = (circuits.qk_structure,)
  claims: Callable[[results.Run], list[Claim]] = _no_claims
  figures: Callable[[results.Run], list[Figure]] = lambda run: []
  describe: Callable[[results.Run], str] = lambda run: ""
  validate: Callable[[ml_collections.ConfigDict], None] = config_lib.validate_common
  model_fn: Callable = train.default_model
  compile_options: dict[str, dict] | None = None
  samples: Callable[..., dict[str, Any]] | None = None
  sections: Callable[[results.Run, dict], list[str]] | None = None
  summary: Callable[[results.Run], dict[str, Any]] | None = None
  init_seeds: str | None = None

  def logged_metrics(self) -> tuple[train.MetricFn, ...]:
    """What each run logs: the study's metrics, then the default groups."""
    return (*self.metrics, *self.default_metrics)


def condition_configs(study: Study, config) -> dict[str, tuple[str, ml_collections.ConfigDict]]:
  """Per condition: its task name and its config (overrides applied)."""
  out = {}
  for name, overrides in study.conditions(config).items():
    overrides = dict(overrides)
    task = overrides.pop("task", study.task)
    out[name] = (task, config_lib.apply_overrides(config, overrides))
  return out


def programs(study: Study, config) -> list:
  """The study's conditions grouped into compiled programs (``runner.plan``)."""
  return runner.plan(study, [config])


def check(study: Study, config, results_dir) -> None:
  """Every check that needs no training; ConfigError on bad input."""
  study.validate(config)
  if study.init_seeds:  # seeds measured at initialization: two or more, for a spread
    n = config_lib.field(config, study.init_seeds)
    config_lib.require(2 <= n <= config_lib.MAX_SEEDS, study.init_seeds, n,
                       f"2..{config_lib.MAX_SEEDS}")
  for _, (task, cfg) in condition_configs(study, config).items():
    if "model" in cfg and "tie" in cfg.model:
      models.validate_model(cfg.model)
    if "optim" in cfg:
      train.validate_optim(cfg.optim)
    tasks.validate(task, cfg)
  results.check_writable(results_dir, study.name)


def run_model(trainer: train.Trainer, state: train.TrainState, run: int):
  """One run's model (an ``nnx.Module``) from a run-stacked state."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  params, rest = (jax.tree.map(lambda x: x[run], s) for s in (state.params, state.model_rest))
  return nnx.merge(trainer.graphdef, params, rest)


def attention_samples(trainer: train.Trainer, state: train.TrainState,
                      conditions: Sequence[str], size: int = 1) -> dict[str, Any]:
  """Per condition, its first non-diverged seed on one fixed sample batch:
  the input ids, the ground truth, the argmax output and every attention
  site's weights and logits (first row)."""
  cfg, task = trainer.config, trainer.task
  batch = task.sample(jax.random.PRNGKey(10_000 + cfg.seed), size)
  inputs = task.model_inputs(batch)
  truth = {f: np.asarray(getattr(batch, f))[0].tolist() for f in batch._fields
           if not any(getattr(batch, f) is x for x in inputs)}
  out = {}
  s = cfg.num_seeds
  for i, name in enumerate(conditions):
    run = train.first_finite_run(state, list(range(i * s, (i + 1) * s)))
    logits, captured = models.apply(run_model(trainer, state, run), *inputs)
    out[name] = {
        "seed": run - i * s,
        "inputs": [np.asarray(x)[0].tolist() for x in inputs],
        "ground_truth": truth,
        "output_argmax": np.asarray(logits[0]).argmax(-1).tolist(),
        "sites": {site: {"weights": np.asarray(tr.weights_BxHxTxS[0]),
                         "logits": np.asarray(tr.logits_BxHxTxS[0])}
                  for site, tr in captured.attention.items()},
    }
  return out


def nnx_merge(trainer: train.Trainer, params, rest):
  """The model from one run's parameters and other state."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  return nnx.merge(trainer.graphdef, params, rest)


def _finisher(study: Study):
  return lambda run_dir: finish(study, run_dir)


def _new_unit(study: Study, run_dir: rundir.RunDir, config, variant: str | None,
              **extra) -> runner.Unit:
  """A unit whose config.json says what runs in it (process 0 writes it)."""
  run_dir.write_json("config.json", {
      "experiment": study.name, "variant": variant, "config": config.to_dict(),
      "status": "running", "run_dir": str(run_dir), "conditions": study.conditions(config),
      **extra, **results.provenance(train.run_mesh())})
  return runner.Unit(run_dir, config, extra.get("sweep", {}).get("point", {}))


def run(study: Study, config, results_dir, progress: bool = True,
        tensorboard: bool = False, variant: str | None = None) -> pathlib.Path:
  """Trains every program, then writes summary, figures and report.
  ``variant``: the ``get_config(arg)`` the config came from (e.g. "tiny"),
  recorded so a resume rebuilds the same one."""
  progs = runner.plan(study, [config])
  built = runner.build_tasks(progs)
  runner.check_resources(study, progs, built, results_dir)
  run_dir = rundir.RunDir.create(results_dir, study.name)
  runner.execute(study, [_new_unit(study, run_dir, config, variant)], _finisher(study),
                 progress, tensorboard=tensorboard, programs=progs, built=built)
  return run_dir.path


def run_sweep(study: Study, config, grid, results_dir, progress: bool = True,
              tensorboard: bool = False, variant: str | None = None) -> pathlib.Path:
  """One run directory per grid point under ``results/<exp>/<sweep_id>/``,
  foldable points trained together; then the sweep's summary and report."""
  from qkvjax import sweep  # pylint: disable=g-import-not-at-top
  grid_points = sweep.points(grid)
  configs = [config_lib.apply_overrides(config, p) for p in grid_points]
  progs = runner.plan(study, configs)
  built = runner.build_tasks(progs)
  runner.check_resources(study, progs, built, results_dir)
  sweep_dir = rundir.RunDir.create(results_dir, study.name)
  units, manifest = [], []
  for i, (point, cfg) in enumerate(zip(grid_points, configs)):
    name = sweep.point_name(i, point)
    units.append(_new_unit(study, sweep_dir.point(name, create=True), cfg, variant,
                           sweep={"dir": "..", "point": point}))
    manifest.append({"name": name, "overrides": point, "dir": name, "status": "running"})
  sweep.write_manifest(sweep_dir, study.name, config, grid, manifest, variant)
  runner.execute(study, units, _finisher(study), progress, tensorboard=tensorboard,
                 target=sweep_dir, programs=progs, built=built)
  if distributed.is_writer():
    sweep.finish(sweep_dir)
  return sweep_dir.path


def study_of(exp: str) -> Study:
  """The ``STUDY`` of ``qkvjax.studies.<exp>``; ConfigError if it has none."""
  module = registry.experiment_module(exp)
  if not hasattr(module, "STUDY"):
    raise config_lib.ConfigError(f"experiment {exp!r} does not train; accepted: a training "
                                 "experiment (its study module defines STUDY)")
  return module.STUDY


def _same_config(saved: ml_collections.ConfigDict, overrides: dict[str, str],
                 target: pathlib.Path) -> None:
  given = config_lib.apply_overrides(saved, overrides)
  for path in overrides:
    if config_lib.field(given, path) != config_lib.field(saved, path):
      raise config_lib.ConfigError(
          f"--config.{path}={overrides[path]!r} differs from the config {target} was started "
          f"with ({config_lib.field(saved, path)!r}); accepted: --resume without --config "
          "flags, or with the same values")


def resume(target, overrides: dict[str, str] | None = None, progress: bool = True,
           tensorboard: bool = False) -> pathlib.Path | None:
  """Continues a killed run or sweep from its last checkpoints; None (nothing
  written) if it is already complete. ConfigError if ``target`` is neither, or
  if ``overrides`` differ from its saved config."""
  from qkvjax import sweep  # pylint: disable=g-import-not-at-top
  bad = config_lib.ConfigError(f"--resume={str(target)!r} is not a run or sweep directory; "
                               "accepted: a results/<experiment>/<run_id> directory holding "
                               "config.json or sweep.json")
  target = rundir.RunDir(target)
  try:
    manifest = target.read_json("sweep.json") if target.has("sweep.json") else None
    saved = None if manifest else target.read_json()
  except (OSError, ValueError):
    raise bad from None
  exp = (manifest or saved).get("experiment") if isinstance(manifest or saved, dict) else None
  if not isinstance(exp, str):
    raise bad
  study = study_of(exp)
  if manifest:
    base = registry.from_saved(exp, manifest["config"], manifest.get("variant"))
    _same_config(base, overrides or {}, target.path)
    units = []
    for p in manifest["points"]:
      point = target.point(p["name"])
      unit_saved = point.read_json()
      if unit_saved.get("status") != "complete":
        units.append(runner.Unit(point, registry.from_saved(exp, unit_saved["config"],
                                                            unit_saved.get("variant")),
                                 p["overrides"]))
  else:
    cfg = registry.from_saved(exp, saved["config"], saved.get("variant"))
    _same_config(cfg, overrides or {}, target.path)
    units = [] if saved.get("status") == "complete" else [runner.Unit(target, cfg, {})]
  if not units:
    return None
  runner.execute(study, units, _finisher(study), progress, resume=True,
                 tensorboard=tensorboard, target=target)
  if manifest and distributed.is_writer():
    sweep.finish(target)
  return target.path


def evaluate(claim: Claim, run: results.Run) -> dict[str, Any]:
  """A claim's summary entry: what it says, its effect, verdict and p-value."""
  values = np.asarray(claim.effect(run), float)
  return {"claim": claim.name, "quote": claim.quote, "source": claim.source,
          "measured": claim.measured, **stats.evaluate(values, claim.rule)}


def summarize(study: Study, run: results.Run) -> dict[str, Any]:
  """Claims with raw and corrected verdicts, diverged seeds, and every
  metric's final value per condition (mean, std, CI, per seed)."""
  claims = judge(study.claims(run), run)
  final, diverged = {}, {}
  steps = sorted({r["step"] for r in run.rows if r.get("phase", "train") == "train"})
  for name in run.conditions:
    where = {"condition": name, "phase": "train"}
    if not run.has("loss", **where):
      continue
    diverged[name] = run.diverged_seeds(**where)
    final[name] = {k: {**stats.describe(run.final(k, **where)),
                       "per_seed": run.final(k, **where)}
                   for k in run.keys(**where) if k not in ("step", "seed")}
  at_init = {}
  for name in run.conditions:
    where = {"condition": name, "phase": "init"}
    if run.has("loss", **where):
      at_init[name] = {k: {**stats.describe(run.initial(k, **where)),
                           "per_seed": run.initial(k, **where)}
                       for k in run.keys(**where) if k not in ("step", "seed")}
  out = {"experiment": run.experiment, "status": run.saved.get("status", "complete"),
         "num_seeds": run.config.get("num_seeds"), "final_step": steps[-1] if steps else 0,
         "conditions": run.conditions, "diverged_seeds": diverged,
         "partial_logging_points": run.partial, "claims": claims,
         "final": final, **({"at_init": at_init} if at_init else {})}
  if study.summary:
    out.update(study.summary(run))
  return out


def finish(study: Study, run_dir) -> None:
  """Summary, figures and report from the saved files alone."""
  run = results.Run(run_dir)
  summary = summarize(study, run)
  results.write_json(run.dir / "summary.json", summary)
  figures = {}
  for fig in study.figures(run) if plotting.FORMATS else []:
    drawn = fig.draw(run)
    plotting.incomplete_note(drawn, run)
    figures[fig.title] = plotting.save(drawn, run.dir, fig.name)
  sections = study.sections(run, summary) if study.sections else []
  report.write(run, study.title, study.describe(run), summary, figures, sections)


# ---- trained parameters, for analysis after a run ---------------------------------------
def _load_run_states(run_dir, step: int | None):
  """Per condition, ``(params, model_rest)`` from the checkpoint at ``step``
  (default: the last), leaves with a leading seed axis."""
  run_dir = rundir.RunDir(run_dir)
  saved = run_dir.read_json()
  study = study_of(saved["experiment"])
  cfg = registry.from_saved(saved["experiment"], saved["config"], saved.get("variant"))
  unit = runner.Unit(run_dir, cfg, {})
  out = {}
  for p in runner.plan(study, [cfg]):
    trainer = train.Trainer(p.config, tasks.make(p.task, p.config), p.points, (),
                            study.model_fn)
    have = run_dir.checkpoint_steps(p.unit_conditions(0))
    at = have[-1] if step is None and have else step
    if at is None or at not in have:
      raise config_lib.ConfigError(f"{run_dir} has no checkpoint at step {step!r} for "
                                   f"{', '.join(p.conditions)}; accepted: one of {have}")
    state = jax.device_get(runner.restore(trainer, p, [unit], at))
    s = p.config.num_seeds
    for i, m in enumerate(p.members):
      out[m.condition] = tuple(jax.tree.map(lambda x, i=i: x[i * s:(i + 1) * s], part)
                               for part in (state.params, state.model_rest))
  return out


def load_run_params(run_dir, step: int | None = None) -> dict[str, Any]:
  """The trained parameters of a run, per condition: an ``nnx.State`` of the
  study's Flax model whose leaves have a leading seed axis, from the
  checkpoint at ``step`` (default: the last). With ``load_run_model`` a
  finished run's models can be analysed without retraining."""
  return {c: params for c, (params, _) in _load_run_states(run_dir, step).items()}


def load_run_model(run_dir, condition: str | None = None, seed: int = 0,
                   step: int | None = None):
  """One seed's trained model (an ``nnx.Module``) of a run's condition (the
  only one if the run has one), with its non-parameter state (frozen
  embeddings, say) as the run saved it."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  run_dir = rundir.RunDir(run_dir)
  saved = run_dir.read_json()
  study = study_of(saved["experiment"])
  states = _load_run_states(run_dir, step)
  condition = condition or next(iter(states))
  cfg = registry.from_saved(saved["experiment"], saved["config"], saved.get("variant"))
  task_name, cond_cfg = condition_configs(study, cfg)[condition]
  model = nnx.eval_shape(lambda: study.model_fn(cond_cfg, tasks.make(task_name, cond_cfg),
                                                nnx.Rngs(params=jax.random.PRNGKey(0))))
  graphdef = nnx.split(model, nnx.Param, ...)[0]
  params, rest = (jax.tree.map(lambda x: x[seed], part) for part in states[condition])
  return nnx.merge(graphdef, params, rest)


def judge(claims: Sequence[Claim], run) -> list[dict[str, Any]]:
  """Each claim's summary entry (``evaluate``), verdicts corrected across
  them (Holm–Bonferroni); ``run`` is what the claims' effects read: a
  ``results.Run``, or another saved record (a pretrained run's)."""
  out = [evaluate(c, run) for c in claims]
  stats.correct(out)
  return out
