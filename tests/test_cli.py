"""The command line: an end-to-end tiny run, redrawing, and each bad input."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from experiments import run as run_cli
from qkvjax import bibliography
from qkvjax import stats
from tests.conftest import ROOT

TINY = ["--config.num_seeds=2", "--config.steps=4", "--config.log_every=2",
        "--config.batch_size=8", "--config.model.d_model=16", "--config.model.n_heads=2",
        "--config.model.d_head=8", "--config.model.d_mlp=16", "--config.task.n_slots=3",
        "--config.task.n_categories=3", "--config.task.nouns_per_category=3",
        "--config.task.n_details=3", "--noprogress"]

PROMISED = ["config.json", "task.json", "metrics.jsonl", "summary.json", "report.md",
            "samples.json"] + [f"{name}.{ext}" for name in (
                "grad_norms", "qk_alignment", "embed_similarity", "spectra",
                "attention_map", "loss_accuracy", "eff_rank", "rel_dist_init")
                                        for ext in ("png", "pdf")]


def test_end_to_end_run_writes_every_promised_file_and_redraws(tmp_path, capsys):
  argv = ["run", "--exp=specialization", f"--results_dir={tmp_path}"] + TINY
  assert run_cli.main(argv) == 0
  (run_dir,) = (tmp_path / "specialization").iterdir()
  for name in PROMISED:
    assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
  config = json.loads((run_dir / "config.json").read_text())
  assert config["config"]["steps"] == 4 and config["versions"]["jax"]
  assert config["backend"] == "cpu" and config["devices"] and config["status"] == "complete"
  assert config["versions"]["flax"]
  rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert sorted({(r["step"], r["seed"]) for r in rows}) == [
      (s, i) for s in (0, 2, 4) for i in (0, 1)]
  assert {r["condition"] for r in rows} == {"default"}
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["num_seeds"] == 2 and summary["final_step"] == 4
  for claim in summary["claims"]:
    assert claim["verdict"] in stats.VERDICTS and claim["corrected_verdict"] in stats.VERDICTS
    assert claim["effect"]["n"] == 2 and len(claim["per_seed"]) == 2
    assert claim["source"] in bibliography.SOURCES and 0 <= claim["p_value"] <= 1
  loss = summary["final"]["default"]["loss"]
  assert set(loss) == {"mean", "std", "ci95", "n", "per_seed"}
  report = (run_dir / "report.md").read_text()
  assert "grad_norms.png" in report and "Claims" in report and "| corrected |" in report
  assert "../shared" not in report and "seeds/" not in report

  # Redraw from the saved files alone, after deleting the figures.
  for png in run_dir.glob("*.png"):
    png.unlink()
  summary_before = (run_dir / "summary.json").read_text()
  assert run_cli.main(["run", "--exp=figures", f"--config.run_dir={run_dir}"]) == 0
  assert (run_dir / "grad_norms.png").is_file()
  assert (run_dir / "summary.json").read_text() == summary_before

  # A second run gets its own directory; with --figure_formats=none it draws
  # no figure and its report says how to draw them.
  assert run_cli.main(argv + ["--figure_formats=none"]) == 0
  first, second = sorted((tmp_path / "specialization").iterdir())
  assert first == run_dir
  assert not list(second.glob("*.png")) and not list(second.glob("*.pdf"))
  assert "Not drawn (`--figure_formats=none`)" in (second / "report.md").read_text()


@pytest.mark.parametrize("args,expected", [
    (["--exp=nope"], "unknown experiment 'nope'; accepted: "),
    (["--figure_formats=png,gif"], "unknown format 'gif'; accepted: comma-separated png, pdf"),
    (["--figure_formats=png,,pdf"], "has an empty item"),
    (["--config.nope=1"], "unknown config field 'nope'"),
    (["--config.model.nope=1"], "accepted at model: "),
    (["--config.steps=1.5"], "--config.steps='1.5' is not an integer"),
    (["--config.model.causal=maybe"], "is not a bool"),
    (["--config.optim.learning_rate=abc"], "is not a finite number"),
    (["--config.num_seeds=0"], "config.num_seeds=0 is out of range; accepted: an integer >= 1"),
    (["--config.optim.optimizer=rmsprop"], "accepted: adamw, sgd"),
    (["--config.model.qkv_init=zeros"], "config.model.qkv_init='zeros'"),
    (["--config.task.n_slots=9"], "config.task.n_slots=9 is out of range"),
    (["--config.model.attn_scale=big"], "'inv_sqrt_dk', 'none' or a number in [1e-6, 1e6]"),
    (["--config.steps"], "has no value"),
    (["--bogus_flag=1"], "bogus_flag"),
    (["--config.seed=99999999999999999999"], "config.seed=99999999999999999999 is out of range"),
    (["--config.model.attn_scale=inf"], "a number in [1e-6, 1e6]"),
    (["--config.optim.momentum=5"], "config.optim.momentum=5.0 is out of range"),
    (["--config.num_seeds=100000"], "config.num_seeds=100000 is out of range; accepted: 1..4096"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, expected):
  results = tmp_path / "results"
  code = run_cli.main(["run", f"--results_dir={results}"] + args)
  err = capsys.readouterr().err
  assert code == 2
  assert err.startswith("error: ") and err.count("\n") == 1, err
  assert expected in err, err
  assert not results.exists()


def test_unwritable_results_dir(tmp_path, capsys):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  code = run_cli.main(["run", f"--results_dir={blocker}/sub"])
  err = capsys.readouterr().err
  assert code == 2 and "--results_dir=" in err and err.count("\n") == 1
  assert blocker.read_text() == "not a directory"


def test_results_dir_whose_experiment_folder_is_a_file(tmp_path, capsys):
  (tmp_path / "specialization").write_text("a file")
  code = run_cli.main(["run", f"--results_dir={tmp_path}"])
  err = capsys.readouterr().err
  assert code == 2 and "is not a directory" in err and err.count("\n") == 1
  assert sorted(p.name for p in tmp_path.iterdir()) == ["specialization"]


def test_results_dir_that_cannot_be_created(capsys):
  code = run_cli.main(["run", "--results_dir=/proc/qkvjax_results"])
  err = capsys.readouterr().err
  assert code == 2 and "--results_dir='/proc/qkvjax_results' is not writable" in err


def test_help_prints_usage(capsys):
  assert run_cli.main(["run", "--help"]) == 0
  out = capsys.readouterr().out
  assert "--exp" in out and "specialization" in out


def test_figures_needs_a_run_dir(tmp_path, capsys):
  code = run_cli.main(["run", "--exp=figures", f"--config.run_dir={tmp_path}"])
  assert code == 2 and "is not a run directory" in capsys.readouterr().err
  (tmp_path / "config.json").write_text("{not json")
  (tmp_path / "metrics.jsonl").write_text("")
  code = run_cli.main(["run", "--exp=figures", f"--config.run_dir={tmp_path}"])
  assert code == 2 and "unreadable config.json" in capsys.readouterr().err
  (tmp_path / "config.json").write_text('{"experiment": "specialization"}')
  code = run_cli.main(["run", "--exp=figures", f"--config.run_dir={tmp_path}"])
  assert code == 2 and "no logged metrics yet" in capsys.readouterr().err


def test_real_process_exit_code_and_no_traceback(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.run", "--config.steps=-3",
       f"--results_dir={tmp_path}/r"], cwd=ROOT, capture_output=True, text=True,
      timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines() == [
      "error: config.steps=-3 is out of range; accepted: an integer >= 1"]
  assert not pathlib.Path(f"{tmp_path}/r").exists()


@pytest.mark.parametrize("args,expected", [
    (["--config.model.d_model=1000000", "--config.model.d_mlp=1000000"], "GiB of memory"),
    (["--config.steps=1000000000000"], "GiB of metrics"),
])
def test_configs_that_cannot_fit_are_refused_before_anything_is_written(tmp_path, capsys, args,
                                                                        expected):
  out = tmp_path / "results"
  assert run_cli.main(["run", f"--results_dir={out}"] + args) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: this config") and err.count("\n") == 1 and expected in err
  assert not out.exists()


@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_before_the_first_logging_point_stops_cleanly(tmp_path, sig, code):
  """Ctrl-C or SIGTERM while the first program compiles: the documented exit
  code, no crash, the run marked interrupted and the resume command printed."""
  import signal
  import time
  proc = subprocess.Popen([sys.executable, "-m", "experiments.run", "--noprogress",
                           f"--results_dir={tmp_path}"], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  deadline = time.time() + 120
  while not list(tmp_path.glob("specialization/*/config.json")) and time.time() < deadline:
    time.sleep(0.2)
  time.sleep(1.0)
  proc.send_signal(getattr(signal, sig))
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == code, err[-2000:]
  assert "Segmentation" not in err and "Traceback" not in err
  (run_dir,) = tmp_path.glob("specialization/*")
  assert f"interrupted ({sig})" in err and f"--resume={run_dir}" in err
  assert json.loads((run_dir / "config.json").read_text())["status"] == "interrupted"
