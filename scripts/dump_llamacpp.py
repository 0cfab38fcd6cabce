#!/usr/bin/env python3
"""Record what llama.cpp computes on a GGUF, stage by stage, as a
`parity-trace/1` directory (SPEC §1-2).

It runs parity-dump-llamacpp (scripts/dump_llamacpp.cpp, built by
scripts/build_llamacpp.sh), which feeds exact token ids (never tokenising),
one llama_decode call per batch, logits for every row, and writes every graph
node llama.cpp evaluates (name, op, shape, sources, values). This script then
picks, per layer, the node that holds each canonical stage. Names repeat in
llama.cpp's graph, so a node is chosen by name *and* op (and for the output
projection by its weight):

    embed        `embd` (last node of that name)
    attn_norm    `attn_norm-i` (the MUL by the norm weight)
    q / k / v    `Qcur-i` / `Kcur-i` / `Vcur-i` op RESHAPE  (after any bias; before norm and RoPE)
    q_norm/k_norm `Qcur_normed-i` / `Kcur_normed-i`
    q_rope/k_rope `Qcur-i` / `Kcur-i` op ROPE
    attn         `kqv_out-i`
    attn_out     `attn_out-i` if the model names it (llama), else the MUL_MAT on
                 `blk.i.attn_output.weight` (+ its bias ADD, if any)
    attn_resid   `ffn_inp-i`      ffn_norm  `ffn_norm-i`
    router_logits `ffn_moe_logits-i`   expert_ids `ffn_moe_topk-i` (argsort, descending)
    expert_weights last of `ffn_moe_weights{,_softmax,_norm,_scaled}-i`
    ffn_out      last `ffn_out-i`, else `ffn_moe_out-i`      out  `l_out-i`
    final_norm   `result_norm`    logits  llama_get_logits_ith of every row

ggml's ne0 is innermost, so a [hd, H, T] node is [T, H, hd] here. For GGUF
archs whose Q/K rows convert_hf_to_gguf permutes for NORM (interleaved) RoPE
(`llama`: Llama and Mistral checkpoints), q/k/q_norm/k_norm/q_rope/k_rope are
mapped back to the transformers half-split layout and the manifest says
`qk_unpermuted: true`.

    python scripts/dump_llamacpp.py --gguf fixtures/qwen3-tiny/gguf/qwen3-tiny.f32.gguf \\
        --like reference/qwen3-tiny/hf-f32-long --out reference/qwen3-tiny/llamacpp-f32-long \\
        --kv-type f32 --flash-attn off --threads 2

Without --kv-type / --flash-attn llama.cpp's own defaults apply (f16 KV cache,
flash attention "auto"); the manifest records the effective values (flash
attention counts as on when a FLASH_ATTN_EXT node was evaluated).
"""
import argparse
import hashlib
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import yaml

DEFAULT_TREE = os.environ.get("TREE", "/work/llama-src/llama_cpp_python-0.3.36/vendor/llama.cpp")
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
# GGUF archs whose q_proj/k_proj rows the converter permutes (LlamaModel.undo_permute = True).
PERMUTED_ARCHS = {"llama"}
# GGUF arch -> transformers model_type, when no reference trace says otherwise.
HF_ARCH = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen3moe": "qwen3_moe", "qwen2moe": "qwen2_moe"}
HEADED = {"q", "k", "v", "q_norm", "k_norm", "q_rope", "k_rope"}
PERMUTED_STAGES = {"q", "k", "q_norm", "k_norm", "q_rope", "k_rope"}
STAGE_ORDER = ["attn_norm", "q", "k", "v", "q_norm", "k_norm", "q_rope", "k_rope", "attn", "attn_out",
               "attn_resid", "ffn_norm", "router_logits", "expert_ids", "expert_weights", "ffn_out", "out"]


# --------------------------------------------------------------------------- reading the dump

def read_call(tmp, c):
    """Nodes of call c, in execution order, each with its values as a numpy
    array in numpy order (ggml ne reversed: [ne3, ne2, ne1, ne0])."""
    f32 = np.fromfile(f"{tmp}/call{c}.bin", dtype="<f4")
    i32 = f32.view("<i4")
    nodes = []
    for line in pathlib.Path(f"{tmp}/call{c}.tsv").read_text().splitlines():
        f = line.split("\t")
        ne = [int(x) for x in f[4:8]]
        kind, off = f[8], int(f[9])
        data = None
        if kind != "none":
            n = ne[0] * ne[1] * ne[2] * ne[3]
            src = i32 if kind == "i32" else f32
            data = src[off:off + n].reshape(ne[3], ne[2], ne[1], ne[0]).copy()
        nodes.append({"seq": int(f[0]), "name": f[1], "op": f[2], "type": f[3], "ne": ne, "id": f[10],
                      "src": f[11:14], "src0name": f[14], "src1name": f[15], "data": data})
    return nodes


def as_rows(a, stage):
    """A node's values as [T, ...]: [hd, H, T] -> [T, H, hd]; [d, T] -> [T, d];
    MoE [k, T] / [1, k, T] -> [T, k]."""
    if stage in HEADED:
        if a.shape[0] != 1:
            raise ValueError(f"{stage}: node of shape {a.shape} is not [1, T, H, hd]")
        return a[0]
    lead = [x for x in a.shape[:-1] if x != 1]
    if stage == "expert_weights" and a.shape[-1] == 1:  # ffn_moe_weights is [1, k, T]
        a = a[..., 0]
    if stage in ("expert_ids", "expert_weights", "router_logits"):
        return a.reshape(-1, a.shape[-1])
    if len(lead) > 1:
        raise ValueError(f"{stage}: node of shape {a.shape} has more than 2 dimensions")
    return a.reshape(-1, a.shape[-1])


def unpermute(a):
    """[T, H, hd] in the converter's permuted row order -> transformers half-split.
    The converter moved HF row s*hd/2 + j (s in {0, 1}) to row 2j + s."""
    t, h, hd = a.shape
    return a.reshape(t, h, hd // 2, 2).swapaxes(-1, -2).reshape(t, h, hd)


def pick_stages(nodes, n_layers):
    """Canonical stage -> numpy array for one call."""
    by_id = {n["id"]: n for n in nodes}

    def last(name, op=None):
        hit = [n for n in nodes if n["name"] == name and (op is None or n["op"] == op) and n["data"] is not None]
        return hit[-1] if hit else None

    def first(name, op=None):
        hit = [n for n in nodes if n["name"] == name and (op is None or n["op"] == op) and n["data"] is not None]
        return hit[0] if hit else None

    out = {"embed": last("embd")}
    for i in range(n_layers):
        s = {}
        s["attn_norm"] = last(f"attn_norm-{i}")
        for x, nm in (("q", "Qcur"), ("k", "Kcur"), ("v", "Vcur")):
            s[x] = first(f"{nm}-{i}", "RESHAPE")
            if x != "v":
                s[f"{x}_norm"] = last(f"{nm}_normed-{i}")
                s[f"{x}_rope"] = last(f"{nm}-{i}", "ROPE")
        s["attn"] = last(f"kqv_out-{i}")
        ao = last(f"attn_out-{i}")
        if ao is None:
            mm = [n for n in nodes if n["op"] == "MUL_MAT" and n["src0name"] == f"blk.{i}.attn_output.weight"]
            if mm:
                ao = mm[0]
                bias = [n for n in nodes if n["op"] == "ADD" and n["src"][0] == ao["id"]
                        and n["src1name"] == f"blk.{i}.attn_output.bias"]
                ao = bias[0] if bias else ao
        s["attn_out"] = ao
        s["attn_resid"] = last(f"ffn_inp-{i}")
        s["ffn_norm"] = last(f"ffn_norm-{i}")
        s["router_logits"] = last(f"ffn_moe_logits-{i}")
        s["expert_ids"] = last(f"ffn_moe_topk-{i}")
        w = [last(f"ffn_moe_weights{suf}-{i}") for suf in ("", "_softmax", "_norm", "_scaled")]
        w = [n for n in w if n is not None]
        s["expert_weights"] = max(w, key=lambda n: n["seq"]) if w else None
        s["ffn_out"] = last(f"ffn_out-{i}") or last(f"ffn_moe_out-{i}")
        s["out"] = last(f"l_out-{i}")
        for k in STAGE_ORDER:
            if s.get(k) is not None:
                out[f"L{i}.{k}"] = s[k]
    out["final_norm"] = last("result_norm")
    del by_id
    return {k: v for k, v in out.items() if v is not None}


# --------------------------------------------------------------------------- GGUF metadata

def gguf_meta(tree, path):
    sys.path.insert(0, f"{tree}/gguf-py")
    import gguf  # the tree's own gguf-py

    r = gguf.GGUFReader(path)

    def field(k):
        return r.fields[k].contents() if k in r.fields else None

    arch = field("general.architecture")
    ft = field("general.file_type")
    if ft is None:
        dtype = "f32"
    else:
        name = gguf.LlamaFileType(int(ft)).name  # ALL_F32, MOSTLY_F16, MOSTLY_Q8_0, MOSTLY_Q4_K_M, ...
        dtype = name.split("_", 1)[1].lower()
    return {"arch": arch, "n_layers": int(field(f"{arch}.block_count")), "dtype": dtype}


def tree_version(tree):
    commit = None
    bi = pathlib.Path(tree, "build/common/build-info.cpp")
    if bi.exists():
        m = re.search(r'LLAMA_COMMIT = "([^"]+)"', bi.read_text())
        commit = m.group(1) if m and m.group(1) != "unknown" else None
    v = f"llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}"
    return f"{v} (vendored llama.cpp, commit {commit})" if commit else f"{v} (vendored llama.cpp)"


def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- main

def stage_key(name):
    if name == "embed":
        return (0, 0, 0)
    if name == "final_norm":
        return (2, 0, 0)
    if name == "logits":
        return (3, 0, 0)
    layer, st = name[1:].split(".", 1)
    return (1, int(layer), STAGE_ORDER.index(st) if st in STAGE_ORDER else 99)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True, help="trace directory to (re)write")
    ap.add_argument("--like", help="trace whose tokens and batches are replayed (e.g. reference/<f>/hf-f32-long)")
    ap.add_argument("--tokens", help="comma-separated token ids (instead of --like)")
    ap.add_argument("--batches", help="call split, e.g. 0:12,12:13,13:14 (instead of --like)")
    ap.add_argument("--kv-type", default="default", choices=["f32", "f16", "default"])
    ap.add_argument("--flash-attn", default="default", choices=["on", "off", "auto", "default"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tree", default=DEFAULT_TREE, help="llama.cpp tree built by scripts/build_llamacpp.sh")
    ap.add_argument("--binary", help="parity-dump-llamacpp (default TREE/build/bin/parity-dump-llamacpp)")
    ap.add_argument("--keep-raw", help="also keep the raw node dump in this directory")
    args = ap.parse_args()

    like = None
    if args.like:
        like = yaml.safe_load(pathlib.Path(args.like, "trace.yaml").read_text())
        tokens, batches = list(like["tokens"]), [list(b) for b in like["batches"]]
    else:
        if not (args.tokens and args.batches):
            ap.error("give --like or both --tokens and --batches")
        tokens = [int(t) for t in args.tokens.split(",")]
        batches = [[int(x) for x in b.split(":")] for b in args.batches.split(",")]
    meta = gguf_meta(args.tree, args.gguf)
    permuted = meta["arch"] in PERMUTED_ARCHS
    binary = args.binary or f"{args.tree}/build/bin/parity-dump-llamacpp"
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [binary, args.gguf, tmp, "--tokens", ",".join(map(str, tokens)),
               "--batches", ",".join(f"{a}:{b}" for a, b in batches),
               "--kv-type", args.kv_type, "--flash-attn", args.flash_attn, "--threads", str(args.threads)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"{' '.join(cmd[:3])} failed:\n{run.stderr[-3000:]}")
        info = dict(l.split(" ", 1) for l in pathlib.Path(tmp, "info.txt").read_text().splitlines())
        n_vocab = int(info["n_vocab"])
        per_stage = {}  # name -> list of (call rows (a, b), array)
        for c, (a, b) in enumerate(batches):
            picked = pick_stages(read_call(tmp, c), meta["n_layers"])
            picked_arrays = {}
            for name, node in picked.items():
                st = name.split(".")[-1]
                arr = as_rows(node["data"], st)
                if st in PERMUTED_STAGES and permuted:
                    arr = unpermute(arr)
                picked_arrays[name] = arr
            picked_arrays["logits"] = np.fromfile(f"{tmp}/logits{c}.bin", dtype="<f4").reshape(b - a, n_vocab)
            for name, arr in picked_arrays.items():
                per_stage.setdefault(name, []).append(((a, b), arr))
        if args.keep_raw:
            shutil.copytree(tmp, args.keep_raw, dirs_exist_ok=True)

    for old in out.glob("*.npy"):
        old.unlink()
    stages = {}
    total = batches[-1][1] - batches[0][0]
    for name in sorted(per_stage, key=stage_key):
        parts = per_stage[name]
        if len(parts) != len(batches):
            print(f"warning: {name} missing from some calls; skipped", file=sys.stderr)
            continue
        # A call that holds fewer rows than it computed keeps only its last rows
        # (llama.cpp's output rows); the whole stage must still be one row range.
        ranges = [((b - len(arr)), b) for (a, b), arr in parts]
        for (s0, e0), (s1, e1) in zip(ranges, ranges[1:]):
            if e0 != s1:
                sys.exit(f"{name}: rows {ranges} are not one contiguous range")
        arr = np.concatenate([arr for _, arr in parts], axis=0)
        if arr.dtype.kind == "i":
            arr, dt = arr.astype("<i4"), "i32"
        else:
            arr, dt = arr.astype("<f4"), "f32"
        np.save(out / f"{name}.npy", np.ascontiguousarray(arr))
        entry = {"file": f"{name}.npy", "shape": list(arr.shape), "dtype": dt}
        if arr.shape[0] != total:
            entry["rows"] = [ranges[0][0], ranges[-1][1]]
        stages[name] = entry

    hf_arch = (like or {}).get("model", {}).get("arch") if like and like.get("producer", {}).get("kind") == "hf" else None
    fa_eff = info["flash_attn_effective"] == "on"
    model_path = os.path.relpath(pathlib.Path(args.gguf).resolve(), out.resolve())
    argv = [a for a in sys.argv[1:]]
    manifest = {
        "format": "parity-trace/1",
        "producer": {
            "kind": "llamacpp", "name": "llama.cpp", "version": tree_version(args.tree),
            "command": "scripts/dump_llamacpp.py " + " ".join(shlex.quote(a) for a in argv),
        },
        "model": {"path": model_path, "sha256": sha256_file(args.gguf), "arch": hf_arch or HF_ARCH.get(meta["arch"], meta["arch"]),
                  "dtype": meta["dtype"], "gguf_arch": meta["arch"]},
        "settings": {
            "kv_cache_dtype": info["type_k"],
            "flash_attn": fa_eff,
            "threads": args.threads,
            "flash_attn_requested": args.flash_attn if args.flash_attn != "default" else "default (auto)",
            "kv_cache_requested": args.kv_type,
            "n_ctx": int(info["n_ctx"]),
            "cpu": info.get("system", "").strip(),
        },
        "tokens": tokens,
        "positions": None,
        "batches": batches,
        "layers": None,
        "qk_layout": "halfsplit",
        "qk_unpermuted": permuted,
        "stages": stages,
    }
    (out / "trace.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False, width=120))
    print(f"{out}: {total} rows, {len(stages)} stages (gguf {meta['arch']} {meta['dtype']}, "
          f"kv {info['type_k']}, flash attention {'on' if fa_eff else 'off'})")


if __name__ == "__main__":
    main()
