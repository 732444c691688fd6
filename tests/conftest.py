"""Shared fixtures: tiny configs so the whole suite runs in minutes on 2 cores."""

import os
import pathlib
import shutil
import sys
import tempfile

# Tests compile many small programs, and compiling is most of their time:
# XLA's backend optimizations cost more than they save at these sizes (init
# 4.9 s -> 1.3 s measured), and its CPU fusion emitters compile the tiny
# variant's training chunk and measurement about twice as slowly as the
# classic emitters. Set before JAX starts its backend; subprocesses inherit it.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_backend_optimization_level=0"
                           " --xla_cpu_use_fusion_emitters=false").strip()
# In-process tests keep one CPU device (the command line's default is one per
# core); tests of several devices start their own processes.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "1")
# One compilation cache for the whole session, in a temporary directory that
# pytest's xdist workers and every subprocess inherit through the environment:
# a program that several tests compile is compiled once. The process that
# made it removes it at the end (pytest_unconfigure).
if not os.environ.get("QKVJAX_TEST_CACHE"):
  os.environ["QKVJAX_TEST_CACHE"] = tempfile.mkdtemp(prefix="qkvjax-test-cache-")
  _OWN_CACHE = True
else:
  _OWN_CACHE = False
os.environ["QKVJAX_CACHE_DIR"] = os.environ["QKVJAX_TEST_CACHE"]

import pytest  # pylint: disable=wrong-import-position

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

from qkvjax import registry
from qkvjax import train

train.enable_compilation_cache()  # in-process tests share it too


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE:
    shutil.rmtree(os.environ["QKVJAX_TEST_CACHE"], ignore_errors=True)


def tiny_config(**overrides):
  """The specialization experiment's tiny variant (``--config=tiny``) with
  ``overrides`` ({"model.d_model": 32, ...}): tests that change nothing
  share its compiled programs with the command line's tiny runs."""
  c = registry.load_config("specialization", "tiny")
  for path, value in overrides.items():
    node = c
    *parents, leaf = path.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


@pytest.fixture
def tiny():
  return tiny_config


def pytest_xdist_auto_num_workers(config):
  """``-n auto``: one worker per core, at most four (each holds its own JAX)."""
  del config
  return max(1, min(os.cpu_count() or 1, 4))


_TINY_RUNS: dict[str, pathlib.Path] = {}


def tiny_group(exp: str):
  """The xdist group of the tests that read ``exp``'s session run, so one
  worker makes it and the others never need it."""
  return pytest.mark.xdist_group(f"tiny-{exp}")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """``tiny_run(exp)``: the run directory of ``--exp=exp --config=tiny``, run
  once per worker through the command line (PNG figures). Tests read it and
  never change it; a test that changes a run copies it first (``copy_run``)."""
  def get(exp: str) -> pathlib.Path:
    if exp not in _TINY_RUNS:
      from experiments import run as run_cli  # pylint: disable=g-import-not-at-top
      out = tmp_path_factory.mktemp(f"tiny-{exp}")
      argv = ["run", f"--exp={exp}", "--config=tiny", f"--results_dir={out}",
              "--figure_formats=png", "--noprogress"]
      assert run_cli.main(argv) == 0, exp
      (_TINY_RUNS[exp],) = (out / exp).iterdir()
    return _TINY_RUNS[exp]
  return get


def copy_run(run_dir: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
  """A writable copy of a session run, named like it."""
  return pathlib.Path(shutil.copytree(run_dir, dest / run_dir.parent.name / run_dir.name))


# Seconds each measured on 2 cores: what starts first, so that the two
# workers end together (the tiny runs are paid by their group's first test).
_FIRST = {"tiny-tied": 40, "test_multiprocess.py": 30, "test_readme.py": 30,
          "tiny-heads": 15, "tiny-scaling": 20, "test_sweep.py": 25, "tiny-induction": 18,
          "tiny-translation": 15, "test_cli.py": 15, "tiny-context": 10, "tiny-residual": 10}


def pytest_collection_modifyitems(config, items):
  """The slowest groups and files first; the rest keep their order."""
  del config

  def cost(item):
    group = item.get_closest_marker("xdist_group")
    key = group.args[0] if group else item.nodeid.split("::")[0].split("/")[-1]
    return -_FIRST.get(key, 0)
  items.sort(key=cost)  # stable
