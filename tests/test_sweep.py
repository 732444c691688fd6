"""Sweeps: the grid, folded programs, the layout and combined report, bad
input; interrupting and resuming a run reproduces its metrics line for line;
trained parameters load back."""

import json

import jax
import numpy as np
import pytest

import qkvjax
from experiments import run as run_cli
from qkvjax import checkpoints
from qkvjax import config as config_lib
from qkvjax import registry
from qkvjax import results
from qkvjax import runner
from qkvjax import sweep
from qkvjax.studies import specialization
from tests.conftest import copy_run

TINY = ["--config.num_seeds=2", "--config.steps=4", "--config.log_every=2",
        "--config.batch_size=8", "--config.model.d_model=16", "--config.model.n_heads=2",
        "--config.model.d_head=8", "--config.model.d_mlp=16", "--config.task.n_slots=3",
        "--config.task.n_categories=3", "--config.task.nouns_per_category=3",
        "--config.task.n_details=3", "--noprogress"]


def test_grid_and_folding():
  cfg = registry.load_config("specialization")
  grid = sweep.parse(cfg, {"optim.learning_rate": "1e-3,3e-3", "model.n_heads": "2,4"})
  assert grid == {"optim.learning_rate": (1e-3, 3e-3), "model.n_heads": (2, 4)}
  points = sweep.points(grid)
  assert len(points) == 4 and points[1] == {"optim.learning_rate": 1e-3, "model.n_heads": 4}
  programs = runner.plan(specialization.STUDY,
                         [config_lib.apply_overrides(cfg, p) for p in points])
  # learning rates fold into one program per head count.
  assert [[m.unit for m in p.members] for p in programs] == [[0, 2], [1, 3]]
  assert [p.points[1]["optim.learning_rate"] for p in programs] == [3e-3, 3e-3]


def test_sweep_writes_its_layout_and_a_combined_report(tmp_path):
  argv = ["run", "--exp=specialization", f"--results_dir={tmp_path}",
          "--sweep.optim.learning_rate=1e-3,3e-3", "--sweep.model.n_heads=2,4",
          "--figure_formats=none"] + TINY  # the redraw below draws every point's figures
  assert run_cli.main(argv) == 0
  (sweep_dir,) = (tmp_path / "specialization").iterdir()
  manifest = json.loads((sweep_dir / "sweep.json").read_text())
  assert manifest["grid"] == {"optim.learning_rate": [1e-3, 3e-3], "model.n_heads": [2, 4]}
  assert [p["status"] for p in manifest["points"]] == ["complete"] * 4
  for p in manifest["points"]:
    point = sweep_dir / p["dir"]
    for name in ("config.json", "metrics.jsonl", "summary.json", "report.md"):
      assert (point / name).is_file(), (p["dir"], name)
    saved = json.loads((point / "config.json").read_text())
    assert saved["config"]["optim"]["learning_rate"] == p["overrides"]["optim.learning_rate"]
    assert saved["config"]["model"]["n_heads"] == p["overrides"]["model.n_heads"]
  summary = json.loads((sweep_dir / "summary.json").read_text())
  assert len(summary["claims"]) == 4 * 10
  assert all(c["corrected_verdict"] in ("supported", "negligible", "not supported",
                                        "inconclusive") for c in summary["claims"])
  text = (sweep_dir / "report.md").read_text()
  assert "| learning_rate | n_heads |" in text and "000_learning_rate=0.001,n_heads=2" in text
  # Redrawing a sweep draws every point's figures and the combined report's.
  assert not list(sweep_dir.rglob("*.png"))
  assert run_cli.main(["run", "--exp=figures", f"--config.run_dir={sweep_dir}",
                       "--figure_formats=png"]) == 0
  assert (sweep_dir / "effects_vs_sweep.png").is_file()
  for p in manifest["points"]:
    assert (sweep_dir / p["dir"] / "grad_norms.png").is_file(), p["dir"]


@pytest.mark.parametrize("args,expected", [
    (["--sweep.optim.nope=1,2"], "unknown config field 'optim.nope'"),
    (["--sweep.optim.learning_rate="], "empty item"),
    (["--sweep.optim.learning_rate=1e-3,1e-3"], "repeats a value"),
    (["--sweep.model.n_heads=2,x"], "is not an integer"),
    (["--sweep.model=1,2"], "is a group"),
    (["--exp=claims", "--sweep.experiments=a,b"], "does not train"),
    (["--exp=figures", "--sweep.run_dir=a,b"], "does not train"),
    (["--exp=tied", "--sweep"], "defines no get_sweep()"),
    (["--sweep.model.n_heads=2,0"], "config.model.n_heads=0 is out of range"),
    (["--resume=/nonexistent/dir"], "is not a run or sweep directory"),
    (["--process_id=1"], "go together"),
])
def test_bad_sweep_and_resume_input_is_one_line_exit_2(tmp_path, capsys, args, expected):
  out = tmp_path / "results"
  assert run_cli.main(["run", f"--results_dir={out}"] + args) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
  assert not out.exists()


def _interrupt_after(monkeypatch, writes: int):
  """Ctrl-C (KeyboardInterrupt) after ``writes`` metrics writes."""
  real = results.MetricsWriter.write
  count = {"n": 0}

  def write(self, *a, **k):
    if count["n"] == writes:
      raise KeyboardInterrupt
    count["n"] += 1
    return real(self, *a, **k)
  monkeypatch.setattr(results.MetricsWriter, "write", write)


def test_an_interrupted_run_resumes_to_the_same_metrics_line_for_line(tmp_path, monkeypatch,
                                                                       capsys):
  args = [a for a in TINY if "steps" not in a and "log_every" not in a] + [
      "--config.steps=12", "--config.log_every=2", "--config.checkpoint_every=2",
      "--figure_formats=none"]  # figures are tested elsewhere; the redraw below draws them
  assert run_cli.main(["run", f"--results_dir={tmp_path}/full"] + args) == 0
  (full,) = (tmp_path / "full" / "specialization").iterdir()
  _interrupt_after(monkeypatch, 4)
  assert run_cli.main(["run", f"--results_dir={tmp_path}/cut"] + args) == 130
  monkeypatch.undo()
  (cut,) = (tmp_path / "cut" / "specialization").iterdir()
  assert "--resume=" in capsys.readouterr().err
  assert json.loads((cut / "config.json").read_text())["status"] == "interrupted"
  assert checkpoints.steps(cut, ["default"]) == [4, 8]  # saved after steps 4 and 8
  assert len((cut / "metrics.jsonl").read_text().splitlines()) == 4 * 2
  # The incomplete run redraws, marked as such.
  assert run_cli.main(["run", "--exp=figures", f"--config.run_dir={cut}"]) == 0
  assert "INCOMPLETE RUN (interrupted)" in (cut / "report.md").read_text()
  # A different config is refused; then the resume reproduces every line.
  assert run_cli.main(["run", f"--resume={cut}", "--config.num_seeds=3"]) == 2
  assert "differs from the config" in capsys.readouterr().err
  assert run_cli.main(["run", f"--resume={cut}", "--noprogress", "--figure_formats=none"]) == 0
  assert (cut / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()
  assert json.loads((cut / "config.json").read_text())["status"] == "complete"
  assert checkpoints.steps(cut, ["default"]) == [8, 12]  # the last two kept
  # Resuming a complete run writes nothing.
  before = sorted(p.stat().st_mtime_ns for p in cut.rglob("*") if p.is_file())
  assert run_cli.main(["run", f"--resume={cut}"]) == 0
  assert "already complete" in capsys.readouterr().out
  assert sorted(p.stat().st_mtime_ns for p in cut.rglob("*") if p.is_file()) == before


def test_trained_parameters_load_back(tiny_run, tmp_path):
  run_dir = copy_run(tiny_run("specialization"), tmp_path)  # a checkpoint is added below
  params = qkvjax.load_run_params(run_dir)
  w_q = params["default"]["layers"][0]["attn"]["query"][...]
  assert w_q.shape == (2, 16, 2, 8)
  model = qkvjax.load_run_model(run_dir, seed=1)
  np.testing.assert_array_equal(model.layers[0].attn.query[...], w_q[1])
  tokens = jax.numpy.zeros((1, 4), jax.numpy.int32)
  assert model(tokens).shape[-1] == len(json.loads((run_dir / "task.json").read_text())
                                        ["selection"]["vocab"])
  with pytest.raises(config_lib.ConfigError, match="no checkpoint at step 3"):
    qkvjax.load_run_params(run_dir, step=3)
  _checkpoint_opens_with_orbax_alone_and_the_old_layout_loads(run_dir, w_q)


def _checkpoint_opens_with_orbax_alone_and_the_old_layout_loads(run_dir, w_q):
  """Saved by parameter path: Orbax alone reads ``params/layers/0/attn/query``.
  A checkpoint of the earlier layout (leaves flat by position) still loads."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  (program_dir,) = (run_dir / "checkpoints").iterdir()
  got = ocp.StandardCheckpointer().restore(program_dir / "4" / "default")
  np.testing.assert_array_equal(got["params"]["layers"]["0"]["attn"]["query"], w_q)
  # (model_rest, the model's non-parameter state, has no leaf in this model)
  assert set(got) == {"params", "opt_state", "init_params", "step", "data_key", "diverged",
                      "diverged_step"}
  np.testing.assert_array_equal(got["step"], [4, 4])
  # The same state in the earlier layout, saved at another step, restores equal.
  mngr = checkpoints._manager(program_dir)  # pylint: disable=protected-access
  leaves_in_order = checkpoints.restore(run_dir, ["default"], 4, like=_abstract(run_dir))
  legacy = {f"{i:05d}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(leaves_in_order))}
  mngr.save(6, args=ocp.args.StandardSave(legacy))
  mngr.wait_until_finished()
  mngr.close()
  old = checkpoints.restore(run_dir, ["default"], 6, like=_abstract(run_dir))
  jax.tree.map(np.testing.assert_array_equal, old, leaves_in_order)


def _abstract(run_dir):
  """The abstract train state of a tiny specialization run's one program."""
  from qkvjax import tasks, train  # pylint: disable=g-import-not-at-top
  saved = results.read_json(run_dir / "config.json")
  cfg = registry.from_saved("specialization", saved["config"])
  trainer = train.Trainer(cfg, tasks.make("selection", cfg), [{}], (),
                          specialization.STUDY.model_fn)
  return jax.eval_shape(trainer.init, jax.ShapeDtypeStruct((trainer.padded_runs, 2), np.uint32),
                        {})


def test_the_sweep_figure_lays_itself_out_for_a_reader():
  """Claim names whole as row titles, a log axis for log-spaced values, and
  no two pieces of text overlapping (matplotlib's own text boxes)."""
  grid = {"optim.learning_rate": [3e-4, 1e-3, 3e-3], "model.n_heads": [2, 4]}
  long = ["W_Q, W_K, W_V differentiate during training, measured in every layer",
          "Q seeks the feature K advertises (verb's query finds the selected noun)",
          "V stays closest to the token's embedding (layer 1)"]
  claims = [{"claim": name, "values": {"optim.learning_rate": lr, "model.n_heads": h},
             "effect": {"mean": 0.1 * i, "ci95": [0.0, 0.2 * i + 0.01], "n": 8}}
            for i, name in enumerate(long) for lr in grid["optim.learning_rate"]
            for h in grid["model.n_heads"]]
  fig = sweep.effect_figure({"grid": grid, "claims": claims})
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  axes = fig.axes
  assert [ax.get_xscale() for ax in axes[:2]] == ["log", "linear"]
  titles = [ax.get_title(loc="left").replace("\n", " ") for ax in axes[::2]]
  assert titles == long
  from matplotlib.text import Text  # pylint: disable=g-import-not-at-top
  texts = list({id(t): t for t in fig.findobj(Text) if t.get_visible()
                and t.get_text().strip()}.values())
  boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
  boxes = [(s, b) for s, b in boxes if b.width > 0 and b.height > 0]
  assert len(boxes) > 20
  for i, (a, box_a) in enumerate(boxes):
    for b, box_b in boxes[i + 1:]:
      assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"
  plotting_close(fig)


def plotting_close(fig):
  from qkvjax import plotting  # pylint: disable=g-import-not-at-top
  plotting.plt.close(fig)
