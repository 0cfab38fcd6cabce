#!/usr/bin/env python3
"""Record what transformers computes on a fixture, stage by stage, as a
parity-trace/1 directory (SPEC §1-2).

Every canonical stage is captured with forward hooks on the model's own
modules, plus a wrapper around the modeling module's apply_rotary_pos_emb for
q_rope/k_rope. The prompt is run as one prefill call, then each greedy decode
step is its own forward call through the KV cache; rows are concatenated and
`batches` says which call made which rows. transformers' own generate() must
pick the same next tokens (recorded as producer.generate_agrees).

    python scripts/dump_hf.py --model fixtures/qwen3-tiny --prompt long --dtype f32 --out reference/qwen3-tiny/hf-f32-long
    python scripts/dump_hf.py --model fixtures/llama-wide --prompt long --layers 1 --like reference/llama-wide/hf-f32-long --out reference/llama-wide/hf-f32-long-L1
"""
import argparse
import hashlib
import importlib
import json
import os
import pathlib
import shlex
import sys

import numpy as np
import torch
import transformers
import yaml
from safetensors import safe_open

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_fixtures import CHAT_PROMPT, LONG_PROMPT  # noqa: E402

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_sha(model_dir: pathlib.Path):
    """sha256 of model.safetensors, or for a sharded folder of the sorted lines
    "<shard name> <sha256>\n". None when some shard is absent (a partial-depth
    run on a folder holding only the shards it needs): the SPEC's hash is over
    every shard, so it cannot be given then."""
    idx = model_dir / "model.safetensors.index.json"
    if not idx.exists():
        return sha256_file(model_dir / "model.safetensors")
    shards = sorted(set(json.loads(idx.read_text())["weight_map"].values()))
    if not all((model_dir / s).exists() for s in shards):
        return None
    lines = "".join(f"{s} {sha256_file(model_dir / s)}\n" for s in shards)
    return hashlib.sha256(lines.encode()).hexdigest()


def load_partial(model_dir: pathlib.Path, k: int, dtype):
    """Build the model with its first k layers only and read only their tensors
    (and the embedding and final norm) from the (sharded) safetensors, opening
    only the shards the index names for them. The modules are made on the meta
    device, so nothing is allocated but what is read; the output head is never
    read (a partial trace has no logits) and stays on meta."""
    cfg = transformers.AutoConfig.from_pretrained(model_dir)
    cfg.num_hidden_layers = k
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:k]
    cfg._attn_implementation = "eager"
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    # Non-persistent buffers (the rotary inv_freq) are not in the checkpoint: rebuild that module for real.
    with torch.device("cpu"):
        model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config)
    want = {n for n in model.state_dict().keys() if not n.startswith("lm_head.")}
    idx = model_dir / "model.safetensors.index.json"
    wmap = json.loads(idx.read_text())["weight_map"] if idx.exists() else None
    if wmap is None:
        with safe_open(model_dir / "model.safetensors", framework="pt") as sf:
            wmap = {n: "model.safetensors" for n in sf.keys()}
    n_exp = getattr(cfg, "num_experts", None) or getattr(cfg, "num_local_experts", 0)
    sources = {n: expert_sources(n, n_exp) if n not in wmap else [n] for n in want}
    missing = sorted(n for n, src in sources.items() if any(x not in wmap for x in src))
    if missing:
        raise SystemExit(f"partial load: not in the checkpoint {missing[:5]}")
    needed_files = sorted({wmap[x] for src in sources.values() for x in src})
    # safe_open maps each shard; tensors are read one parameter at a time, so the
    # peak is the loaded weights plus one parameter's per-expert pieces.
    handles = {f: safe_open(model_dir / f, framework="pt") for f in needed_files}
    state = {}
    for n in sorted(sources):
        parts = [handles[wmap[x]].get_tensor(x).to(dtype) for x in sources[n]]
        state[n] = parts[0] if sources[n] == [n] else merge_experts(n, parts)
    del handles
    model.load_state_dict(state, strict=False, assign=True)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers())
            if t.is_meta and not n.startswith("lm_head.")]
    if left:
        raise SystemExit(f"partial load: not materialised {left[:5]}")
    return model.eval(), needed_files


def expert_sources(name, n_exp):
    """Checkpoint tensors behind one fused expert parameter of transformers 5.x MoE
    modules (conversion_mapping.py, "qwen2_moe" family): gate_up_proj [E, 2I, H] is
    the per-expert gate_proj and up_proj weights stacked over experts and
    concatenated gate-first; down_proj [E, H, I] is the stacked down_proj weights."""
    base, _, leaf = name.rpartition(".")
    if leaf == "gate_up_proj":
        return [f"{base}.{e}.gate_proj.weight" for e in range(n_exp)] + [f"{base}.{e}.up_proj.weight" for e in range(n_exp)]
    if leaf == "down_proj":
        return [f"{base}.{e}.down_proj.weight" for e in range(n_exp)]
    return [name]


def merge_experts(name, tensors):
    if name.endswith(".gate_up_proj"):
        e = len(tensors) // 2
        return torch.cat([torch.stack(tensors[:e]), torch.stack(tensors[e:])], dim=1)
    return torch.stack(tensors)


class Recorder:
    """Collects per-call stage tensors as numpy arrays with rows first."""

    def __init__(self):
        self.calls = []  # one dict per forward call
        self.cur = None
        self.layer = None

    def put(self, name, t):
        a = t.detach()
        self.cur[name] = a.float().numpy() if a.dtype != torch.int64 else a.numpy()


def install_hooks(model, rec: Recorder, n_heads, n_kv, head_dim, partial=False):
    base = model.model
    mod = importlib.import_module(type(model).__module__)
    hooks = []

    def h(name, fn=lambda x: x, use_input=False):
        def hook(_m, inputs, output):
            t = inputs[0] if use_input else (output[0] if isinstance(output, tuple) else output)
            rec.put(name(), fn(t))
        return hook

    T = lambda x: x.reshape(-1, *x.shape[2:]) if x.dim() > 2 else x  # [B=1, T, ...] -> [T, ...]
    hooks.append(base.embed_tokens.register_forward_hook(h(lambda: "embed", T)))
    for i, layer in enumerate(base.layers):
        L = lambda s, i=i: f"L{i}.{s}"
        hooks.append(layer.register_forward_pre_hook(lambda _m, _a, i=i: setattr(rec, "layer", i)))
        a = layer.self_attn
        hooks.append(layer.input_layernorm.register_forward_hook(h(lambda L=L: L("attn_norm"), T)))
        hooks.append(a.q_proj.register_forward_hook(h(lambda L=L: L("q"), lambda x: T(x).reshape(-1, n_heads, head_dim))))
        hooks.append(a.k_proj.register_forward_hook(h(lambda L=L: L("k"), lambda x: T(x).reshape(-1, n_kv, head_dim))))
        hooks.append(a.v_proj.register_forward_hook(h(lambda L=L: L("v"), lambda x: T(x).reshape(-1, n_kv, head_dim))))
        if hasattr(a, "q_norm"):
            hooks.append(a.q_norm.register_forward_hook(h(lambda L=L: L("q_norm"), lambda x: T(x).reshape(-1, n_heads, head_dim))))
            hooks.append(a.k_norm.register_forward_hook(h(lambda L=L: L("k_norm"), lambda x: T(x).reshape(-1, n_kv, head_dim))))
        hooks.append(a.o_proj.register_forward_hook(h(lambda L=L: L("attn"), T, use_input=True)))
        hooks.append(a.o_proj.register_forward_hook(h(lambda L=L: L("attn_out"), T)))
        hooks.append(layer.post_attention_layernorm.register_forward_hook(h(lambda L=L: L("attn_resid"), T, use_input=True)))
        hooks.append(layer.post_attention_layernorm.register_forward_hook(h(lambda L=L: L("ffn_norm"), T)))
        if hasattr(layer.mlp, "gate") and hasattr(layer.mlp, "experts"):
            def router_hook(_m, _inp, out, L=L):
                logits, scores, idx = out
                rec.put(L("router_logits"), logits)
                rec.put(L("expert_weights"), scores.float())
                rec.put(L("expert_ids"), idx.to(torch.int64))
            hooks.append(layer.mlp.gate.register_forward_hook(router_hook))
        hooks.append(layer.mlp.register_forward_hook(h(lambda L=L: L("ffn_out"), T)))
        hooks.append(layer.register_forward_hook(h(lambda L=L: L("out"), T)))
    if hasattr(base, "norm") and not partial:  # a partial-depth trace has no final_norm (its norm would see layer K's output)
        hooks.append(base.norm.register_forward_hook(h(lambda: "final_norm", T)))

    # q_rope / k_rope: wrap the modeling module's apply_rotary_pos_emb ([B, H, T, hd] in and out).
    orig = mod.apply_rotary_pos_emb

    def wrapped(q, k, cos, sin, *args, **kw):
        qe, ke = orig(q, k, cos, sin, *args, **kw)
        rec.put(f"L{rec.layer}.q_rope", qe[0].transpose(0, 1))
        rec.put(f"L{rec.layer}.k_rope", ke[0].transpose(0, 1))
        return qe, ke

    mod.apply_rotary_pos_emb = wrapped
    return hooks


def _norm_rope(orig):
    """RoPE with NORM pairing (2i, 2i+1) on half-split heads: the Qwen3 <|im_end|> bug."""
    def apply(q, k, cos, sin, unsqueeze_dim=1, **_):
        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        half = cos.shape[-1] // 2
        c = cos[..., :half].repeat_interleave(2, dim=-1)
        s = sin[..., :half].repeat_interleave(2, dim=-1)
        def rot(x):
            x2 = x.reshape(*x.shape[:-1], half, 2)
            return torch.stack((-x2[..., 1], x2[..., 0]), dim=-1).reshape(x.shape)
        return q * c + rot(q) * s, k * c + rot(k) * s
    return apply


def _theta(model, theta):
    """inv_freq rebuilt with another base: a rope theta that fell back to a default."""
    re = model.model.rotary_emb
    dim = re.inv_freq.shape[0] * 2
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    re.inv_freq.copy_(inv)
    if hasattr(re, "original_inv_freq"):
        re.original_inv_freq = inv.clone()


def _eps_outside(model):
    """Every RMSNorm computes x / (sqrt(mean(x^2)) + eps)."""
    for m in model.modules():
        if type(m).__name__.endswith("RMSNorm"):
            def fwd(x, m=m):
                xf = x.float()
                y = xf / (xf.pow(2).mean(-1, keepdim=True).sqrt() + m.variance_epsilon)
                return m.weight * y.to(x.dtype)
            m.forward = fwd


def _no_qk_norm(model):
    for layer in model.model.layers:
        layer.self_attn.q_norm.forward = lambda x: x
        layer.self_attn.k_norm.forward = lambda x: x


def _no_renorm(model):
    for layer in model.model.layers:
        layer.mlp.gate.norm_topk_prob = False


MUTATIONS = {
    "norm_rope": "module:apply_rotary_pos_emb",
    "theta_1e4": "model",
    "eps_outside": "model",
    "no_qk_norm": "model",
    "no_renorm": "model",
}


def mutate(model, name):
    mod = importlib.import_module(type(model).__module__)
    if name == "norm_rope":
        mod.apply_rotary_pos_emb = _norm_rope(mod.apply_rotary_pos_emb)
    elif name == "theta_1e4":
        _theta(model, 10000.0)
    elif name == "eps_outside":
        _eps_outside(model)
    elif name == "no_qk_norm":
        _no_qk_norm(model)
    elif name == "no_renorm":
        _no_renorm(model)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", choices=["long", "chat"], required=True)
    ap.add_argument("--dtype", choices=list(DTYPES), default="f32")
    ap.add_argument("--decode", type=int, default=3, help="greedy decode steps after the prefill")
    ap.add_argument("--layers", type=int, help="partial depth: only the first K layers")
    ap.add_argument("--out", required=True)
    ap.add_argument("--like", help="replay this trace's tokens and batch split instead of choosing tokens greedily")
    ap.add_argument("--mutate", choices=sorted(MUTATIONS), help="patch the model's own code with a known bug (bisect's proof set)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model_dir = pathlib.Path(args.model).resolve()
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dtype = DTYPES[args.dtype]
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    if args.prompt == "long":
        ids = tok(LONG_PROMPT, add_special_tokens=False)["input_ids"]
    else:
        text = tok.apply_chat_template([{"role": "user", "content": CHAT_PROMPT}], tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]

    shards_read = None
    if args.layers:
        model, shards_read = load_partial(model_dir, args.layers, dtype)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="eager").eval()
    cfg = model.config
    if args.mutate:
        mutate(model, args.mutate)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rec = Recorder()
    partial = bool(args.layers)
    install_hooks(model, rec, cfg.num_attention_heads, cfg.num_key_value_heads, head_dim, partial)

    tokens = list(ids)
    batches = []
    replay = None
    if args.like:
        like = yaml.safe_load((pathlib.Path(args.like) / "trace.yaml").read_text())
        replay = like["batches"]
        tokens = list(like["tokens"][: replay[0][1]])
        ids = tokens
        args.decode = len(replay) - 1
    cache = transformers.DynamicCache(config=cfg)
    with torch.no_grad():
        feed = ids
        for step in range(args.decode + 1):
            start = len(tokens) - len(feed)
            rec.cur = {}
            if partial:
                o = model.model(input_ids=torch.tensor([feed]), past_key_values=cache, use_cache=True)
            else:
                o = model(input_ids=torch.tensor([feed]), past_key_values=cache, use_cache=True)
                rec.put("logits", o.logits[0])
            rec.calls.append(rec.cur)
            batches.append([start, len(tokens)])
            if step == args.decode:
                break
            if replay:
                a, b = replay[step + 1]
                feed = list(like["tokens"][a:b])
                tokens.extend(feed)
                continue
            if partial:
                break  # no logits to choose a token from (use --like to replay a full trace's decode steps)
            nxt = int(o.logits[0, -1].float().argmax())
            tokens.append(nxt)
            feed = [nxt]
        gen_agrees = None
        rec.cur = {}  # the hooks stay installed: let generate() write into a throwaway dict
        if not partial and not replay:
            g = model.generate(torch.tensor([ids]), max_new_tokens=args.decode, do_sample=False, pad_token_id=tok.pad_token_id)
            # generate() stops early at an end-of-sequence token; compare what it made.
            made = g[0, len(ids):].tolist()
            gen_agrees = made == tokens[len(ids):len(ids) + len(made)]
            if not gen_agrees:
                print("warning: generate() chose", g[0, len(ids):].tolist(), "the decode rows used", tokens[len(ids):], file=sys.stderr)

    # Concatenate calls along T and write the stages.
    names = list(rec.calls[0].keys())
    stages = {}
    for name in names:
        arr = np.concatenate([c[name] for c in rec.calls], axis=0)
        if arr.dtype == np.int64:
            arr = arr.astype(np.int32)
            dt = "i32"
        elif name.endswith(".expert_weights"):
            # SPEC: f32 mixing weights; in bf16/f16 the model cast them to that dtype, widened exactly here
            arr = arr.astype("<f4")
            dt = "f32"
        elif args.dtype == "bf16":
            # numpy has no bfloat16: store the bit patterns as <u2 (values are exact bf16)
            arr = torch.from_numpy(arr).to(torch.bfloat16).view(torch.uint16).numpy().astype("<u2")
            dt = "bf16"
        elif args.dtype == "f16":
            arr = arr.astype("<f2")
            dt = "f16"
        else:
            arr = arr.astype("<f4")
            dt = "f32"
        np.save(out / f"{name}.npy", np.ascontiguousarray(arr))
        stages[name] = {"file": f"{name}.npy", "shape": list(arr.shape), "dtype": dt}
    manifest = {
        "format": "parity-trace/1",
        "producer": {"kind": "hf", "name": "transformers", "version": transformers.__version__,
                     **({"mutation": args.mutate} if args.mutate else {}),
                     "torch": str(torch.__version__),
                     "command": "scripts/dump_hf.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                     **({"generate_agrees": gen_agrees} if gen_agrees is not None else {})},
        "model": {"path": os.path.relpath(model_dir, out), "sha256": model_sha(model_dir), "arch": cfg.model_type, "dtype": args.dtype,
                  **({"shards_read": shards_read} if shards_read else {})},
        "settings": {"attn_implementation": "eager", "kv_cache_dtype": args.dtype, "threads": 2},
        "tokens": tokens,
        "positions": None,
        "batches": batches,
        "layers": args.layers,
        "qk_layout": "halfsplit",
        "qk_unpermuted": False,
        "stages": stages,
    }
    (out / "trace.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False, width=120))
    print(f"{out}: {len(tokens)} rows, {len(stages)} stages, batches {batches}, generate agrees: {gen_agrees}")


if __name__ == "__main__":
    main()
