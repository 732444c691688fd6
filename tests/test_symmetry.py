"""The text task (both objectives) and --exp=symmetry end to end."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import run as run_cli
from qkvjax import registry
from qkvjax import results
from qkvjax import study
from qkvjax import tasks
from qkvjax.studies import symmetry
from qkvjax.tasks import text


def _task(objective, vocab_size=64, seq_len=16, mask_rate=0.25):
  cfg = ml_collections.ConfigDict(dict(vocab_size=vocab_size, seq_len=seq_len,
                                       mask_rate=mask_rate))
  return text.make_text_task(cfg, objective)


def test_the_corpus_is_prose_and_the_vocabulary_its_most_frequent_tokens():
  toks = text.corpus_tokens()
  assert len(toks) > 30_000 and ">>>" not in toks and "::=" not in toks
  task = _task("causal")
  assert task.vocab[:3] == ("the", ".", ",") and task.vocab[-2:] == (text.UNK, text.MASK)
  counts = np.bincount(task.stream, minlength=task.vocab_size)
  assert np.all(np.diff(counts[:-2]) <= 0)  # most frequent first
  assert counts[-1] == 0  # <mask> never occurs in the text itself
  words = [task.vocab[i] for i in task.stream[:200]]
  assert words.count("the") > 5


def test_causal_targets_are_the_next_tokens():
  task = _task("causal")
  b = task.sample(jax.random.PRNGKey(0), 8)
  np.testing.assert_array_equal(b.target_BxT[:, :-1], b.tokens_BxT[:, 1:])
  assert float(b.weight_BxT.min()) == 1.0


def test_masked_batches_follow_bert_recipe():
  task = _task("masked")
  b = task.sample(jax.random.PRNGKey(1), 4000)
  chosen = np.asarray(b.weight_BxT) > 0
  np.testing.assert_array_equal(chosen.sum(1), task.n_masked())  # exactly 4 of 16 per row
  tok, tgt = np.asarray(b.tokens_BxT), np.asarray(b.target_BxT)
  np.testing.assert_array_equal(tok[~chosen], tgt[~chosen])
  masked = np.mean(tok[chosen] == task.mask_id)
  kept = np.mean(tok[chosen] == tgt[chosen])
  assert abs(masked - 0.8) < 0.02 and abs(kept - (0.1 + 0.1 / 64)) < 0.02
  # Positions are chosen uniformly: each is chosen a quarter of the time.
  np.testing.assert_allclose(chosen.mean(0), 0.25, atol=0.03)


def test_loss_scores_only_the_chosen_positions():
  task = _task("masked")
  b = task.sample(jax.random.PRNGKey(2), 16)
  right = jax.nn.one_hot(b.target_BxT, task.vocab_size) * 20
  wrong_elsewhere = jnp.where(b.weight_BxT[..., None] > 0, right, -right)
  loss, m = task.loss(wrong_elsewhere, b)
  assert float(m["accuracy"]) == 1.0 and float(loss) < 1e-3


def test_the_unigram_baseline_is_the_loss_of_token_frequencies():
  task = _task("causal", seq_len=64)
  p = np.bincount(task.stream, minlength=task.vocab_size) / task.stream.size
  logits = jnp.log(jnp.asarray(p) + 1e-30)
  b = task.sample(jax.random.PRNGKey(3), 512)
  loss, _ = task.loss(jnp.broadcast_to(logits, b.target_BxT.shape + logits.shape), b)
  np.testing.assert_allclose(float(loss), task.unigram_entropy(), atol=0.1)


def test_conditions_are_two_programs_with_their_own_task_and_mask():
  cfg = registry.load_config("symmetry")
  progs = study.programs(symmetry.STUDY, cfg)
  assert sorted((p.task, p.config.model.causal) for p in progs) == [
      ("causal_text", True), ("masked_text", False)]
  assert set(tasks.BUILDERS) >= {"causal_text", "masked_text"}


def test_end_to_end(tiny_run):
  run_dir = tiny_run("symmetry")
  summary = json.loads((run_dir / "summary.json").read_text())
  names = [c["claim"] for c in summary["claims"]]
  assert len(names) == 6 and "the bidirectional model ends more symmetric than the causal one" \
      in names
  for f in ("curves.png", "final_scores.png", "heads.png"):
    assert (run_dir / f).is_file()
  run = results.Run(run_dir)
  # Seed i starts from the same weights under both objectives.
  for key in ("symmetry/L0", "directionality/L1/H1"):
    np.testing.assert_array_equal(run.initial(key, condition="masked"),
                                  run.initial(key, condition="causal"))
  report = (run_dir / "report.md").read_text()
  assert "## Beside the published values" in report and "| gpt2 | causal | 0.15 |" in report
  task_json = json.loads((run_dir / "task.json").read_text())
  assert task_json["masked_text"]["objective"] == "masked"
  assert "Python Software Foundation" in task_json["causal_text"]["source"]


@pytest.mark.parametrize("bad", ["--config.task.vocab_size=4", "--config.task.mask_rate=0",
                                 "--config.task.seq_len=1", "--config.num_seeds=1",
                                 "--config.task.vocab_size=100000"])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, bad):
  assert run_cli.main(["run", "--exp=symmetry", f"--results_dir={tmp_path}", bad]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and bad.split("=")[0][2:] in err
  assert not (tmp_path / "symmetry").exists()
