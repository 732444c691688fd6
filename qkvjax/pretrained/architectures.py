"""Hugging Face architectures as ``models.Architecture`` plus a weight map.

For each supported ``model_type`` (``FAMILIES``): the ``Architecture`` its
config.json describes, and for every parameter of the
``PretrainedTransformer`` the Hugging Face tensor it comes from, that
tensor's shape as the config implies it, and how it is rearranged into the
project's layout — W_Q, W_K, W_V ``[d_model, heads, d_head]`` and W_O
``[heads, d_head, d_model]``; torch ``Linear`` weights are ``[out, in]``,
GPT-2's ``Conv1D`` weights ``[in, out]`` with Q, K, V fused in ``c_attn``.
Checking names and shapes needs the safetensors headers only, so bad input
fails before anything is read or written.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from flax import nnx

from qkvjax.config import ConfigError
from qkvjax.models.pretrained import ACTIVATIONS, Architecture, PretrainedTransformer
from qkvjax.pretrained.source import DTYPES, FLAG, Checkpoint

FAMILIES = {"bert": "bert", "gpt2": "gpt2", "llama": "llama", "mistral": "llama"}
SUPPORTED = "BERT family (model_type bert: BERT, MiniLM, bge), gpt2, llama, mistral"
# Tensors a checkpoint may hold that the analysis does not use (buffers, heads
# of other tasks); anything else unused is listed in the report.
IGNORED = ("pooler.", "position_ids", "cls.seq_relationship.", "rotary_emb.inv_freq",
           ".attn.bias", ".attn.masked_bias")

Rule = tuple[str, tuple[int, ...], Callable[[np.ndarray], np.ndarray]]


def _field(ckpt: Checkpoint, *names, default=None, kind=int):
  """The first of ``names`` in config.json, as ``kind``."""
  for name in names:
    value = ckpt.config.get(name)
    if value is not None:
      try:
        if kind is int and (isinstance(value, bool) or int(value) != value or value < 1):
          raise ValueError
        return kind(value)
      except (TypeError, ValueError):
        raise ConfigError(f"{FLAG}={ckpt.spec!r}: config.json has {name}={value!r}; "
                          f"accepted: a positive {kind.__name__}") from None
  if default is None:
    raise ConfigError(f"{FLAG}={ckpt.spec!r}: config.json lacks {' or '.join(names)}; "
                      "accepted: a complete Hugging Face config")
  return default


def _activation(ckpt: Checkpoint, name: str) -> str:
  act = ckpt.config.get(name, "gelu")
  if act in ("gelu_pytorch_tanh", "gelu_fast"):
    act = "gelu_new"
  if act not in ACTIVATIONS:
    raise ConfigError(f"{FLAG}={ckpt.spec!r}: config.json has {name}={act!r}; accepted: "
                      f"{', '.join(ACTIVATIONS)}")
  return act


def _rope_theta(ckpt: Checkpoint) -> float:
  """rope_theta (or rope_parameters.rope_theta); only unscaled rotary positions."""
  params = ckpt.config.get("rope_parameters") or {}
  scaling = ckpt.config.get("rope_scaling") or {}
  kind = scaling.get("rope_type", scaling.get("type")) or params.get("rope_type", "default")
  if kind != "default":
    raise ConfigError(f"{FLAG}={ckpt.spec!r}: rotary scaling {kind!r} is not supported; "
                      "accepted: checkpoints with rope_type 'default' (no rope_scaling)")
  return float(ckpt.config.get("rope_theta") or params.get("rope_theta") or 10000.0)


def architecture(ckpt: Checkpoint) -> Architecture:
  """The ``Architecture`` of a checkpoint's config.json; ConfigError for an
  unsupported or incomplete one."""
  model_type = ckpt.config.get("model_type")
  family = FAMILIES.get(model_type)
  if family is None:
    raise ConfigError(f"{FLAG}={ckpt.spec!r} is a {model_type!r} checkpoint, which is not "
                      f"supported; accepted: {SUPPORTED}")
  f = lambda *names, **kw: _field(ckpt, *names, **kw)
  m, h = f("hidden_size", "n_embd"), f("num_attention_heads", "n_head")
  if family == "bert":
    arch = dict(n_kv_heads=h, d_head=m // h, d_mlp=f("intermediate_size"),
                max_positions=f("max_position_embeddings"), causal=False, post_norm=True,
                rms_norm=False, norm_eps=f("layer_norm_eps", default=1e-12, kind=float),
                activation=_activation(ckpt, "hidden_act"), gated_mlp=False, bias=True,
                mlp_bias=True, rotary_theta=None, max_len=f("max_position_embeddings"),
                type_vocab_size=f("type_vocab_size", default=2), embed_norm=True,
                final_norm=False, lm_head="cls.predictions.bias" in _names(ckpt),
                mlm_transform="cls.predictions.bias" in _names(ckpt))
    if ckpt.config.get("position_embedding_type", "absolute") != "absolute":
      raise ConfigError(f"{FLAG}={ckpt.spec!r}: position_embedding_type "
                        f"{ckpt.config['position_embedding_type']!r} is not supported; "
                        "accepted: 'absolute'")
  elif family == "gpt2":
    arch = dict(n_kv_heads=h, d_head=m // h, d_mlp=f("n_inner", default=4 * m),
                max_positions=f("n_positions"), causal=True, post_norm=False,
                rms_norm=False, norm_eps=f("layer_norm_epsilon", default=1e-5, kind=float),
                activation=_activation(ckpt, "activation_function"), gated_mlp=False,
                bias=True, mlp_bias=True, rotary_theta=None, max_len=f("n_positions"))
    if ckpt.config.get("scale_attn_by_inverse_layer_idx") or \
        ckpt.config.get("scale_attn_weights") is False:
      raise ConfigError(f"{FLAG}={ckpt.spec!r}: a GPT-2 with non-standard attention "
                        "scaling is not supported; accepted: scale_attn_weights=true, "
                        "scale_attn_by_inverse_layer_idx=false")
  else:
    window = ckpt.config.get("sliding_window") or 1 << 30
    arch = dict(n_kv_heads=f("num_key_value_heads", default=h),
                d_head=f("head_dim", default=m // h), d_mlp=f("intermediate_size"),
                max_positions=0, causal=True, post_norm=False, rms_norm=True,
                norm_eps=f("rms_norm_eps", default=1e-6, kind=float),
                activation=_activation(ckpt, "hidden_act"), gated_mlp=True,
                bias=bool(ckpt.config.get("attention_bias", False)),
                mlp_bias=bool(ckpt.config.get("mlp_bias", False)),
                rotary_theta=_rope_theta(ckpt),
                max_len=min(f("max_position_embeddings", default=4096), int(window)))
  out = Architecture(family=family, vocab_size=f("vocab_size"), d_model=m,
                     n_layers=f("num_hidden_layers", "n_layer"), n_heads=h, **arch)
  if out.family != "llama" and m % h:
    raise ConfigError(f"{FLAG}={ckpt.spec!r}: hidden size {m} is not divisible by "
                      f"{h} heads; accepted: a consistent config.json")
  if h % out.n_kv_heads:
    raise ConfigError(f"{FLAG}={ckpt.spec!r}: {h} heads cannot share "
                      f"{out.n_kv_heads} key/value heads; accepted: a consistent config.json")
  return out


def _names(ckpt: Checkpoint) -> set[str]:
  return set(ckpt.tensors.specs)


def _prefix(ckpt: Checkpoint, first: str, prefixes: tuple[str, ...]) -> str:
  """The prefix a task head's wrapper added (``bert.``, ``transformer.``, ``model.``)."""
  for p in ("",) + prefixes:
    if p + first in ckpt.tensors.specs:
      return p
  raise ConfigError(f"{FLAG}={ckpt.spec!r} has no tensor {first!r} (with or without "
                    f"{' / '.join(prefixes)}); accepted: a checkpoint with the weights of its "
                    f"config.json's model_type {ckpt.config.get('model_type')!r}")


def _linear(name: str, out: int, inp: int, *to) -> Rule:
  """A torch ``Linear`` weight [out, in] as x @ W^T, reshaped to ``to``."""
  return name, (out, inp), lambda w: w.T.reshape(to or (inp, out))


def _bert(a: Architecture, ckpt: Checkpoint) -> dict[str, Rule]:
  m, h, d, f = a.d_model, a.n_heads, a.d_head, a.d_mlp
  p = _prefix(ckpt, "embeddings.word_embeddings.weight", ("bert.",))
  e = p + "embeddings."
  same = lambda x: x
  rules = {"embed/embedding": (e + "word_embeddings.weight", (a.vocab_size, m), same),
           "pos_embed": (e + "position_embeddings.weight", (a.max_positions, m), same),
           "type_embed": (e + "token_type_embeddings.weight", (a.type_vocab_size, m), same),
           "ln_embed/scale": (e + "LayerNorm.weight", (m,), same),
           "ln_embed/bias": (e + "LayerNorm.bias", (m,), same)}
  for l in range(a.n_layers):
    s, t = f"{p}encoder.layer.{l}.", f"layers/{l}/"
    for ours, theirs in (("query", "query"), ("key", "key"), ("value", "value")):
      rules[t + f"attn/{ours}"] = _linear(f"{s}attention.self.{theirs}.weight", h * d, m,
                                          m, h, d)
      rules[t + f"attn/{ours}_bias"] = (f"{s}attention.self.{theirs}.bias", (h * d,), same)
    rules[t + "attn/out"] = _linear(f"{s}attention.output.dense.weight", m, h * d, h, d, m)
    rules[t + "attn/out_bias"] = (f"{s}attention.output.dense.bias", (m,), same)
    for ours, theirs in (("ln_attn", "attention.output.LayerNorm"),
                         ("ln_mlp", "output.LayerNorm")):
      rules[t + f"{ours}/scale"] = (f"{s}{theirs}.weight", (m,), same)
      rules[t + f"{ours}/bias"] = (f"{s}{theirs}.bias", (m,), same)
    rules[t + "mlp/linear_in/kernel"] = _linear(f"{s}intermediate.dense.weight", f, m)
    rules[t + "mlp/linear_in/bias"] = (f"{s}intermediate.dense.bias", (f,), same)
    rules[t + "mlp/linear_out/kernel"] = _linear(f"{s}output.dense.weight", m, f)
    rules[t + "mlp/linear_out/bias"] = (f"{s}output.dense.bias", (m,), same)
  if a.mlm_transform:
    c = "cls.predictions."
    rules.update({
        "mlm_dense/kernel": _linear(c + "transform.dense.weight", m, m),
        "mlm_dense/bias": (c + "transform.dense.bias", (m,), same),
        "mlm_norm/scale": (c + "transform.LayerNorm.weight", (m,), same),
        "mlm_norm/bias": (c + "transform.LayerNorm.bias", (m,), same),
        "unembed/kernel": (e + "word_embeddings.weight", (a.vocab_size, m), lambda w: w.T),
        "unembed/bias": (c + "bias", (a.vocab_size,), same)})
  return rules


def _gpt2(a: Architecture, ckpt: Checkpoint) -> dict[str, Rule]:
  m, h, d, f = a.d_model, a.n_heads, a.d_head, a.d_mlp
  p = _prefix(ckpt, "wte.weight", ("transformer.",))
  same = lambda x: x
  head = "lm_head.weight" if "lm_head.weight" in ckpt.tensors.specs else p + "wte.weight"
  rules = {"embed/embedding": (p + "wte.weight", (a.vocab_size, m), same),
           "pos_embed": (p + "wpe.weight", (a.max_positions, m), same),
           "ln_final/scale": (p + "ln_f.weight", (m,), same),
           "ln_final/bias": (p + "ln_f.bias", (m,), same),
           "unembed/kernel": (head, (a.vocab_size, m), lambda w: w.T)}
  for l in range(a.n_layers):
    s, t = f"{p}h.{l}.", f"layers/{l}/"
    for i, name in enumerate(("query", "key", "value")):  # Conv1D [in, out]: x @ W + b
      rules[t + f"attn/{name}"] = (s + "attn.c_attn.weight", (m, 3 * m),
                                   lambda w, i=i: w[:, i * m:(i + 1) * m].reshape(m, h, d))
      rules[t + f"attn/{name}_bias"] = (s + "attn.c_attn.bias", (3 * m,),
                                        lambda b, i=i: b[i * m:(i + 1) * m])
    rules[t + "attn/out"] = (s + "attn.c_proj.weight", (m, m), lambda w: w.reshape(h, d, m))
    rules[t + "attn/out_bias"] = (s + "attn.c_proj.bias", (m,), same)
    for ours, theirs in (("ln_attn", "ln_1"), ("ln_mlp", "ln_2")):
      rules[t + f"{ours}/scale"] = (f"{s}{theirs}.weight", (m,), same)
      rules[t + f"{ours}/bias"] = (f"{s}{theirs}.bias", (m,), same)
    rules[t + "mlp/linear_in/kernel"] = (s + "mlp.c_fc.weight", (m, f), same)
    rules[t + "mlp/linear_in/bias"] = (s + "mlp.c_fc.bias", (f,), same)
    rules[t + "mlp/linear_out/kernel"] = (s + "mlp.c_proj.weight", (f, m), same)
    rules[t + "mlp/linear_out/bias"] = (s + "mlp.c_proj.bias", (m,), same)
  return rules


def _llama(a: Architecture, ckpt: Checkpoint) -> dict[str, Rule]:
  m, h, k, d, f = a.d_model, a.n_heads, a.n_kv_heads, a.d_head, a.d_mlp
  p = _prefix(ckpt, "embed_tokens.weight", ("model.",))
  same = lambda x: x
  tied = ckpt.config.get("tie_word_embeddings", False) or "lm_head.weight" not in \
      ckpt.tensors.specs
  rules = {"embed/embedding": (p + "embed_tokens.weight", (a.vocab_size, m), same),
           "ln_final/scale": (p + "norm.weight", (m,), same),
           "unembed/kernel": (p + "embed_tokens.weight" if tied else "lm_head.weight",
                              (a.vocab_size, m), lambda w: w.T)}
  for l in range(a.n_layers):
    s, t = f"{p}layers.{l}.", f"layers/{l}/"
    for name, short, heads in (("query", "q", h), ("key", "k", k), ("value", "v", k)):
      rules[t + f"attn/{name}"] = _linear(f"{s}self_attn.{short}_proj.weight", heads * d, m,
                                          m, heads, d)
      if a.bias:
        rules[t + f"attn/{name}_bias"] = (f"{s}self_attn.{short}_proj.bias", (heads * d,),
                                          same)
    rules[t + "attn/out"] = _linear(f"{s}self_attn.o_proj.weight", m, h * d, h, d, m)
    if a.bias:
      rules[t + "attn/out_bias"] = (f"{s}self_attn.o_proj.bias", (m,), same)
    rules[t + "ln_attn/scale"] = (f"{s}input_layernorm.weight", (m,), same)
    rules[t + "ln_mlp/scale"] = (f"{s}post_attention_layernorm.weight", (m,), same)
    for ours, theirs, shape in (("linear_gate", "gate_proj", (f, m)),
                                ("linear_in", "up_proj", (f, m)),
                                ("linear_out", "down_proj", (m, f))):
      rules[t + f"mlp/{ours}/kernel"] = _linear(f"{s}mlp.{theirs}.weight", *shape)
      if a.mlp_bias:
        rules[t + f"mlp/{ours}/bias"] = (f"{s}mlp.{theirs}.bias", (shape[0],), same)
  return rules


def weight_map(arch: Architecture, ckpt: Checkpoint) -> dict[str, Rule]:
  """Model parameter path -> (tensor, expected shape, rearrangement); ConfigError
  for a missing tensor or one whose shape does not match config.json."""
  rules = {"bert": _bert, "gpt2": _gpt2, "llama": _llama}[arch.family](arch, ckpt)
  for path, (name, shape, _) in rules.items():
    if name not in ckpt.tensors.specs:
      raise ConfigError(f"{FLAG}={ckpt.spec!r} has no tensor {name!r}; accepted: a "
                        f"complete {arch.family} checkpoint")
    have, dtype = ckpt.tensors.specs[name]
    if dtype not in DTYPES:
      raise ConfigError(f"{FLAG}={ckpt.spec!r}: tensor {name!r} has dtype {dtype}; "
                        f"accepted: floating-point weights ({', '.join(DTYPES)})")
    if tuple(have) != tuple(shape):
      raise ConfigError(f"{FLAG}={ckpt.spec!r}: tensor {name!r} has shape {list(have)} but "
                        f"config.json implies {list(shape)}; accepted: weights matching "
                        "their config.json")
  return rules


def unused(rules: dict[str, Rule], ckpt: Checkpoint) -> list[str]:
  """Tensors of the checkpoint the model does not read (ignorable ones left out)."""
  used = {name for name, _, _ in rules.values()}
  return sorted(n for n in ckpt.tensors.specs
                if n not in used and not any(i in n for i in IGNORED))


def load_model(arch: Architecture, ckpt: Checkpoint,
               rules: dict[str, Rule] | None = None) -> PretrainedTransformer:
  """The ``PretrainedTransformer`` with the checkpoint's weights, as float32.
  No random initialization: the parameters are created from the tensors."""
  rules = rules or weight_map(arch, ckpt)
  abstract = nnx.eval_shape(lambda: PretrainedTransformer(arch, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  cache: dict[str, np.ndarray] = {}
  flat = {}
  for path, var in nnx.to_flat_state(state):
    key = "/".join(str(k) for k in path)
    if key not in rules:
      raise KeyError(f"no rule for parameter {key}")
    name, _, rearrange = rules[key]
    if name not in cache:
      cache[name] = ckpt.tensors.get(name)
    value = np.ascontiguousarray(rearrange(cache[name]), np.float32)
    assert value.shape == var.get_value().shape, (key, value.shape)
    flat[path] = jax.numpy.asarray(value)
  pure = nnx.to_pure_dict(state)
  for path, value in flat.items():
    node = pure
    for k in path[:-1]:
      node = node[k]
    node[path[-1]] = value
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)
