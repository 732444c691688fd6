"""--exp=init_scale: the scales fold into one program, and its claims and
figures come from the saved run."""

import json

from experiments import run as run_cli
from qkvjax import registry
from qkvjax import study
from qkvjax.studies import init_scale
from tests.conftest import tiny_config


def test_scales_fold_into_one_program():
  cfg = tiny_config()
  cfg.scales = (0.1, 0.3, 1.0, 3.0)
  (prog,) = study.programs(init_scale.STUDY, cfg)
  assert prog.conditions == ["scale=0.1", "scale=0.3", "scale=1", "scale=3"]
  assert [p["model.qkv_init_scale"] for p in prog.points] == [0.1, 0.3, 1.0, 3.0]


def test_end_to_end(tiny_run):
  run_dir = tiny_run("init_scale")
  summary = json.loads((run_dir / "summary.json").read_text())
  names = [c["claim"] for c in summary["claims"]]
  scales = registry.load_config("init_scale", "tiny").scales  # a prerequisite per scale
  assert len(names) == len(scales) + 3
  assert "W_Q, W_K, W_V differentiate more when initialized smaller" in names
  assert (run_dir / "versus_scale.png").is_file() and (run_dir / "curves.png").is_file()
  moved = next(c for c in summary["claims"] if "move further" in c["claim"])
  assert moved["effect"]["mean"] > 0  # a smaller init moves further, even in 4 steps


def test_bad_scales_are_rejected(tmp_path, capsys):
  for bad in ("--config.scales=1", "--config.scales=0,1", "--config.scales=1,,3"):
    assert run_cli.main(["run", "--exp=init_scale", f"--results_dir={tmp_path}", bad]) == 2
    assert capsys.readouterr().err.count("\n") == 1
  assert not (tmp_path / "init_scale").exists()
  assert registry.load_config("init_scale").scales == (0.1, 0.3, 1.0, 3.0)
