#!/usr/bin/env python3
"""Golden RoPE vectors computed by transformers' own code (5.23): the
ROPE_INIT_FUNCTIONS for each scaling rule, cos/sin built as the rotary
embedding modules build them (fp32, cat(freqs, freqs), times the attention
factor), and apply_rotary_pos_emb / rotate_half applied to random heads.
Partial rotary follows modeling_phi (rotate the leading rotary_dim dims, pass
the rest); proportional follows Gemma 4 (zero frequencies past the rotated
pairs, rotate_half over the whole head).

    python scripts/rope_golden.py    ->  tests/data/rope/hf/<case>.{x,y}.npy + cases.yaml
                                         reference/golden/rope/<case>.{x,y}.npy + cases.yaml

The second set covers the sequence-length-dependent rules (dynamic NTK,
LongRoPE) and more head sizes/positions. Its cos/sin come from calling
transformers' LlamaRotaryEmbedding module itself (forward with position_ids,
so the dynamic/longrope frequency updates of modeling_rope_utils run as they
do in a model); each case records the seq_len those updates saw
(max(position)+1 of the one call), the inv_freq and attention factor used.
x/y are [T, H, hd] (rows = positions), float32.
"""
import pathlib

import numpy as np
import torch
import transformers
import yaml
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.phi.modeling_phi import apply_rotary_pos_emb

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "rope" / "hf"
OUT2 = ROOT / "reference" / "golden" / "rope"
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
    # yarn, v5 semantics: attention factor from the mscale ratio, correction range not truncated, own betas
    ("yarn-mscale-notrunc-hd64", 64, 1e6, {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096,
                                           "mscale": 1.0, "mscale_all_dim": 0.707, "truncate": False,
                                           "beta_fast": 24.0, "beta_slow": 2.0}, None),
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


# name, head_dim, theta, max_position_embeddings, rope_parameters extras, positions
SHORT = list(range(10))
LONG = list(range(10)) + [1000, 5000]
CASES2 = [
    ("default-1e4-hd16", 16, 1e4, 512, {"rope_type": "default"}, LONG),
    ("default-1e6-hd32", 32, 1e6, 512, {"rope_type": "default"}, LONG),
    ("linear-f2-hd16", 16, 1e4, 512, {"rope_type": "linear", "factor": 2.0}, LONG),
    ("llama3-hd32", 32, 5e5, 8192, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 64}, LONG),
    ("yarn-f8-hd16", 16, 1e6, 4096, {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 512}, LONG),
    ("yarn-f4-beta-hd32", 32, 1e4, 2048, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512,
                                          "beta_fast": 16.0, "beta_slow": 2.0}, LONG),
    # dynamic NTK: within max_position_embeddings it is the default rule; past it the base grows with seq_len
    ("dynamic-f2-within-hd16", 16, 1e4, 512, {"rope_type": "dynamic", "factor": 2.0}, SHORT),
    ("dynamic-f2-beyond-hd16", 16, 1e4, 512, {"rope_type": "dynamic", "factor": 2.0}, LONG),
    ("dynamic-f4-beyond-hd32", 32, 1e6, 512, {"rope_type": "dynamic", "factor": 4.0}, LONG),
    # LongRoPE: short factors while seq_len <= original_max_position_embeddings, long factors past it
    ("longrope-short-hd16", 16, 1e4, 2048, {"rope_type": "longrope", "original_max_position_embeddings": 512,
                                            "short_factor": [1.0 + 0.05 * i for i in range(8)],
                                            "long_factor": [1.0 + 0.5 * i for i in range(8)]}, SHORT),
    ("longrope-long-hd16", 16, 1e4, 2048, {"rope_type": "longrope", "original_max_position_embeddings": 512,
                                           "short_factor": [1.0 + 0.05 * i for i in range(8)],
                                           "long_factor": [1.0 + 0.5 * i for i in range(8)]}, LONG),
]


def module_cases():
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_apply
    OUT2.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(11)
    manifest = []
    for name, hd, theta, maxpos, extra, positions in CASES2:
        cfg = transformers.LlamaConfig(hidden_size=hd * 2, num_attention_heads=2, num_key_value_heads=2, head_dim=hd,
                                       max_position_embeddings=maxpos, rope_parameters={"rope_theta": theta, **extra})
        rot = LlamaRotaryEmbedding(cfg)
        x = torch.randn(1, 2, len(positions), hd, generator=g)  # [B, H, T, hd]
        pos = torch.tensor([positions])
        cos, sin = rot(x, pos)
        y, _ = llama_apply(x, x, cos, sin)
        np.save(OUT2 / f"{name}.x.npy", x[0].transpose(0, 1).contiguous().numpy())  # [T, H, hd]
        np.save(OUT2 / f"{name}.y.npy", y[0].transpose(0, 1).contiguous().numpy())
        manifest.append({"name": name, "head_dim": hd, "heads": 2, "theta": theta, "max_position_embeddings": maxpos,
                         "rope_parameters": extra, "partial_layout": None, "positions": positions,
                         "seq_len": max(positions) + 1, "attention_factor": float(rot.attention_scaling),
                         "inv_freq": [float(v) for v in rot.inv_freq]})
    (OUT2 / "cases.yaml").write_text(yaml.safe_dump({
        "transformers": transformers.__version__, "torch": str(torch.__version__),
        "note": "cos/sin from LlamaRotaryEmbedding.forward (one call over all positions), y = apply_rotary_pos_emb(x); "
                "x, y are [T, H, hd] float32 with row t at positions[t]",
        "cases": manifest}, sort_keys=False))
    print("wrote", len(manifest), "cases to", OUT2)


# M-RoPE, from the rotary embedding modules of Qwen2-VL (sections) and Qwen3-VL
# (interleaved): position_ids (3, 1, T) with distinct t/h/w rows, cos/sin from
# the module's forward (its recomposition_frequencies), y = that model's
# apply_rotary_pos_emb. Sections are in pairs (they sum to head_dim/2).
MROPE_CASES = [
    # name, head_dim, theta, mrope_section, module
    ("mrope-sections-hd64", 64, 1e6, [8, 12, 12], "qwen2_vl"),
    ("mrope-sections-hd128", 128, 1e6, [16, 24, 24], "qwen2_vl"),
    ("mrope-interleaved-hd64", 64, 1e6, [12, 10, 10], "qwen3_vl"),
    ("mrope-interleaved-hd128", 128, 5e6, [24, 20, 20], "qwen3_vl"),
]
MROPE_T = list(range(8)) + [100, 1000, 4096, 30000]


def mrope_positions():
    t = MROPE_T
    h = [p // 2 + (i % 3) for i, p in enumerate(t)]     # distinct from t and from each other
    w = [p // 3 + 5 * (i % 2) for i, p in enumerate(t)]
    return [t, h, w]


def mrope_cases():
    import importlib
    g = torch.Generator().manual_seed(13)
    manifest = []
    pos3 = mrope_positions()
    for name, hd, theta, sections, module in MROPE_CASES:
        mod = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
        rp = {"rope_type": "default", "rope_theta": theta, "mrope_section": sections}
        if module == "qwen2_vl":
            cfg = transformers.Qwen2VLTextConfig(hidden_size=hd * 2, num_attention_heads=2, num_key_value_heads=2,
                                                 max_position_embeddings=32768, rope_parameters=rp)
            rot = mod.Qwen2VLRotaryEmbedding(cfg)
        else:
            rp["mrope_interleaved"] = True
            cfg = transformers.Qwen3VLTextConfig(hidden_size=hd * 2, num_attention_heads=2, num_key_value_heads=2, head_dim=hd,
                                                 max_position_embeddings=32768, rope_parameters=rp)
            rot = mod.Qwen3VLTextRotaryEmbedding(cfg)
        x = torch.randn(1, 2, len(MROPE_T), hd, generator=g)  # [B, H, T, hd]
        cos, sin = rot(x, torch.tensor(pos3)[:, None, :])
        y, _ = mod.apply_rotary_pos_emb(x, x, cos, sin)
        np.save(OUT / f"{name}.x.npy", x[0].transpose(0, 1).contiguous().numpy())  # [T, H, hd]
        np.save(OUT / f"{name}.y.npy", y[0].transpose(0, 1).contiguous().numpy())
        manifest.append({"name": name, "head_dim": hd, "heads": 2, "theta": theta, "mrope_section": sections,
                         "interleaved": module == "qwen3_vl", "module": f"{module}.{type(rot).__name__}",
                         "positions_thw": pos3})
    (OUT / "mrope.yaml").write_text(yaml.safe_dump({
        "transformers": transformers.__version__, "torch": str(torch.__version__),
        "note": "x, y are [T, H, hd] float32; row t at positions_thw[0][t] (t), [1][t] (h), [2][t] (w)",
        "cases": manifest}, sort_keys=False))
    print("wrote", len(manifest), "cases to", OUT / "mrope.yaml")


if __name__ == "__main__":
    main()
    module_cases()
    mrope_cases()
