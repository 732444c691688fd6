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
os.environ["QKVJAX_CACHE_DIR"] = os.path.join(os.environ["QKVJAX_TEST_CACHE"], "jax")

import pytest  # pylint: disable=wrong-import-position

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

from qkvjax import config as config_lib
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
    config_lib.set_field(c, path, value)
  return c


@pytest.fixture
def tiny():
  return tiny_config


def pytest_xdist_auto_num_workers(config):
  """``-n auto``: one worker per core, at most four (each holds its own JAX)."""
  del config
  return max(1, min(os.cpu_count() or 1, 4))


_TINY_RUNS: dict[str, pathlib.Path] = {}


@pytest.fixture(scope="session")
def tiny_run():
  """``tiny_run(exp)``: the run directory of ``--exp=exp --config=tiny``, run
  once per session through the command line (PNG figures): the first worker
  to ask runs it under a file lock in the session's temporary directory, and
  every other test, on any worker, reads it. Tests never change it; a test
  that changes a run copies it first (``copy_run``)."""
  import fcntl  # pylint: disable=g-import-not-at-top

  def get(exp: str) -> pathlib.Path:
    if exp not in _TINY_RUNS:
      root = pathlib.Path(os.environ["QKVJAX_TEST_CACHE"]) / "tiny-runs"
      root.mkdir(exist_ok=True)
      with open(root / f"{exp}.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = root / exp
        if not (root / f"{exp}.done").exists():
          from experiments import run as run_cli  # pylint: disable=g-import-not-at-top
          shutil.rmtree(out, ignore_errors=True)
          argv = ["run", f"--exp={exp}", "--config=tiny", f"--results_dir={out}",
                  "--figure_formats=png", "--noprogress"]
          assert run_cli.main(argv) == 0, exp
          (root / f"{exp}.done").touch()
      (_TINY_RUNS[exp],) = (out / exp).iterdir()
    return _TINY_RUNS[exp]
  return get


def copy_run(run_dir: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
  """A writable copy of a session run, named like it."""
  return pathlib.Path(shutil.copytree(run_dir, dest / run_dir.parent.name / run_dir.name))


# What starts first, so that the two workers end together: the tiny variant
# of every experiment (each run once, by whichever worker asks first), then
# the files that start processes, then the rest in their order.
_FIRST = ("test_tiny.py", "test_multiprocess.py", "test_readme.py", "test_sweep.py",
          "test_sharding.py", "test_cli.py", "test_host_linalg.py")


def pytest_collection_modifyitems(config, items):
  del config

  def rank(item):
    name = item.nodeid.split("::")[0].split("/")[-1]
    return _FIRST.index(name) if name in _FIRST else len(_FIRST)
  items.sort(key=rank)  # stable
