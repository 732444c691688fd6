"""A trained ``models.Transformer`` as a Hugging Face GPT-2 checkpoint directory.

    model = qkvjax.load_run_model("results/specialization/<run>", seed=0)
    pretrained.export.export(model, "my_gpt2")   # config.json + model.safetensors
    # python -m experiments.run --exp=pretrained --config.checkpoint=my_gpt2

The project's causal model is GPT-2's computation: learned token and
position embeddings, pre-LayerNorm blocks (eps 1e-5) of multi-head attention
scaled by 1/sqrt(d_head) and a tanh-GELU MLP with biases, a final LayerNorm
and an untied unembedding without bias. The export writes GPT-2's names and
layouts (``GPT2LMHeadModel``: ``Conv1D`` weights ``[in, out]``, W_Q, W_K, W_V
fused in ``c_attn``), zero attention biases (the model has none) and
``tie_word_embeddings: false``, so ``transformers`` and ``qkvjax.pretrained``
read back the same function. Variants GPT-2 computes exactly are written too:
tied W_K = W_Q (or W_Q = W_K = W_V) as copies, no W_V as the identity, no MLP
as a zero MLP of width 1 (it adds exactly 0). Variants it cannot express —
bidirectional (the loader's only bidirectional layout, BERT, is
post-LayerNorm), QK-norm, a score scale other than 1/sqrt(d_head), a scaled or
missing residual stream, n_heads * d_head != d_model, other LayerNorm epsilons
— are a ``ConfigError`` naming what is accepted.
"""

from __future__ import annotations

import json
import math
import pathlib

import jax
import numpy as np

from qkvjax.config import ConfigError
from qkvjax.models.hyper import value_of
from qkvjax.models.transformer import Transformer

EPS = 1e-5  # GPT-2's layer_norm_epsilon, and the project's LayerNorms'


def _f32(x) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(jax.device_get(x), np.float32))


def _unsupported(why: str) -> ConfigError:
  return ConfigError(f"this model cannot be exported as GPT-2: {why}; accepted: a causal "
                     "qkvjax.models.Transformer with a residual stream of scale 1, "
                     "n_heads * d_head = d_model, no QK-norm and scores scaled by "
                     "1/sqrt(d_head)")


def _check(model) -> None:
  if not isinstance(model, Transformer):
    raise _unsupported(f"it is a {type(model).__name__}, not a qkvjax.models.Transformer")
  if not model.causal:
    raise _unsupported("it is bidirectional, and the loader's bidirectional layout (BERT) is "
                       "post-LayerNorm where this model is pre-LayerNorm")
  m = model.embed.embedding.shape[1]
  for l, block in enumerate(model.layers):
    attn = block.attn
    if attn.n_heads * attn.d_head != m:
      raise _unsupported(f"layer {l} has {attn.n_heads} heads of {attn.d_head} in d_model {m}")
    if attn.qk_norm:
      raise _unsupported(f"layer {l} has QK-norm")
    scale = float(value_of(attn.attn_scale))
    if not math.isclose(scale, 1 / math.sqrt(attn.d_head), rel_tol=1e-6):
      raise _unsupported(f"layer {l} scales scores by {scale:g}, not 1/sqrt({attn.d_head})")
    if not block.residual or float(value_of(block.residual_scale)) != 1.0:
      raise _unsupported(f"layer {l} has residual={block.residual}, residual_scale="
                         f"{float(value_of(block.residual_scale)):g}")
    norms = [block.ln_attn, model.ln_final] + ([block.ln_mlp] if block.mlp else [])
    if any(n.epsilon != EPS for n in norms):
      raise _unsupported(f"a LayerNorm epsilon is not {EPS}")


def tensors(model: Transformer) -> tuple[dict, dict[str, np.ndarray]]:
  """``(config.json, tensors)`` of the GPT-2 checkpoint a Transformer is."""
  _check(model)
  w_e, w_p = _f32(model.embed.embedding[...]), _f32(model.pos_embed[...])  # learned or fixed
  (v, m), t = w_e.shape, w_p.shape[0]
  first = model.layers[0]
  d_mlp = first.mlp_in.kernel.shape[1] if first.mlp else 1
  out = {"transformer.wte.weight": w_e, "transformer.wpe.weight": w_p,
         "transformer.ln_f.weight": _f32(model.ln_final.scale[...]),
         "transformer.ln_f.bias": _f32(model.ln_final.bias[...]),
         "lm_head.weight": _f32(model.unembed.kernel[...]).T.copy()}
  for l, block in enumerate(model.layers):
    p, attn = f"transformer.h.{l}.", block.attn
    qkv = [_f32(attn.matrix(r)).reshape(m, m) for r in ("query", "key", "value")]
    out[p + "attn.c_attn.weight"] = np.concatenate(qkv, 1)       # Conv1D [in, 3 * out]
    out[p + "attn.c_attn.bias"] = np.zeros(3 * m, np.float32)
    out[p + "attn.c_proj.weight"] = _f32(attn.out[...]).reshape(m, m)  # [heads * d_head, M]
    out[p + "attn.c_proj.bias"] = np.zeros(m, np.float32)
    out[p + "ln_1.weight"] = _f32(block.ln_attn.scale[...])
    out[p + "ln_1.bias"] = _f32(block.ln_attn.bias[...])
    if block.mlp:
      out[p + "ln_2.weight"] = _f32(block.ln_mlp.scale[...])
      out[p + "ln_2.bias"] = _f32(block.ln_mlp.bias[...])
      out[p + "mlp.c_fc.weight"] = _f32(block.mlp_in.kernel[...])
      out[p + "mlp.c_fc.bias"] = _f32(block.mlp_in.bias[...])
      out[p + "mlp.c_proj.weight"] = _f32(block.mlp_out.kernel[...])
      out[p + "mlp.c_proj.bias"] = _f32(block.mlp_out.bias[...])
    else:  # a zero MLP: gelu(0) = 0 and a zero projection, so it adds exactly 0
      out[p + "ln_2.weight"], out[p + "ln_2.bias"] = np.ones(m, np.float32), np.zeros(
          m, np.float32)
      for name, shape in (("c_fc.weight", (m, 1)), ("c_fc.bias", (1,)),
                          ("c_proj.weight", (1, m)), ("c_proj.bias", (m,))):
        out[p + "mlp." + name] = np.zeros(shape, np.float32)
  config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": v,
            "n_positions": t, "n_embd": m, "n_layer": len(model.layers),
            "n_head": first.attn.n_heads, "n_inner": d_mlp, "activation_function": "gelu_new",
            "layer_norm_epsilon": EPS, "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
            "tie_word_embeddings": False, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
            "attn_pdrop": 0.0, "torch_dtype": "float32"}
  return config, out


def export(model: Transformer, out_dir, origin: dict | None = None) -> pathlib.Path:
  """Writes ``out_dir/config.json`` and ``out_dir/model.safetensors`` (float32)
  for ``model``; ``origin`` (e.g. the run directory, condition and seed) is
  recorded in config.json under ``qkvjax``. ConfigError if the model is not
  expressible as GPT-2 or ``out_dir`` already holds a checkpoint."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  config, weights = tensors(model)
  out = pathlib.Path(out_dir)
  if (out / "config.json").exists() or (out / "model.safetensors").exists():
    raise ConfigError(f"export to {str(out)!r}: it already holds a checkpoint; accepted: a "
                      "new or empty directory")
  out.mkdir(parents=True, exist_ok=True)
  if origin is not None:
    config["qkvjax"] = origin
  save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
  (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
  return out
