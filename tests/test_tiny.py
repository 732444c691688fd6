"""Every training experiment's tiny variant (``--config=tiny``), end to end
through the command line: every condition trained, every claim judged,
every figure drawn, the run marked complete."""

import pytest

from experiments import run as run_cli
from qkvjax import registry
from qkvjax import results
from qkvjax import study as study_lib
from tests.conftest import copy_run

# Skipped: claims (runs the others), figures (redraws) and pretrained (no
# training; tests/test_pretrained.py runs it on its fixtures). Each study's
# own tests read these same runs in detail.
TRAINING = ("specialization", "init_scale", "scaling", "tied", "heads", "context",
            "residual", "symmetry", "translation", "induction")


def _check_complete(run_dir, exp):
  saved = results.read_json(run_dir / "config.json")
  assert saved["status"] == "complete" and saved["variant"] == "tiny"
  # registry.from_saved (what --resume uses) rebuilds the variant the run recorded.
  rebuilt = registry.from_saved(exp, saved["config"], saved["variant"])
  assert rebuilt.to_dict() == registry.load_config(exp, "tiny").to_dict()
  study = study_lib.study_of(exp)
  run = results.Run(run_dir)
  tiny = registry.load_config(exp, "tiny")
  assert sorted(run.conditions) == sorted(study.conditions(tiny)), exp
  summary = results.read_json(run_dir / "summary.json")
  assert len(summary["claims"]) == len(study.claims(run)) > 0
  assert (run_dir / "report.md").stat().st_size > 0
  for fig in study.figures(run):
    assert (run_dir / f"{fig.name}.png").stat().st_size > 0, fig.name
  return saved


@pytest.mark.parametrize("exp", TRAINING)
def test_tiny_variant_runs_every_condition_claim_and_figure(tiny_run, exp):
  _check_complete(tiny_run(exp), exp)


def test_a_complete_run_resumes_as_complete_and_an_interrupted_one_line_for_line(
    tiny_run, tmp_path):
  run_dir = copy_run(tiny_run("specialization"), tmp_path)
  saved = results.read_json(run_dir / "config.json")
  assert run_cli.main(["run", f"--resume={run_dir}", "--noprogress"]) == 0  # complete
  metrics = (run_dir / "metrics.jsonl").read_text()
  saved["status"] = "interrupted"
  results.write_json(run_dir / "config.json", saved)
  assert run_cli.main(["run", f"--resume={run_dir}", "--noprogress",
                       "--figure_formats=png"]) == 0
  assert (run_dir / "metrics.jsonl").read_text() == metrics
  (run_dir / "report.md").unlink()
  assert run_cli.main(["run", "--exp=figures", f"--config.run_dir={run_dir}",
                       "--figure_formats=png"]) == 0
  _check_complete(run_dir, "specialization")


@pytest.mark.parametrize("argv,needle", [
    (["--exp=specialization", "--config=huge"],
     "unknown --config='huge' for experiment 'specialization'; accepted: tiny"),
    (["--exp=figures", "--config=tiny"], "experiment 'figures' has no variants"),
])
def test_unknown_variant_is_one_line_exit_2_nothing_written(tmp_path, capsys, argv, needle):
  assert run_cli.main(["run", f"--results_dir={tmp_path}"] + argv) == 2
  err = capsys.readouterr().err
  assert needle in err and err.count("\n") == 1
  assert not any(tmp_path.iterdir())
