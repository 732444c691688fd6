"""Kill a run with SIGKILL, resume it, and compare with an uninterrupted run:

    python -m benchmarks.resume_kill [--kills=2]

Trains a small headline config once without interruption, then again,
killing the process (``kill -9``: no handler runs) after a random number of
logging points each time and resuming with ``--resume``; the resumed
``metrics.jsonl`` must equal the uninterrupted one line for line. Prints
where each kill landed and the comparison; exits 1 if they differ.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARGS = ["--exp=specialization", "--noprogress", "--config.num_seeds=2", "--config.steps=240",
        "--config.log_every=10", "--config.checkpoint_every=3", "--config.model.d_model=32",
        "--config.model.d_head=8", "--config.model.d_mlp=64"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def cli(*args, **kwargs) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "experiments.run", *args], cwd=ROOT, env=ENV,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def lines(path: pathlib.Path) -> int:
  return len(path.read_text().splitlines()) if path.exists() else 0


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--kills", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  rng = random.Random(args.seed)
  with tempfile.TemporaryDirectory() as tmp:
    full = cli(*ARGS, f"--results_dir={tmp}/full")
    full.communicate()
    (full_dir,) = pathlib.Path(tmp, "full", "specialization").iterdir()
    proc = cli(*ARGS, f"--results_dir={tmp}/killed")
    run_dir = None
    for k in range(args.kills):
      target = rng.randint(2, 20) * 2  # rows: 2 seeds per logging point
      while proc.poll() is None:
        found = list(pathlib.Path(tmp, "killed", "specialization").glob("*"))
        run_dir = found[0] if found else None
        if run_dir and lines(run_dir / "metrics.jsonl") >= target:
          break
        time.sleep(0.05)
      if proc.poll() is not None:
        print(f"kill {k}: the run finished before the kill; stopping")
        break
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      print(f"kill {k}: SIGKILL after {lines(run_dir / 'metrics.jsonl')} metrics lines")
      proc = cli(f"--resume={run_dir}", "--noprogress")
    out, err = proc.communicate()
    if proc.returncode != 0:
      print(err[-2000:])
      return 1
    same = (full_dir / "metrics.jsonl").read_text() == (run_dir / "metrics.jsonl").read_text()
    print(f"resumed metrics.jsonl ({lines(run_dir / 'metrics.jsonl')} lines) "
          f"{'equals' if same else 'DIFFERS FROM'} the uninterrupted run's "
          f"({lines(full_dir / 'metrics.jsonl')} lines)")
    return 0 if same else 1


if __name__ == "__main__":
  sys.exit(main())
