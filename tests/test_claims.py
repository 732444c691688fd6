"""The combined claims report, from experiment summaries."""

import json

import ml_collections
import pytest

from qkvjax import report
from qkvjax import results
from qkvjax import stats
from qkvjax.config import ConfigError
from qkvjax.commands import claims


def _fake_run(tmp_path, name, claim_values):
  run_dir = tmp_path / name / "r1"
  run_dir.mkdir(parents=True)
  (run_dir / "fig.png").write_bytes(b"png")
  entries = [{"claim": f"{name} claim {i}", "quote": "q", "source": "qkvjax",
              "measured": "m", **stats.evaluate(v, stats.Greater())}
             for i, v in enumerate(claim_values)]
  stats.correct(entries)
  results.write_json(run_dir / "summary.json", {"claims": entries})
  return str(run_dir)


def test_combined_report_corrects_across_the_whole_table(tmp_path):
  strong, weak = [1.0, 1.2, 0.9, 1.1], [0.2, 0.8, 0.4, 0.6]  # weak: p = 0.03
  runs = {"specialization": _fake_run(tmp_path, "specialization", [strong, weak]),
          "tied": _fake_run(tmp_path, "tied", [[0.1, -0.2, 0.05]] + [strong] * 6)}
  out = tmp_path / "claims" / "c1"
  out.mkdir(parents=True)
  results.write_json(out / "runs.json", runs)
  claims.finish(out)
  summary = json.loads((out / "summary.json").read_text())
  assert [c["experiment"] for c in summary["claims"]] == ["specialization"] * 2 + ["tied"] * 7
  assert summary["verdict_counts"] == {"supported": 8, "inconclusive": 1}
  weak_entry = summary["claims"][1]
  # Significant within its own run of 2 claims, not across a table of 9.
  assert weak_entry["verdict"] == "supported" and weak_entry["corrected_in_run"] == "supported"
  assert weak_entry["corrected_verdict"] == "inconclusive"
  text = (out / "report.md").read_text()
  assert "| specialization claim 0 | [specialization](../../specialization/r1/report.md) |" in text
  assert "**inconclusive**" in text and "| 4 |" in text
  assert "[fig](../../tied/r1/fig.png)" in text


@pytest.mark.parametrize("value", [(), ("specialization", "nope"), ("claims",)])
def test_bad_experiment_list_is_rejected(value):
  with pytest.raises(ConfigError, match="accepted: distinct comma-separated names from"):
    claims.experiment_names(ml_collections.ConfigDict({"experiments": value}))


def test_diverged_lines_per_condition():
  assert report.diverged_lines({"qk": [], "none": []}) == [
      "No seed diverged or became unstable.", ""]
  per = report.diverged_lines({"qk": [{"seed": 1, "step": 3}], "none": []})[0]
  assert per.endswith("qk: seed 1 at step 3") and "none" not in per
