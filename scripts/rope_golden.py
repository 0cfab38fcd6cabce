#!/usr/bin/env python3
"""Golden RoPE vectors computed by transformers' own code (5.23): the
ROPE_INIT_FUNCTIONS for each scaling rule, cos/sin built as the rotary
embedding modules build them (fp32, cat(freqs, freqs), times the attention
factor), and apply_rotary_pos_emb / rotate_half applied to random heads.
Partial rotary follows modeling_phi (rotate the leading rotary_dim dims, pass
the rest); proportional follows Gemma 4 (zero frequencies past the rotated
pairs, rotate_half over the whole head).

    python scripts/rope_golden.py    ->  tests/data/rope/hf/<case>.{x,y}.npy + cases.yaml
"""
import pathlib

import numpy as np
import torch
import transformers
import yaml
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.phi.modeling_phi import apply_rotary_pos_emb

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "rope" / "hf"
POSITIONS = list(range(10)) + [100, 1000, 4096, 30000]

CASES = [
    # name, head_dim, theta, rope_parameters extras, partial layout
    ("default-1e4-hd16", 16, 1e4, {"rope_type": "default"}, None),
    ("default-1e6-hd64", 64, 1e6, {"rope_type": "default"}, None),
    ("default-1e6-hd128", 128, 1e6, {"rope_type": "default"}, None),
    ("linear-f4-hd32", 32, 1e4, {"rope_type": "linear", "factor": 4.0}, None),
    ("llama3-hd64", 64, 5e5, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}, None),
    ("yarn-f4-hd32", 32, 1e4, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}, None),
    ("partial-0.5-hd32", 32, 1e4, {"rope_type": "default", "partial_rotary_factor": 0.5}, "leading_block"),
    ("proportional-0.25-hd64", 64, 1e6, {"rope_type": "proportional", "partial_rotary_factor": 0.25}, "halfsplit_zero_pad"),
]


def inv_freq_for(hd, theta, extra):
    rp = {"rope_theta": theta, **extra}
    cfg = transformers.LlamaConfig(hidden_size=hd * 2, num_attention_heads=2, head_dim=hd,
                                   max_position_embeddings=512, rope_parameters=rp)
    kind = rp["rope_type"]
    if kind == "default" and "partial_rotary_factor" in rp:
        # Llama's initialiser ignores partial_rotary_factor; Phi's honours it.
        pcfg = transformers.PhiConfig(hidden_size=hd * 2, num_attention_heads=2, max_position_embeddings=512, rope_parameters=rp)
        return transformers.models.phi.modeling_phi.PhiRotaryEmbedding.compute_default_rope_parameters(pcfg)
    if kind == "default":
        return transformers.models.llama.modeling_llama.LlamaRotaryEmbedding.compute_default_rope_parameters(cfg)
    return ROPE_INIT_FUNCTIONS[kind](cfg, None)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    manifest = []
    for name, hd, theta, extra, layout in CASES:
        inv, attn = inv_freq_for(hd, theta, extra)
        pos = torch.tensor(POSITIONS, dtype=torch.float32)
        freqs = (inv[None, :, None].float() @ pos[None, None, :]).transpose(1, 2)  # [1, T, hd/2 or rd/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos() * attn, emb.sin() * attn
        x = torch.randn(1, 2, len(POSITIONS), hd, generator=g)  # [B, H, T, hd]
        if layout == "leading_block":
            rd = cos.shape[-1]
            y, _ = apply_rotary_pos_emb(x[..., :rd], x[..., :rd], cos, sin)
            y = torch.cat([y, x[..., rd:]], dim=-1)
        else:
            y, _ = apply_rotary_pos_emb(x, x, cos, sin)
        np.save(OUT / f"{name}.x.npy", x[0].transpose(0, 1).contiguous().numpy())  # [T, H, hd]
        np.save(OUT / f"{name}.y.npy", y[0].transpose(0, 1).contiguous().numpy())
        manifest.append({"name": name, "head_dim": hd, "heads": 2, "theta": theta, "rope_parameters": extra,
                         "partial_layout": layout, "positions": POSITIONS, "attention_factor": float(attn)})
    (OUT / "cases.yaml").write_text(yaml.safe_dump({"transformers": transformers.__version__, "torch": str(torch.__version__), "cases": manifest}, sort_keys=False))
    print("wrote", len(manifest), "cases to", OUT)


if __name__ == "__main__":
    main()
