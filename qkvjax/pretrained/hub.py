"""Hugging Face Hub ids (``org/name``, optionally ``org/name@revision``) as
checkpoint directories, through ``huggingface_hub``.

``resolve`` returns the snapshot directory of the user's Hub cache
(``HF_HUB_CACHE``, else ``HF_HOME``/hub, else ``~/.cache/huggingface/hub``),
downloading what is missing unless ``HF_HUB_OFFLINE`` is set, and what it
resolved (repo id, revision, commit hash, cache). Only the files the loader
reads are fetched: config.json, tokenizer.json and the safetensors weights.
"""

from __future__ import annotations

import os
import pathlib
import re

from qkvjax.config import ConfigError

# org/name[@revision]: both parts start with a letter or digit, so ./x, ../x
# and ~/x are never ids; revision is a branch, tag or commit hash.
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[^@\s]+))?$")
FILES = ["config.json", "tokenizer.json", "model.safetensors", "model.safetensors.index.json",
         "model-*.safetensors"]
_TRUE = ("1", "ON", "YES", "TRUE")


def is_hub_id(spec: str) -> bool:
  return HUB_ID.match(spec) is not None


def offline() -> bool:
  """HF_HUB_OFFLINE as huggingface_hub reads it, at call time."""
  return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def cache_dir() -> pathlib.Path:
  """The Hub cache huggingface_hub uses, read at call time (HF_HUB_CACHE, then
  HF_HOME/hub, then the library's default)."""
  if os.environ.get("HF_HUB_CACHE"):
    return pathlib.Path(os.environ["HF_HUB_CACHE"]).expanduser()
  if os.environ.get("HF_HOME"):
    return pathlib.Path(os.environ["HF_HOME"]).expanduser() / "hub"
  from huggingface_hub import constants  # pylint: disable=g-import-not-at-top
  return pathlib.Path(constants.HF_HUB_CACHE)


def resolve(spec: str, flag: str, accepted: str) -> tuple[pathlib.Path, dict]:
  """``(snapshot directory, record)`` of the Hub id ``spec``; ConfigError
  (one line naming ``spec`` and the cache searched) if it cannot be had."""
  match = HUB_ID.match(spec)
  repo, revision = match["repo"], match["rev"] or "main"
  try:
    from huggingface_hub import snapshot_download  # pylint: disable=g-import-not-at-top
    from huggingface_hub.errors import LocalEntryNotFoundError  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError(f"{flag}={spec!r} is read as a Hugging Face Hub id, which needs the "
                      "huggingface_hub library; accepted: after pip install -e "
                      "'.[pretrained]'") from None
  cache, local = cache_dir(), offline()
  lead = f"{flag}={spec!r} (no directory, zip file or installed package, so a Hub id)"
  try:
    path = snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=local,
                             allow_patterns=FILES)
  except LocalEntryNotFoundError as e:
    why = ("HF_HUB_OFFLINE is set, so nothing is downloaded" if local else
           f"the Hub could not be reached: {_first_line(e)}")
    raise ConfigError(f"{lead} is not in the Hugging Face cache {cache} at revision "
                      f"{revision!r} ({why}); {accepted}") from None
  except (OSError, ValueError) as e:  # unknown repo or revision, gated, invalid id, HTTP
    raise ConfigError(f"{lead} could not be resolved with the Hugging Face cache {cache} "
                      f"({type(e).__name__}: {_first_line(e)}); {accepted}") from None
  path = pathlib.Path(path)
  return path, {"repo_id": repo, "revision": revision, "commit": path.name,
                "cache": str(cache), "offline": local}


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return text.splitlines()[0][:160] if text else type(e).__name__
