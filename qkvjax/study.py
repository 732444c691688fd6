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
import json
import pathlib
from typing import Any, Callable, NamedTuple, Sequence

import jax
import ml_collections
import numpy as np

from qkvjax import config as config_lib
from qkvjax import models
from qkvjax import plotting
from qkvjax import report
from qkvjax import results
from qkvjax import stats
from qkvjax import tasks
from qkvjax import train

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


class Program(NamedTuple):
  """Conditions that run as one compiled program."""

  task: str
  config: ml_collections.ConfigDict
  conditions: list[str]
  points: list[dict[str, Any]]  # per condition, its foldable values


def condition_configs(study: Study, config) -> dict[str, tuple[str, ml_collections.ConfigDict]]:
  """Per condition: its task name and its config (overrides applied)."""
  out = {}
  for name, overrides in study.conditions(config).items():
    overrides = dict(overrides)
    task = overrides.pop("task", study.task)
    out[name] = (task, config_lib.apply_overrides(config, overrides))
  return out


def _has(cfg, path: str) -> bool:
  try:
    config_lib.field(cfg, path)
  except config_lib.ConfigError:
    return False
  return True


def programs(study: Study, config) -> list[Program]:
  """Conditions grouped into programs: same task and same config apart from
  foldable fields share one program, in the order the study lists them."""
  groups: dict[str, Program] = {}
  for name, (task, cfg) in condition_configs(study, config).items():
    foldable = [f for f in train.FOLDABLE if _has(cfg, f)]
    static = config_lib.copy(cfg)
    for f in foldable:
      config_lib.set_field(static, f, None)
    key = json.dumps([task, static.to_dict()], sort_keys=True, default=str)
    if key not in groups:
      groups[key] = Program(task, cfg, [], [])
    groups[key].conditions.append(name)
    groups[key].points.append({f: config_lib.field(cfg, f) for f in foldable})
  return list(groups.values())


def check(study: Study, config, results_dir) -> None:
  """Every check that needs no training; ConfigError on bad input."""
  study.validate(config)
  for _, (task, cfg) in condition_configs(study, config).items():
    if "model" in cfg and "tie" in cfg.model:
      config_lib.validate_model(cfg.model)
    if "optim" in cfg:
      config_lib.validate_optim(cfg.optim)
    tasks.validate(task, cfg)
  results.check_writable(results_dir, study.name)


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
  forward = jax.jit(lambda p, r: models.apply(nnx_merge(trainer, p, r), *inputs))
  out = {}
  s = cfg.num_seeds
  for i, name in enumerate(conditions):
    run = train.first_finite_run(state, list(range(i * s, (i + 1) * s)))
    params = jax.tree.map(lambda x: x[run], state.params)  # pylint: disable=cell-var-from-loop
    rest = jax.tree.map(lambda x: x[run], state.model_rest)  # pylint: disable=cell-var-from-loop
    logits, captured = forward(params, rest)
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
  from flax import nnx  # pylint: disable=g-import-not-at-top
  return nnx.merge(trainer.graphdef, params, rest)


def run(study: Study, config, results_dir, progress: bool = True) -> pathlib.Path:
  """Trains every program, then writes summary, figures and report."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  progs = programs(study, config)
  built: dict[str, tasks.Task] = {}
  for prog in progs:
    built.setdefault(prog.task, tasks.make(prog.task, prog.config))
  run_dir = results.new_run_dir(results_dir, study.name)
  saved = {"experiment": study.name, "config": config.to_dict(), "status": "running",
           "conditions": study.conditions(config), **results.provenance(train.run_mesh())}
  results.write_json(run_dir / "config.json", saved)
  results.write_json(run_dir / "task.json", {n: t.tables() for n, t in built.items()})
  writer = results.MetricsWriter(run_dir / "metrics.jsonl")
  total = sum(p.config.steps for p in progs)
  bar = tqdm(total=total, unit="step", disable=not progress, dynamic_ncols=True)
  samples: dict[str, Any] = {}
  try:
    for prog in progs:
      trainer = train.Trainer(prog.config, built[prog.task], prog.points, study.metrics,
                              study.model_fn, **({"compile_options": study.compile_options}
                                                 if study.compile_options else {}))
      bar.set_description(f"{'/'.join(prog.conditions)[:40]} ({trainer.num_runs} runs)")
      if study.init_seeds:
        at_init = trainer.measure_at_init(int(config_lib.field(config, study.init_seeds)))
        for i, name in enumerate(prog.conditions):
          writer.write(0, {k: v[i] for k, v in at_init.items()},
                       {"condition": name, "phase": "init"})
      last = 0
      for step, metrics, state in train.train(trainer):
        for name, part in zip(prog.conditions, trainer.split_runs(metrics)):
          writer.write(step, part, {"condition": name, "phase": "train"})
        bar.update(step - last)
        last = step
        bar.set_postfix(loss=f"{np.nanmean(metrics['loss']):.3f}",
                        diverged=int(np.sum(metrics["diverged"][:trainer.num_runs])))
      if study.samples:
        samples.update(study.samples(trainer, state, prog.conditions))
  finally:
    bar.close()
    writer.close()
  if samples:
    results.write_json(run_dir / "samples.json", samples)
  results.write_json(run_dir / "config.json", {**saved, "status": "complete"})
  finish(study, run_dir)
  return run_dir


def evaluate(claim: Claim, run: results.Run) -> dict[str, Any]:
  """A claim's summary entry: what it says, its effect, verdict and p-value."""
  values = np.asarray(claim.effect(run), float)
  return {"claim": claim.name, "quote": claim.quote, "source": claim.source,
          "measured": claim.measured, **stats.evaluate(values, claim.rule)}


def summarize(study: Study, run: results.Run) -> dict[str, Any]:
  """Claims with raw and corrected verdicts, diverged seeds, and every
  metric's final value per condition (mean, std, CI, per seed)."""
  claims = [evaluate(c, run) for c in study.claims(run)]
  stats.correct(claims)
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
  out = {"experiment": run.experiment, "status": run.saved.get("status", "complete"),
         "num_seeds": run.config.get("num_seeds"), "final_step": steps[-1] if steps else 0,
         "conditions": run.conditions, "diverged_seeds": diverged,
         "partial_logging_points": run.partial, "claims": claims,
         "final": final}
  if study.summary:
    out.update(study.summary(run))
  return out


def finish(study: Study, run_dir) -> None:
  """Summary, figures and report from the saved files alone."""
  run = results.Run(run_dir)
  summary = summarize(study, run)
  results.write_json(run.dir / "summary.json", summary)
  figures = {}
  for fig in study.figures(run):
    drawn = fig.draw(run)
    plotting.incomplete_note(drawn, run)
    figures[fig.title] = plotting.save(drawn, run.dir, fig.name)
  sections = study.sections(run, summary) if study.sections else []
  report.write(run, study.title, study.describe(run), summary, figures, sections)
