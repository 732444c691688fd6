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
