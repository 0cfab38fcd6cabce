#!/usr/bin/env python3
"""A Qwen3-0.6B-shaped model with random weights for speed measurements
(hidden 1024, 28 layers, 16 query / 8 KV heads of 128, intermediate 3072,
vocab 151936, tied embeddings), saved in bf16 outside the repo, with the
fixtures' tokenizer. Optionally the MoE shape (8 of 64 experts of
intermediate 768), with 8 layers instead of 28 (the full depth would be 4.2B
parameters; per-token cost per layer is what the benchmark compares).

    python scripts/make_bench_model.py OUT_DIR [--moe]
"""
import shutil
import sys
import pathlib

import torch
import transformers

out = pathlib.Path(sys.argv[1])
moe = "--moe" in sys.argv
torch.manual_seed(0)
common = dict(vocab_size=151936, hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
              head_dim=128, intermediate_size=3072, max_position_embeddings=4096, rms_norm_eps=1e-6,
              tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
if moe:
    common["num_hidden_layers"] = 8
    cfg = transformers.Qwen3MoeConfig(**common, num_experts=64, num_experts_per_tok=8, moe_intermediate_size=768, norm_topk_prob=True)
    model = transformers.Qwen3MoeForCausalLM(cfg)
else:
    cfg = transformers.Qwen3Config(**common)
    model = transformers.Qwen3ForCausalLM(cfg)
model = model.to(torch.bfloat16)
model.save_pretrained(out)
root = pathlib.Path(__file__).resolve().parent.parent
for f in ["tokenizer.json", "tokenizer_config.json"]:
    shutil.copy(root / "fixtures" / "qwen3-tiny" / f, out / f)
print("wrote", out, sum(p.numel() for p in model.parameters()) / 1e6, "M params")
