"""Pretrained Hugging Face checkpoints as qkvjax models.

``load(spec)`` reads a checkpoint (a directory, a .zip, an installed
package shipping one, or a Hugging Face Hub id ``org/name[@revision]`` from
the Hub cache; ``source``, ``hub``), maps its architecture and weights onto
``models.PretrainedTransformer`` (``architectures``: BERT family, GPT-2,
Llama/Mistral) and returns it with what was read; ``analysis`` scores it.
``export.export`` writes a trained ``models.Transformer`` (``qkvjax.load_run_model``)
as a GPT-2 checkpoint directory that ``load`` reads back. Needs the
``pretrained`` extra (``safetensors``, ``tokenizers``, ``huggingface_hub``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import TYPE_CHECKING

from qkvjax.config import ConfigError

if TYPE_CHECKING:
  from qkvjax.models.pretrained import Architecture
  from qkvjax.pretrained.source import Checkpoint


@dataclasses.dataclass
class Loaded:
  checkpoint: Checkpoint
  arch: Architecture
  rules: dict          # model parameter -> (tensor, shape, rearrangement)
  unused: list[str]    # tensors the model does not read
  tokenizer: object    # a ``tokenizers.Tokenizer``, or None without tokenizer.json


def _tokenizer(ckpt):
  """The checkpoint's tokenizer, or None; ConfigError if it cannot be read."""
  if ckpt.tokenizer_json is None:
    return None
  try:
    from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError("a checkpoint's tokenizer.json needs the tokenizers library; "
                      "accepted: after pip install -e '.[pretrained]'") from None
  try:
    return Tokenizer.from_str(ckpt.tokenizer_json)
  except Exception as e:  # pylint: disable=broad-except  (the Rust library's own errors)
    raise ConfigError(f"--config.checkpoint={ckpt.spec!r} has an unreadable tokenizer.json "
                      f"({str(e).splitlines()[0][:100]}); accepted: a tokenizers-library "
                      "tokenizer.json, or none (text metrics are then skipped)") from None


def inspect(spec: str) -> Loaded:
  """Everything but the weights' values: config, architecture, every
  tensor's name and shape checked against it, the tokenizer. ConfigError on
  bad input."""
  if importlib.util.find_spec("safetensors") is None:
    raise ConfigError("--config.checkpoint needs the safetensors library; accepted: after "
                      "pip install -e '.[pretrained]'")
  from qkvjax.pretrained import architectures, source  # pylint: disable=g-import-not-at-top
  ckpt = source.open_checkpoint(spec)
  arch = architectures.architecture(ckpt)
  rules = architectures.weight_map(arch, ckpt)
  return Loaded(ckpt, arch, rules, architectures.unused(rules, ckpt), _tokenizer(ckpt))


def describe(got: Loaded) -> dict:
  """What a run records of the checkpoint it analysed (``config.json``)."""
  ckpt = got.checkpoint
  return {"spec": ckpt.spec, "where": ckpt.where, "model_type": ckpt.config.get("model_type"),
          "architectures": ckpt.config.get("architectures"),
          "stored_dtypes": sorted({ckpt.tensors.specs[n][1] for n, _, _ in got.rules.values()}),
          "unused_tensors": got.unused, "tokenizer": got.tokenizer is not None,
          "files": ckpt.files, "hub": ckpt.hub, "architecture": dataclasses.asdict(got.arch)}


def build(got: Loaded):
  """The ``PretrainedTransformer`` with the weights of an inspected checkpoint."""
  from qkvjax.pretrained import architectures  # pylint: disable=g-import-not-at-top
  return architectures.load_model(got.arch, got.checkpoint, got.rules)


def load(spec: str):
  """``(Loaded, model)``: the checkpoint ``spec`` as a ``PretrainedTransformer``."""
  got = inspect(spec)
  return got, build(got)


def passages(got: Loaded, text):
  """``text.num_samples * text.passages`` passages of ``text.seq_len`` tokens
  (``analysis.passages``), or None without a tokenizer; ConfigError if the
  text is too short for them."""
  from qkvjax.pretrained import analysis  # pylint: disable=g-import-not-at-top
  if got.tokenizer is None:
    return None
  try:
    return analysis.passages(got.tokenizer, text.seq_len, text.num_samples * text.passages)
  except ValueError as e:
    raise ConfigError(f"config.text={text.to_dict()} asks for more text than there is ({e}); "
                      "accepted: fewer or shorter passages") from None


def qk_scores(spec: str) -> dict[str, list[float]]:
  """Per layer, symmetry and directionality of W_Q W_K^T summed over heads,
  for the checkpoint ``spec`` (the weights alone; a few seconds for MiniLM)."""
  import jax  # pylint: disable=g-import-not-at-top
  from qkvjax.metrics import circuits  # pylint: disable=g-import-not-at-top

  @jax.jit
  def layer(w_q, w_k):
    m_MxM = circuits.qk_matrices(w_q, w_k).sum(0)
    return circuits.symmetry_score(m_MxM), circuits.directionality_score(m_MxM)

  _, model = load(spec)
  got = [layer(a.query[...], a.key[...]) for a in circuits.attention_modules(model).values()]
  return {"symmetry": [float(s) for s, _ in got], "directionality": [float(d) for _, d in got]}
