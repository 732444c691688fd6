"""Entry point: ``python -m experiments.run --exp=NAME [--config.FIELD=VALUE ...]``.

Thin by design: parse flags, load and check the config, call the library.

    --exp=NAME                 the experiment (a module of configs/)
    --config=tiny              a variant of the experiment's config (its
                               get_config("tiny")): the same experiment shrunk
                               to seconds, every condition, claim and figure kept
    --config.FIELD=VALUE       override a config field (typed; lists comma-separated)
    --sweep.FIELD=V1,V2,...    sweep a field (repeatable: the grid is the product)
    --sweep                    sweep the config's own grid (its get_sweep())
    --resume=DIR               continue a killed run or sweep from its checkpoints
    --results_dir=DIR          where run directories are created (default results/)
    --tensorboard              also write TensorBoard event files
    --[no]progress             the progress bar
    --figure_formats=png,pdf   the figures' file formats (png, pdf, svg), or none: no
                               figures (draw them later with --exp=figures)
    --cpu_devices=N            CPU devices the run axis is sharded over (default: one
                               per physical core)
    --compilation_cache=DIR    where compiled programs are kept across runs (default
                               ~/.cache/qkvjax/jax; 'off' to disable)
    --coordinator_address=HOST:PORT --num_processes=N --process_id=I
                               start one process of a multi-process run

Bad input exits with code 2 and a one-line error, before anything is written;
a run that cannot go on (a full disk) exits with 1; Ctrl-C with 130 and
SIGTERM with 143, leaving the run marked interrupted and saying how to resume.
"""

from __future__ import annotations

import functools
import importlib
import sys

from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("exp", "specialization", "Experiment: the name of a module in configs/.")
flags.DEFINE_string("config", None, "A variant of the experiment's config, its "
                    "get_config(ARG): tiny (the experiment shrunk to seconds).")
flags.DEFINE_string("results_dir", "results", "Where run directories are created.")
flags.DEFINE_bool("progress", True, "Show a progress bar while training.")
flags.DEFINE_string("resume", None, "A run or sweep directory to continue.")
flags.DEFINE_bool("sweep", False, "Sweep the grid of the config's get_sweep().")
flags.DEFINE_bool("tensorboard", False, "Also write TensorBoard event files.")
flags.DEFINE_string("coordinator_address", None, "Multi-process: process 0's host:port.")
flags.DEFINE_integer("num_processes", None, "Multi-process: how many processes.")
flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.")
flags.DEFINE_string("compilation_cache", None, "Persistent compilation cache directory "
                    "(default $QKVJAX_CACHE_DIR or ~/.cache/qkvjax/jax; 'off' to disable).")
flags.DEFINE_string("figure_formats", "png,pdf", "Comma-separated figure formats among "
                    "png, pdf, svg, or 'none' (draw them later with --exp=figures).")
flags.DEFINE_integer("cpu_devices", None, "CPU devices (default: one per physical core, or "
                     "$QKVJAX_CPU_DEVICES; $JAX_NUM_CPU_DEVICES wins).")

ACCEPTED = ("accepted: --exp=NAME, --config=tiny, --config.FIELD=VALUE, --sweep.FIELD=V1,V2, --sweep, "
            "--resume=DIR, --results_dir=DIR, --tensorboard, --[no]progress, "
            "--figure_formats=png,pdf")


def entry(exp: str):
  """``(check, run, study)`` of ``--exp=exp``: its ``qkvjax.studies.<exp>.STUDY``
  run by the study framework, or the own ``check`` and ``run`` of a module
  without one (a command, ``qkvjax.commands.<exp>``)."""
  from qkvjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from qkvjax import registry  # pylint: disable=g-import-not-at-top
  from qkvjax import study as study_lib  # pylint: disable=g-import-not-at-top
  names = registry.available_experiments()
  if exp not in names:
    raise config_lib.ConfigError(
        f"unknown experiment {exp!r}; accepted: {', '.join(names)}")
  module = registry.experiment_module(exp)
  if hasattr(module, "STUDY"):
    return (functools.partial(study_lib.check, module.STUDY),
            functools.partial(study_lib.run, module.STUDY), module.STUDY)
  return module.check, module.run, None


def _grid(exp, config, sweeps, study):
  """The sweep grid from ``--sweep.FIELD`` flags or ``get_sweep()``, or None."""
  from qkvjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from qkvjax import sweep  # pylint: disable=g-import-not-at-top
  if not sweeps and not FLAGS.sweep:
    return None
  if study is None:
    raise config_lib.ConfigError(f"--sweep needs a training experiment; {exp!r} does not "
                                 "train")
  if sweeps:
    return sweep.parse(config, sweeps)
  module = importlib.import_module(f"configs.{exp}")
  if not hasattr(module, "get_sweep"):
    raise config_lib.ConfigError(f"--sweep: configs/{exp}.py defines no get_sweep(); "
                                 "accepted: --sweep.FIELD=V1,V2,... flags")
  grid = dict(module.get_sweep())
  sweep.validate(config, grid)
  return grid


def main(argv: list[str]) -> int:
  from qkvjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from qkvjax import registry  # pylint: disable=g-import-not-at-top
  from qkvjax import results  # pylint: disable=g-import-not-at-top
  try:
    rest, overrides = config_lib.split_override_args(argv)
    rest, sweeps = config_lib.split_override_args(rest, "--sweep.")
    if any(a in ("--help", "-h", "--helpfull") for a in rest[1:]):
      print(f"{__doc__}\nexperiments: {', '.join(registry.available_experiments())}")
      return 0
    try:
      FLAGS.unparse_flags()  # main() may be called more than once (tests)
      positional = FLAGS(rest)[1:]
    except flags.Error as e:
      raise config_lib.ConfigError(str(e).splitlines()[0]) from None
    if positional:
      raise config_lib.ConfigError(f"unexpected argument {positional[0]!r}; {ACCEPTED}")
    _resolve_paths(overrides)
    if FLAGS.cpu_devices is not None and FLAGS.cpu_devices < 1:
      raise config_lib.ConfigError(f"--cpu_devices={FLAGS.cpu_devices} is out of range; "
                                   "accepted: an integer >= 1")
    from qkvjax import plotting  # pylint: disable=g-import-not-at-top
    plotting.set_formats(FLAGS.figure_formats)
    from qkvjax import distributed  # pylint: disable=g-import-not-at-top
    distributed.configure_cpu_devices(FLAGS.cpu_devices)
    _start_processes()
    from qkvjax import train  # pylint: disable=g-import-not-at-top
    train.enable_compilation_cache(FLAGS.compilation_cache)
    from qkvjax import study as study_lib  # pylint: disable=g-import-not-at-top
    if FLAGS.resume:
      if FLAGS["exp"].present:
        _same_experiment(FLAGS.resume, FLAGS.exp)
      if FLAGS.config is not None:
        raise config_lib.ConfigError(f"--config={FLAGS.config!r}: --resume takes the "
                                     "variant its run was started with; accepted: "
                                     "--resume=DIR without --config=")
      if sweeps or FLAGS.sweep:
        raise config_lib.ConfigError("--resume takes its grid from the sweep directory; "
                                     "accepted: --resume=DIR without --sweep flags")
      if FLAGS.tensorboard:
        from qkvjax import loggers  # pylint: disable=g-import-not-at-top
        loggers.check_tensorboard()
      done = study_lib.resume(FLAGS.resume, overrides, FLAGS.progress, FLAGS.tensorboard)
      if done is None:
        print(f"{FLAGS.resume} is already complete; nothing to resume")
        return 0
      return _report(done)
    check, run, study = entry(FLAGS.exp)
    config = config_lib.apply_overrides(registry.load_config(FLAGS.exp, FLAGS.config),
                                        overrides, FLAGS.exp)
    grid = _grid(FLAGS.exp, config, sweeps, study)
    if FLAGS.tensorboard:
      from qkvjax import loggers  # pylint: disable=g-import-not-at-top
      loggers.check_tensorboard()
    if grid is None:
      check(config, FLAGS.results_dir)
    else:
      from qkvjax import sweep  # pylint: disable=g-import-not-at-top
      for point in sweep.points(grid):
        check(config_lib.apply_overrides(config, point), FLAGS.results_dir)
  except config_lib.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  try:
    if grid is not None:
      out = study_lib.run_sweep(study, config, grid, FLAGS.results_dir, FLAGS.progress,
                                FLAGS.tensorboard, variant=FLAGS.config)
    elif study is not None:
      out = run(config, FLAGS.results_dir, progress=FLAGS.progress,
                tensorboard=FLAGS.tensorboard, variant=FLAGS.config)
    else:
      out = run(config, FLAGS.results_dir, progress=FLAGS.progress)
  except config_lib.ConfigError as e:  # found only once the run is planned
    print(f"error: {e}", file=sys.stderr)
    return 2
  except results.RunError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:  # in-process (tests): the runner has marked the run
    return 130
  return _report(out)


# Run directories (--results_dir, --resume, --config.run_dir) are resolved by
# qkvjax.rundir.RunDir, once. Other paths are resolved here, against the
# current directory: the compilation cache, and a checkpoint to analyse, which
# config.json records.
PATH_FIELDS = ("checkpoint",)


def _resolve_paths(overrides: dict[str, str]) -> None:
  import pathlib  # pylint: disable=g-import-not-at-top
  from qkvjax import config as config_lib  # pylint: disable=g-import-not-at-top
  for name in ("results_dir", "resume", "compilation_cache"):
    value = FLAGS[name].value
    if value is None or (name == "compilation_cache" and value == "off"):
      continue
    if not value.strip():
      raise config_lib.ConfigError(f"--{name}={value!r} is empty; accepted: a directory path"
                                   + (" or 'off'" if name == "compilation_cache" else ""))
    if name == "compilation_cache":
      FLAGS[name].value = str(pathlib.Path(value).expanduser().absolute())
  for field in PATH_FIELDS:
    value = overrides.get(field)
    # A checkpoint may also name an installed package or a hub id: only an
    # existing relative path is made absolute.
    if value and pathlib.Path(value).expanduser().exists():
      overrides[field] = str(pathlib.Path(value).expanduser().absolute())


def _same_experiment(target: str, exp: str) -> None:
  """--resume with an --exp that differs from the run's: refused."""
  import json  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  from qkvjax import config as config_lib  # pylint: disable=g-import-not-at-top
  for name in ("sweep.json", "config.json"):
    path = pathlib.Path(target) / name
    try:
      saved = json.loads(path.read_text()).get("experiment")
    except (OSError, ValueError, AttributeError):
      continue
    if saved != exp:
      raise config_lib.ConfigError(
          f"--exp={exp!r} differs from the experiment {target} ran ({saved!r}); accepted: "
          f"--resume=DIR alone, or with --exp={saved}")
    return


def _start_processes() -> None:
  """Joins a multi-process run when flags or a cluster launcher ask for one."""
  from qkvjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from qkvjax import distributed  # pylint: disable=g-import-not-at-top
  by_flags = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
  if any(v is not None for v in by_flags):
    if any(v is None for v in by_flags):
      raise config_lib.ConfigError(
          "--coordinator_address, --num_processes and --process_id go together; accepted: "
          "all three, or none (a single process, or a cluster launcher's environment)")
    if not 0 <= FLAGS.process_id < FLAGS.num_processes:
      raise config_lib.ConfigError(f"--process_id={FLAGS.process_id} is out of range; "
                                   f"accepted: 0..{FLAGS.num_processes - 1}")
    distributed.initialize(*by_flags)
  elif distributed.launched_on_cluster():
    distributed.initialize()


def _report(out) -> int:
  from qkvjax import distributed  # pylint: disable=g-import-not-at-top
  if distributed.is_writer():
    print(f"wrote {out}")
    report = out / "report.md"
    if report.exists():
      print(f"report: {report}")
  return 0


if __name__ == "__main__":
  from qkvjax import interrupts as _interrupts  # before JAX starts any thread
  _interrupts.install()
  sys.exit(main(sys.argv))
