"""Faults a careful user hits: soft inputs refused, failures inside a run
reported in one line with the run marked failed, honest interrupt notes."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from experiments import run as run_cli
from qkvjax import results
from qkvjax import rundir
from tests.conftest import ROOT
from tests.test_cli import TINY


@pytest.mark.parametrize("args,expected", [
    (["--config.checkpoint_every=0"], "config.checkpoint_every=0 is out of range; accepted: "
     "an integer >= 1"),
    (["--config.checkpoint_every=-1"], "config.checkpoint_every=-1 is out of range"),
    (["--config.steps=40", "--config.log_every=100"],
     "config.log_every=100 is out of range; accepted: an integer in 1..40 (config.steps)"),
    (["--sweep.optim.learning_rate=1e-3", "--sweep.optim.learning_rate=3e-3"],
     "--sweep.optim.learning_rate is given twice ('1e-3' and '3e-3'); accepted: each field "
     "once, its values comma-separated"),
    (["--config.steps=4", "--config.steps=5"], "--config.steps is given twice"),
    (["--results_dir="], "--results_dir='' is empty; accepted: a directory path"),
    (["--compilation_cache= "], "--compilation_cache=' ' is empty"),
])
def test_soft_inputs_are_refused_in_one_line(tmp_path, capsys, monkeypatch, args, expected):
  monkeypatch.chdir(tmp_path)
  code = run_cli.main(["run", "--exp=specialization"] + args)
  err = capsys.readouterr().err
  assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
  assert expected in err, err
  assert not list(tmp_path.iterdir())


def test_resume_with_another_experiment_is_refused(tmp_path, capsys):
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  (run_dir / "config.json").write_text(json.dumps({"experiment": "specialization"}))
  code = run_cli.main(["run", "--exp=tied", f"--resume={run_dir}"])
  err = capsys.readouterr().err
  assert code == 2 and err.count("\n") == 1
  assert "--exp='tied' differs from the experiment" in err and "('specialization')" in err
  assert sorted(p.name for p in run_dir.iterdir()) == ["config.json"]


def _fake_units(tmp_path, sweep: bool):
  target = rundir.RunDir(tmp_path / "sweep")
  units = []
  for name in ("000_a", "001_b"):
    (target / name).mkdir(parents=True)
    results.write_json(target / name / "config.json", {"status": "running"})
    units.append(target.point(name))
  if sweep:
    results.write_json(target / "sweep.json", {"points": [
        {"name": u.name, "status": "running"} for u in units]})
  return target, units


def test_interrupt_note_says_no_checkpoint_exists_and_updates_the_sweep(tmp_path, capsys):
  target, units = _fake_units(tmp_path, sweep=True)
  target.interrupted(units, "SIGINT")
  err = capsys.readouterr().err
  assert "no checkpoint yet, so a resume starts from step 0" in err
  assert "last checkpoint" not in err
  points = results.read_json(target / "sweep.json")["points"]
  assert [p["status"] for p in points] == ["interrupted", "interrupted"]


def test_interrupt_note_names_the_last_checkpoint(tmp_path, capsys):
  target, units = _fake_units(tmp_path, sweep=False)
  (units[1] / "checkpoints" / "p0" / "40").mkdir(parents=True)
  (units[1] / "checkpoints" / "p0" / "80.orbax-checkpoint-tmp").mkdir()
  target.interrupted(units, "SIGTERM")
  assert "its last checkpoint (step 40)" in capsys.readouterr().err


def test_a_failure_while_drawing_marks_the_run_failed_in_one_line(tmp_path, capsys,
                                                                   monkeypatch):
  from qkvjax import plotting  # pylint: disable=g-import-not-at-top

  def broken(*args, **kwargs):
    raise RuntimeError("the figure could not be drawn\nsecond line")
  monkeypatch.setattr(plotting, "save", broken)
  code = run_cli.main(["run", "--exp=specialization", f"--results_dir={tmp_path}",
                       "--figure_formats=png"] + TINY)
  err = capsys.readouterr().err
  assert code == 1 and err.count("\n") == 1, err
  (run_dir,) = (tmp_path / "specialization").iterdir()
  assert err.startswith("error: RuntimeError: the figure could not be drawn (traceback in ")
  saved = json.loads((run_dir / "config.json").read_text())
  assert saved["status"] == "failed" and "the figure could not be drawn" in saved["error"]
  assert "Traceback" in (run_dir / "traceback.txt").read_text()
  rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert sorted({r["step"] for r in rows}) == [0, 2, 4]


def _mount_tmpfs(path: pathlib.Path, size: str) -> bool:
  path.mkdir()
  try:
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return False
  return proc.returncode == 0


def test_disk_full_during_a_checkpoint_is_one_line_and_leaves_no_partial_save(tmp_path):
  """A real full disk (a 3 MB tmpfs): the headline model's checkpoints fill it
  within a few logging points."""
  disk = tmp_path / "disk"
  if not _mount_tmpfs(disk, "3m"):
    pytest.skip("cannot mount a tmpfs here (needs root)")
  try:
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.run", "--exp=specialization", "--noprogress",
         "--config.num_seeds=2", "--config.steps=40", "--config.log_every=2",
         "--config.checkpoint_every=1", "--figure_formats=png"],
        cwd=disk, capture_output=True, text=True, timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: could not save the checkpoint of step ")
    assert "(No space left on device)" in line and "is marked failed" in line
    (run_dir,) = (disk / "results" / "specialization").iterdir()
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["status"] == "failed" and "No space left on device" in saved["error"]
    assert not list(run_dir.rglob("*orbax-checkpoint-tmp*"))
    text = (run_dir / "metrics.jsonl").read_text()
    assert text.endswith("\n") and all(json.loads(l) for l in text.splitlines())
  finally:
    subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=10)
