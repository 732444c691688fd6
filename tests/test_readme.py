"""The README's two opening commands stay true."""

import re

from tests.conftest import ROOT


def _readme_commands():
  return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)


def test_ci_runs_exactly_the_readme_test_command():
  install_and_run, test = _readme_commands()[:2]
  assert "python -m experiments.run --exp=specialization" in install_and_run
  assert "pytest" in test
  ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
  assert test in ci_lines


def _run_readme_command(cwd, extra, timeout=300):
  """The README's first command's experiment, as typed there (``python -m
  experiments.run ...``), run by this interpreter in ``cwd`` with ``extra``."""
  import os  # pylint: disable=g-import-not-at-top
  import shlex  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  command = _readme_commands()[0].split("&&")[-1].strip()
  words = shlex.split(command)
  assert words[:3] == ["python", "-m", "experiments.run"], command
  proc = subprocess.run([sys.executable] + words[1:] + extra, cwd=cwd, capture_output=True,
                        text=True, timeout=timeout,
                        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_the_readme_first_command_runs_from_a_scratch_directory(tmp_path, monkeypatch, capsys):
  """Shrunk, with no --results_dir: relative default paths all the way down
  (Orbax refuses relative checkpoint paths); then every path flag given
  relative: --results_dir, --compilation_cache, --config.run_dir, --resume."""
  import json  # pylint: disable=g-import-not-at-top
  from tests.test_cli import PROMISED, TINY  # pylint: disable=g-import-not-at-top
  tiny = TINY + ["--config.checkpoint_every=1", "--figure_formats=png"]
  _run_readme_command(tmp_path, tiny)
  (run_dir,) = (tmp_path / "results" / "specialization").iterdir()
  for name in PROMISED:  # PDF is checked by tests/test_cli.py
    assert (run_dir / name).is_file() or name.endswith(".pdf"), name
  saved = json.loads((run_dir / "config.json").read_text())
  assert saved["status"] == "complete" and saved["run_dir"] == str(run_dir)
  assert list((run_dir / "checkpoints").glob("*/4"))

  _run_readme_command(tmp_path, tiny + ["--results_dir=rel/out", "--compilation_cache=cache"])
  (second,) = (tmp_path / "rel" / "out" / "specialization").iterdir()
  assert json.loads((second / "config.json").read_text())["status"] == "complete"
  assert list((tmp_path / "cache").iterdir())  # compiled programs were cached there

  # Redraw and resume through relative paths, in this process (same entry point).
  from experiments import run as run_cli  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  relative = str(second.relative_to(tmp_path))
  (second / "loss_accuracy.png").unlink()
  assert run_cli.main(["run", "--exp=figures", f"--config.run_dir={relative}",
                       "--figure_formats=png"]) == 0
  assert (second / "loss_accuracy.png").is_file()

  # A run marked interrupted resumes from its last checkpoint through a relative path.
  metrics = (second / "metrics.jsonl").read_text()
  saved = json.loads((second / "config.json").read_text())
  (second / "config.json").write_text(json.dumps({**saved, "status": "interrupted"}))
  assert run_cli.main(["run", f"--resume={relative}", "--noprogress",
                       "--figure_formats=png"]) == 0
  assert f"wrote {second}" in capsys.readouterr().out
  assert json.loads((second / "config.json").read_text())["status"] == "complete"
  assert (second / "metrics.jsonl").read_text() == metrics
