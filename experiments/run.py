"""Entry point: ``python -m experiments.run --exp=NAME [--config.FIELD=VALUE ...]``.

Thin by design: parse flags, load and check the config, call the library.
Bad input exits with code 2 and a one-line error, before anything is written.
"""

from __future__ import annotations

import sys

from absl import flags

from qkvjax import config as config_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("exp", "specialization", "Experiment: the name of a file in configs/.")
flags.DEFINE_string("results_dir", "results", "Where run directories are created.")
flags.DEFINE_bool("progress", True, "Show a progress bar while training.")


def experiments():
  """Experiment name -> (check(config, results_dir), run(config, results_dir))."""
  from qkvjax import redraw, results, specialization  # pylint: disable=g-import-not-at-top

  def check_training(config, results_dir):
    config_lib.validate_training_config(config)
    results.check_writable(results_dir)

  return {
      "specialization": (check_training, specialization.run),
      "figures": (lambda config, _: redraw.check(config), redraw.run),
  }


def main(argv: list[str]) -> int:
  try:
    rest, overrides = config_lib.split_override_args(argv)
    try:
      FLAGS.unparse_flags()  # main() may be called more than once (tests)
      FLAGS(rest)
    except flags.Error as e:
      raise config_lib.ConfigError(str(e).splitlines()[0]) from None
    registry = experiments()
    if FLAGS.exp not in registry:
      raise config_lib.ConfigError(
          f"unknown experiment {FLAGS.exp!r}; accepted: {', '.join(sorted(registry))}")
    config = config_lib.apply_overrides(config_lib.load_config(FLAGS.exp), overrides,
                                        FLAGS.exp)
    check, run = registry[FLAGS.exp]
    check(config, FLAGS.results_dir)
  except config_lib.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  kwargs = {"progress": FLAGS.progress} if FLAGS.exp != "figures" else {}
  run_dir = run(config, FLAGS.results_dir, **kwargs)
  print(f"wrote {run_dir}")
  report = run_dir / "report.md"
  if report.exists():
    print(f"report: {report}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
