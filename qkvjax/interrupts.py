"""Ctrl-C and SIGTERM: stop at once, leave the run visibly incomplete, and say
how to resume.

JAX spends most of a run inside compiled code, where Python's own signal
handling would only act when control returns (or, torn down mid-compile,
crash with a segmentation fault). ``install()`` — called by the command line
before JAX starts any thread — blocks SIGINT and SIGTERM in every thread and
waits for them in one watcher thread, which runs the registered callbacks
(mark the run interrupted, print the resume command) and exits the process
with 130 (SIGINT) or 143 (SIGTERM) without tearing down the runtime.
Metrics written so far are whole logging points; checkpoints are atomic.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

_callbacks: list[Callable[[str], None]] = []
_lock = threading.Lock()
_installed = False
SIGNALS = (signal.SIGINT, signal.SIGTERM)
WATCHER = "qkvjax-interrupts"  # the watcher thread's name


def on_interrupt(callback: Callable[[str], None]) -> Callable[[], None]:
  """Registers ``callback(signal_name)``; returns a function that removes it."""
  with _lock:
    _callbacks.append(callback)
  def remove():
    with _lock:
      if callback in _callbacks:
        _callbacks.remove(callback)
  return remove


def notify(name: str) -> None:
  """Runs every registered callback with the signal's name."""
  with _lock:
    callbacks = list(_callbacks)
  for callback in callbacks:
    try:
      callback(name)
    except Exception as e:  # pylint: disable=broad-except
      print(f"while stopping: {type(e).__name__}: {e}", file=sys.stderr)


def _watch() -> None:
  sig = signal.sigwait(set(SIGNALS))
  notify(signal.Signals(sig).name)
  sys.stderr.flush()
  sys.stdout.flush()
  os._exit(128 + sig)  # pylint: disable=protected-access


def install() -> bool:
  """Routes SIGINT and SIGTERM to the watcher; call from the main thread
  before other threads start. Returns False where it cannot (not the main
  thread, or no ``pthread_sigmask``)."""
  global _installed
  if _installed:
    return True
  if threading.current_thread() is not threading.main_thread() or not hasattr(
      signal, "pthread_sigmask"):
    return False
  signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
  threading.Thread(target=_watch, name=WATCHER, daemon=True).start()
  _installed = True
  return True
