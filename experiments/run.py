"""Entry point: ``python -m experiments.run --exp=NAME [--config.FIELD=VALUE ...]``.

Thin by design: parse flags, load and check the config, call the library.
Bad input exits with code 2 and a one-line error, before anything is written.
"""

from __future__ import annotations

import functools
import importlib
import sys

from absl import flags

from qkvjax import config as config_lib
from qkvjax import study as study_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("exp", "specialization", "Experiment: the name of a module in configs/.")
flags.DEFINE_string("results_dir", "results", "Where run directories are created.")
flags.DEFINE_bool("progress", True, "Show a progress bar while training.")


def entry(exp: str):
  """``(check, run)`` of ``--exp=exp``: its ``qkvjax.studies.<exp>.STUDY`` run
  by the study framework, or the module's own ``check`` and ``run``."""
  names = config_lib.available_experiments()
  if exp not in names:
    raise config_lib.ConfigError(
        f"unknown experiment {exp!r}; accepted: {', '.join(names)}")
  module = importlib.import_module(f"qkvjax.studies.{exp}")
  if hasattr(module, "STUDY"):
    return (functools.partial(study_lib.check, module.STUDY),
            functools.partial(study_lib.run, module.STUDY))
  return module.check, module.run


def main(argv: list[str]) -> int:
  try:
    rest, overrides = config_lib.split_override_args(argv)
    if any(a in ("--help", "-h", "--helpfull") for a in rest[1:]):
      print(f"{__doc__}\nexperiments: {', '.join(config_lib.available_experiments())}\n"
            f"{FLAGS.module_help(sys.modules[__name__])}")
      return 0
    try:
      FLAGS.unparse_flags()  # main() may be called more than once (tests)
      positional = FLAGS(rest)[1:]
    except flags.Error as e:
      raise config_lib.ConfigError(str(e).splitlines()[0]) from None
    if positional:
      raise config_lib.ConfigError(
          f"unexpected argument {positional[0]!r}; accepted: --exp=NAME, "
          "--results_dir=DIR, --[no]progress and --config.FIELD=VALUE")
    check, run = entry(FLAGS.exp)
    config = config_lib.apply_overrides(config_lib.load_config(FLAGS.exp), overrides,
                                        FLAGS.exp)
    check(config, FLAGS.results_dir)
  except config_lib.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  try:
    run_dir = run(config, FLAGS.results_dir, progress=FLAGS.progress)
  except KeyboardInterrupt:
    print("interrupted: the run directory keeps config.json and every metric logged so "
          "far (redraw with --exp=figures --config.run_dir=DIR)", file=sys.stderr)
    return 130
  print(f"wrote {run_dir}")
  report = run_dir / "report.md"
  if report.exists():
    print(f"report: {report}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
