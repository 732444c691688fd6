"""The combined claims report, from experiment summaries."""

import json

import ml_collections
import pytest

from qkvjax import results
from qkvjax import stats
from qkvjax.config import ConfigError
from qkvjax.studies import claims


def _fake_run(tmp_path, name, values, verdict):
  run_dir = tmp_path / name / "r1"
  run_dir.mkdir(parents=True)
  (run_dir / "fig.png").write_bytes(b"png")
  entry = stats.claim(name=f"{name} claim", quote="q", source="s", measured="m",
                      values=values, verdict=verdict)
  results.write_json(run_dir / "summary.json", {"claims": [entry]})
  return str(run_dir)


def test_combined_report_lists_every_claim_with_ci_seeds_and_links(tmp_path):
  runs = {"specialization": _fake_run(tmp_path, "specialization", [1.0, 1.2, 0.9], "supported"),
          "tied": _fake_run(tmp_path, "tied", [0.1, -0.2, 0.05], "inconclusive")}
  out = tmp_path / "claims" / "c1"
  out.mkdir(parents=True)
  results.write_json(out / "runs.json", runs)
  claims.finish(out)
  summary = json.loads((out / "summary.json").read_text())
  assert [c["experiment"] for c in summary["claims"]] == ["specialization", "tied"]
  assert summary["verdict_counts"] == {"supported": 1, "inconclusive": 1}
  text = (out / "report.md").read_text()
  assert "| specialization claim | [specialization](../../specialization/r1/report.md) |" in text
  assert "**inconclusive**" in text and "| 3 |" in text
  assert "[fig](../../tied/r1/fig.png)" in text


@pytest.mark.parametrize("value", ["", "specialization,nope", "claims"])
def test_bad_experiment_list_is_rejected(value):
  with pytest.raises(ConfigError, match="accepted: a comma-separated list of"):
    claims.experiment_names(ml_collections.ConfigDict({"experiments": value}))


def test_diverged_lines_list_and_per_condition():
  from qkvjax import report  # pylint: disable=g-import-not-at-top
  assert report.diverged_lines([]) == ["No seed diverged.", ""]
  assert report.diverged_lines({"qk": [], "none": []}) == ["No seed diverged.", ""]
  one = report.diverged_lines([{"seed": 2, "step": 7}])[0]
  assert one.endswith("seed 2 at step 7")
  per = report.diverged_lines({"qk": [{"seed": 1, "step": 3}], "none": []})[0]
  assert per.endswith("qk: seed 1 at step 3") and "none" not in per
