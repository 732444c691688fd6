"""The headline model and training step written the way a PyTorch expert
would, for the speed comparison in ``bench_train --torch`` (optional: needs
``pip install -e '.[bench]'``).

Seeds are batched in one model: every parameter has a leading seed axis and
every matmul is a batched one (``torch.einsum``), with AdamW from
``torch.optim`` over the stacked parameters, so S seeds cost one optimizer
step. ``looped`` steps S single-seed models one after another instead.
Weights are loaded from the JAX model's initial state, so the two compute the
same loss at initialization (checked before timing).

Letters: S seeds, B batch, T positions, M d_model, H heads, D head dim,
F MLP width, V vocabulary.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def from_jax(params_pure: dict, n_layers: int) -> dict[str, torch.Tensor]:
  """Stacked [S, ...] tensors from the JAX state's pure dict (leaves [S, ...])."""
  t = lambda x: torch.tensor(np.asarray(x), dtype=torch.float32)
  out = {"embed": t(params_pure["embed"]["embedding"]), "pos": t(params_pure["pos_embed"]),
         "lnf_s": t(params_pure["ln_final"]["scale"]), "lnf_b": t(params_pure["ln_final"]["bias"]),
         "unembed": t(params_pure["unembed"]["kernel"])}
  for l in range(n_layers):
    p = params_pure["layers"][l]
    out.update({
        f"{l}.ln1_s": t(p["ln_attn"]["scale"]), f"{l}.ln1_b": t(p["ln_attn"]["bias"]),
        f"{l}.q": t(p["attn"]["query"]), f"{l}.k": t(p["attn"]["key"]),
        f"{l}.v": t(p["attn"]["value"]), f"{l}.o": t(p["attn"]["out"]),
        f"{l}.ln2_s": t(p["ln_mlp"]["scale"]), f"{l}.ln2_b": t(p["ln_mlp"]["bias"]),
        f"{l}.w1": t(p["mlp_in"]["kernel"]), f"{l}.b1": t(p["mlp_in"]["bias"]),
        f"{l}.w2": t(p["mlp_out"]["kernel"]), f"{l}.b2": t(p["mlp_out"]["bias"])})
  return {k: v.requires_grad_(True) for k, v in out.items()}


def _ln(x, s, b):
  mean = x.mean(-1, keepdim=True)
  var = ((x - mean) ** 2).mean(-1, keepdim=True)
  return (x - mean) * torch.rsqrt(var + 1e-5) * s[:, None, None] + b[:, None, None]


def forward(p: dict[str, torch.Tensor], tokens_SxBxT: torch.Tensor, n_layers: int):
  """Next-token logits [S, B, T, V] of every seed's model on its own batch."""
  s, b, t = tokens_SxBxT.shape
  idx = torch.arange(s)[:, None, None]
  x = p["embed"][idx, tokens_SxBxT] + p["pos"][:, None, :t]
  mask = torch.ones(t, t, dtype=torch.bool).tril()
  for l in range(n_layers):
    h = _ln(x, p[f"{l}.ln1_s"], p[f"{l}.ln1_b"])
    q = torch.einsum("sbtm,smhd->sbhtd", h, p[f"{l}.q"])
    k = torch.einsum("sbtm,smhd->sbhtd", h, p[f"{l}.k"])
    v = torch.einsum("sbtm,smhd->sbhtd", h, p[f"{l}.v"])
    z = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    w = torch.softmax(z.masked_fill(~mask, torch.finfo(z.dtype).min), -1)
    x = x + torch.einsum("sbhtd,shdm->sbtm", w @ v, p[f"{l}.o"])
    h = _ln(x, p[f"{l}.ln2_s"], p[f"{l}.ln2_b"])
    h = F.gelu(torch.einsum("sbtm,smf->sbtf", h, p[f"{l}.w1"]) + p[f"{l}.b1"][:, None, None],
               approximate="tanh")
    x = x + torch.einsum("sbtf,sfm->sbtm", h, p[f"{l}.w2"]) + p[f"{l}.b2"][:, None, None]
  x = _ln(x, p["lnf_s"], p["lnf_b"])
  return torch.einsum("sbtm,smv->sbtv", x, p["unembed"])


def loss_fn(p, tokens_SxBxT, target_SxB, n_layers):
  """The sum over seeds of each seed's mean cross-entropy at the last position
  (summing keeps each seed's gradient its own)."""
  logits = forward(p, tokens_SxBxT, n_layers)[:, :, -1]
  s, b, v = logits.shape
  return F.cross_entropy(logits.reshape(s * b, v), target_SxB.reshape(-1),
                         reduction="sum") / b


class Batched:
  """All seeds in one model and one AdamW."""

  def __init__(self, params, n_layers, lr=1e-3, compile_step=False):
    self.params, self.n_layers = params, n_layers
    self.opt = torch.optim.AdamW(list(params.values()), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                                 weight_decay=0.0, foreach=True)
    self.step_fn = torch.compile(self._step) if compile_step else self._step

  def _step(self, tokens, target):
    self.opt.zero_grad(set_to_none=True)
    loss = loss_fn(self.params, tokens, target, self.n_layers)
    loss.backward()
    self.opt.step()
    return loss

  def step(self, tokens_SxBxT, target_SxB):
    return self.step_fn(tokens_SxBxT, target_SxB)


class Looped:
  """Each seed its own model and optimizer, stepped one after another."""

  def __init__(self, params, n_layers, lr=1e-3):
    seeds = next(iter(params.values())).shape[0]
    self.models = [Batched({k: v.detach()[i:i + 1].clone().requires_grad_(True)
                            for k, v in params.items()}, n_layers, lr) for i in range(seeds)]

  def step(self, tokens_SxBxT, target_SxB):
    for i, m in enumerate(self.models):
      m.step(tokens_SxBxT[i:i + 1], target_SxB[i:i + 1])


# ---- the expert's version ----------------------------------------------------------------
# What a PyTorch expert writes for many seeds on a CPU: the seed axis is the
# batch axis of torch.bmm/baddbmm over activations laid out [S, B*T, M]; Q, K
# and V come from one fused [S, M, 3*H*D] projection; heads are split with
# view/transpose into [S*B, H, T, D] for scaled_dot_product_attention (its
# fused CPU kernel, causal); AdamW is the fused single-kernel implementation.
# The weights are the same as the JAX model's (W_Q, W_K, W_V concatenated).


def expert_params(p: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
  """The stacked parameters in the expert's layout: [S, M, 3HD] fused QKV,
  [S, HD, M] output, biases as [S, 1, F] rows for baddbmm."""
  d = lambda x: x.detach().clone()
  out = {"embed": d(p["embed"]), "pos": d(p["pos"]), "lnf_s": d(p["lnf_s"]),
         "lnf_b": d(p["lnf_b"]), "unembed": d(p["unembed"])}
  for l in range(n_layers):
    s, m, h, dh = p[f"{l}.q"].shape
    out[f"{l}.qkv"] = torch.cat([d(p[f"{l}.{n}"]).reshape(s, m, h * dh) for n in "qkv"], -1)
    out[f"{l}.o"] = d(p[f"{l}.o"]).reshape(s, h * dh, m)
    for n in ("ln1_s", "ln1_b", "ln2_s", "ln2_b", "w1", "w2"):
      out[f"{l}.{n}"] = d(p[f"{l}.{n}"])
    out[f"{l}.b1"] = d(p[f"{l}.b1"])[:, None, :]
    out[f"{l}.b2"] = d(p[f"{l}.b2"])[:, None, :]
  return {k: v.contiguous().requires_grad_(True) for k, v in out.items()}


def _ln_rows(x_SxNxM, s, b):
  return F.layer_norm(x_SxNxM, x_SxNxM.shape[-1:], eps=1e-5) * s[:, None] + b[:, None]


def expert_forward(p, tokens_SxBxT, n_layers: int, n_heads: int):
  """Last-position logits [S, B, V]."""
  s, b, t = tokens_SxBxT.shape
  m = p["embed"].shape[-1]
  idx = torch.arange(s)[:, None, None]
  x = (p["embed"][idx, tokens_SxBxT] + p["pos"][:, None, :t]).reshape(s, b * t, m)
  for l in range(n_layers):
    h = _ln_rows(x, p[f"{l}.ln1_s"], p[f"{l}.ln1_b"])
    qkv = torch.bmm(h, p[f"{l}.qkv"])                                  # [S, BT, 3HD]
    hd = qkv.shape[-1] // 3
    q, k, v = (z.reshape(s * b, t, n_heads, hd // n_heads).transpose(1, 2)
               for z in qkv.split(hd, -1))                              # [SB, H, T, D]
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    a = a.transpose(1, 2).reshape(s, b * t, hd)
    x = torch.baddbmm(x, a, p[f"{l}.o"])
    h = _ln_rows(x, p[f"{l}.ln2_s"], p[f"{l}.ln2_b"])
    h = F.gelu(torch.baddbmm(p[f"{l}.b1"], h, p[f"{l}.w1"]), approximate="tanh")
    x = torch.baddbmm(x + p[f"{l}.b2"], h, p[f"{l}.w2"])
  last = x.reshape(s, b, t, m)[:, :, -1]
  return torch.bmm(_ln_rows(last, p["lnf_s"], p["lnf_b"]), p["unembed"])


class Expert:
  """The expert's step: ``mode`` is "eager", "compile" (torch.compile's
  default) or "max-autotune" (``mode="max-autotune-no-cudagraphs"``), each
  compiling the whole step, optimizer included."""

  def __init__(self, params, n_layers, n_heads, lr=1e-3, mode="eager"):
    self.params, self.n_layers, self.n_heads = expert_params(params, n_layers), n_layers, n_heads
    self.opt = torch.optim.AdamW(list(self.params.values()), lr=lr, betas=(0.9, 0.999),
                                 eps=1e-8, weight_decay=0.0, fused=True)
    if mode == "eager":
      self.step_fn = self._step
    else:
      self.step_fn = torch.compile(self._step, **(
          {"mode": "max-autotune-no-cudagraphs"} if mode == "max-autotune" else {}))

  def loss(self, tokens_SxBxT, target_SxB):
    logits = expert_forward(self.params, tokens_SxBxT, self.n_layers, self.n_heads)
    s, b, v = logits.shape
    return F.cross_entropy(logits.reshape(s * b, v), target_SxB.reshape(-1),
                           reduction="sum") / b

  def _step(self, tokens, target):
    self.opt.zero_grad(set_to_none=True)
    loss = self.loss(tokens, target)
    loss.backward()
    self.opt.step()
    return loss

  def step(self, tokens_SxBxT, target_SxB):
    return self.step_fn(tokens_SxBxT, target_SxB)
