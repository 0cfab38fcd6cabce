#!/usr/bin/env python3
"""Make the fixture zoo: a shared byte-level BPE tokenizer and one small model
per architecture the engine supports, built with transformers' own config and
model classes, then trained briefly so their predictions have real margins.

The tokenizer is scripts/make_tokenizer.py's. Training text: the docstrings of
a fixed list of CPython standard-library modules (PSF License 2.0), read from
the installed Python, plus a few ChatML exchanges; no downloads.

    /work/pyenv/bin/python scripts/make_fixtures.py [--only NAME] [--seconds 120]
    (llama-wide was trained with --only llama-wide --seconds 240)

Weights are committed (training is not bit-reproducible across machines);
everything downstream of them (GGUF conversions, references) is regenerated
from the committed weights by scripts/regenerate.sh.
"""
import argparse
import json
import pathlib
import statistics
import sys
import time

import torch
import transformers
from tokenizers import Tokenizer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_tokenizer import CHATS, FIX, chat_text, corpus, save_tokenizer, shared_tokenizer  # noqa: F401

# The prompts every reference is made on (dump_hf.py imports these).
LONG_PROMPT = ("Return a new list containing all items from the iterable in ascending order. "
               "A custom key function can be supplied to customize the sort order, and the reverse "
               "flag can be set to request the result in descending order.")
CHAT_PROMPT = "What does the heapq module provide?"


def fixtures(vocab: int):
    small = dict(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512,
                 rms_norm_eps=1e-6, bos_token_id=None, eos_token_id=2, pad_token_id=0)
    c = transformers
    return {
        "llama-tiny": (c.LlamaConfig, c.LlamaForCausalLM, dict(small, tie_word_embeddings=False,
            rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
        "mistral-tiny": (c.MistralConfig, c.MistralForCausalLM, dict(small, tie_word_embeddings=False, sliding_window=16,
            head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
        "qwen2-tiny": (c.Qwen2Config, c.Qwen2ForCausalLM, dict(small, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
        "qwen3-tiny": (c.Qwen3Config, c.Qwen3ForCausalLM, dict(small, tie_word_embeddings=True, head_dim=32,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
        "qwen3moe-tiny": (c.Qwen3MoeConfig, c.Qwen3MoeForCausalLM, dict(small, tie_word_embeddings=False, head_dim=32,
            num_experts=8, num_experts_per_tok=2, moe_intermediate_size=64, norm_topk_prob=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
        "qwen3moe-norenorm-tiny": (c.Qwen3MoeConfig, c.Qwen3MoeForCausalLM, dict(small, tie_word_embeddings=False, head_dim=32,
            num_experts=8, num_experts_per_tok=2, moe_intermediate_size=64, norm_topk_prob=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
        "llama-wide": (c.LlamaConfig, c.LlamaForCausalLM, dict(small, hidden_size=256, intermediate_size=512,
            tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    }


def reference_prompts(tok: Tokenizer):
    chat = f"<|im_start|>user\n{CHAT_PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    return [tok.encode(LONG_PROMPT).ids, tok.encode(chat).ids]


@torch.no_grad()
def margin(model, prompts) -> float:
    gaps = []
    for ids in prompts:
        logits = model(torch.tensor([ids])).logits[0]
        top2 = torch.topk(logits, 2, dim=-1).values
        gaps.extend((top2[:, 0] - top2[:, 1]).tolist())
    return statistics.median(gaps)


def train(model, ids: torch.Tensor, prompts, seconds: float, seq: int = 64, batch: int = 16):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    start, step, m = time.time(), 0, 0.0
    model.train()
    while time.time() - start < seconds:
        idx = torch.randint(0, len(ids) - seq - 1, (batch,), generator=g)
        x = torch.stack([ids[i:i + seq] for i in idx])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            model.eval()
            m = margin(model, prompts)
            model.train()
            if m >= 1.5 and step >= 300:
                break
    model.eval()
    return step, time.time() - start, float(loss), margin(model, prompts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", action="append")
    ap.add_argument("--seconds", type=float, default=120)
    args = ap.parse_args()
    torch.manual_seed(101)
    torch.set_num_threads(2)
    text = corpus()  # docstrings + ChatML exchanges (scripts/make_tokenizer.py)
    tok = shared_tokenizer(text)
    ids = torch.tensor(tok.encode(text).ids)
    prompts = reference_prompts(tok)
    report = json.loads((FIX / "training.json").read_text()) if (FIX / "training.json").exists() else {}
    for name, (cfg_cls, model_cls, kw) in fixtures(tok.get_vocab_size()).items():
        if args.only and name not in args.only:
            continue
        torch.manual_seed(101)
        cfg = cfg_cls(**kw)
        cfg._attn_implementation = "eager"
        model = model_cls(cfg).float()
        steps, secs, loss, m = train(model, ids, prompts, args.seconds)
        out = FIX / name
        out.mkdir(exist_ok=True)
        shard = "200KB" if name == "llama-wide" else "1GB"
        model.save_pretrained(out, max_shard_size=shard)
        save_tokenizer(tok, out)
        report[name] = {"steps": steps, "seconds": round(secs, 1), "final_loss": round(loss, 3), "median_top2_margin": round(m, 3),
                        "params": sum(p.numel() for p in model.parameters())}
        print(name, report[name], flush=True)
    (FIX / "training.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
