#!/usr/bin/env python3
"""Record what llama.cpp computes on a GGUF, stage by stage, as a
parity-trace/1 directory, replaying the token ids and batch split of an
existing trace (never re-tokenising).

Runs scripts/dump_llamacpp.cpp (built by scripts/build_llamacpp.sh), which
writes every graph node llama.cpp evaluates, then maps nodes to canonical
stages by name, op and source weight (names repeat: `Qcur-0` is the
projection, its reshape and the RoPE output). For LLaMA-family GGUFs, whose
Q/K rows the converter permuted for NORM RoPE, q/k/q_rope/k_rope are mapped
back to the transformers half-split layout and the manifest says
`qk_unpermuted: true`.

    python scripts/dump_llamacpp.py --gguf fixtures/qwen3-tiny/gguf/qwen3-tiny.f32.gguf \
        --like reference/qwen3-tiny/hf-f32-long --out reference/qwen3-tiny/llamacpp-f32-long \
        --kv-type f32 --flash-attn off
"""
import argparse
import hashlib
import os
import pathlib
import shlex
import struct
import subprocess
import sys
import tempfile

import numpy as np
import yaml

DEFAULT_TREE = "/work/lead/src/llama_cpp_python-0.3.36/vendor/llama.cpp"
PERMUTED = {"llama"}  # GGUF archs whose Q/K rows convert_hf_to_gguf permutes
ARCH = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen3moe": "qwen3_moe"}
FILE_TYPES = {0: "f32", 1: "f16", 7: "q8_0", 15: "q4_k_m", 18: "q6_k", 32: "bf16"}


def read_nodes(path):
    b = pathlib.Path(path).read_bytes()
    i = 0
    nodes = []

    def s():
        nonlocal i
        n = struct.unpack_from("<I", b, i)[0]
        i += 4
        v = b[i:i + n].decode()
        i += n
        return v

    while i < len(b):
        name, op, src0, src1 = s(), s(), s(), s()
        kind = struct.unpack_from("<I", b, i)[0]
        i += 4
        ne = struct.unpack_from("<4q", b, i)
        i += 32
        n = ne[0] * ne[1] * ne[2] * ne[3]
        arr = np.frombuffer(b, dtype="<i4" if kind else "<f4", count=n, offset=i).copy()
        i += 4 * n
        # ggml ne[0] is innermost: numpy shape is ne reversed.
        nodes.append({"name": name, "op": op, "src0": src0, "src1": src1, "data": arr.reshape(ne[3], ne[2], ne[1], ne[0])})
    return nodes


THREE_D = {"q", "k", "v", "q_norm", "k_norm", "q_rope", "k_rope"}


def rows_first(a, rows, stage):
    """A 4-D node (ne reversed) as [T, ...]: ggml puts T in ne[2] for per-head
    tensors ([hd, H, T]) and in ne[1] for the rest ([d, T])."""
    if stage.split(".")[-1] in ("expert_ids", "expert_weights", "router_logits"):
        # [k, T] or [1, k, T] in ggml: T is the outermost non-unit axis either way.
        return a.reshape(rows, -1)
    nd = 3 if stage.split(".")[-1] in THREE_D else 2
    if any(x != 1 for x in a.shape[: 4 - nd]):
        raise SystemExit(f"{stage}: node of shape {a.shape} has more than {nd} dimensions")
    a = a.reshape(a.shape[4 - nd:])
    if a.shape[0] != rows:
        raise SystemExit(f"{stage}: node of shape {a.shape} does not start with {rows} rows")
    return a


def unpermute(a):
    """[T, H, hd] in llama.cpp's permuted (NORM) layout -> transformers half-split."""
    t, h, hd = a.shape
    return a.reshape(t, h, hd // 2, 2).swapaxes(-1, -2).reshape(t, h, hd)


def map_call(nodes, n_layers, rows, permuted):
    def find(pred):
        for nd in nodes:
            if pred(nd):
                return nd["data"]
        return None

    out = {}
    emb = find(lambda n: n["name"] == "embd" and n["op"] == "GET_ROWS")
    out["embed"] = rows_first(emb, rows, "embed")
    for i in range(n_layers):
        L = lambda s: f"L{i}.{s}"
        named = lambda nm, op=None: find(lambda n: n["name"] == nm and (op is None or n["op"] == op))
        picks = {
            "attn_norm": named(f"attn_norm-{i}", "MUL"),
            "q": named(f"Qcur-{i}", "RESHAPE"),
            "k": named(f"Kcur-{i}", "RESHAPE"),
            "v": named(f"Vcur-{i}", "RESHAPE"),
            "q_norm": named(f"Qcur_normed-{i}"),
            "k_norm": named(f"Kcur_normed-{i}"),
            "q_rope": named(f"Qcur-{i}", "ROPE"),
            "k_rope": named(f"Kcur-{i}", "ROPE"),
            "attn": named(f"kqv_out-{i}"),
            "attn_out": find(lambda n: n["op"] == "MUL_MAT" and n["src0"] == f"blk.{i}.attn_output.weight"),
            "attn_resid": named(f"ffn_inp-{i}"),
            "ffn_norm": named(f"ffn_norm-{i}", "MUL"),
            "router_logits": named(f"ffn_moe_logits-{i}"),
            "expert_ids": named(f"ffn_moe_topk-{i}"),
            "expert_weights": named(f"ffn_moe_weights_norm-{i}") if named(f"ffn_moe_weights_norm-{i}") is not None else named(f"ffn_moe_weights-{i}"),
            "ffn_out": named(f"ffn_moe_out-{i}") if named(f"ffn_moe_out-{i}") is not None else named(f"ffn_out-{i}"),
            "out": named(f"l_out-{i}"),
        }
        for stage, a in picks.items():
            if a is None:
                continue
            a = rows_first(a, rows, stage)
            if stage == "expert_weights":
                a = a.reshape(rows, -1)  # [1, k, T] in ggml
            if stage in ("q", "k", "q_norm", "k_norm", "q_rope", "k_rope") and permuted:
                a = unpermute(a)
            out[L(stage)] = a
    fn = find(lambda n: n["name"] == "result_norm")
    if fn is not None:
        out["final_norm"] = rows_first(fn, rows, "final_norm")
    return out


def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--like", required=True, help="trace whose tokens and batches are replayed")
    ap.add_argument("--out", required=True)
    ap.add_argument("--kv-type", default="f16", choices=["f16", "f32"])
    ap.add_argument("--flash-attn", default="auto", choices=["on", "off", "auto"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tree", default=DEFAULT_TREE)
    args = ap.parse_args()
    sys.path.insert(0, f"{args.tree}/gguf-py")
    import gguf

    like = yaml.safe_load(pathlib.Path(args.like, "trace.yaml").read_text())
    tokens, batches = like["tokens"], like["batches"]
    r = gguf.GGUFReader(args.gguf)
    field = lambda k: r.fields[k].contents() if k in r.fields else None
    garch = field("general.architecture")
    n_layers = int(field(f"{garch}.block_count"))
    ftype = FILE_TYPES.get(int(field("general.file_type") or 0), f"type{field('general.file_type')}")
    binary = f"{args.tree}/build/bin/parity-dump-llamacpp"
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [binary, args.gguf, tmp, "--tokens", ",".join(map(str, tokens)),
               "--batches", ",".join(f"{a}:{b}" for a, b in batches),
               "--kv-type", args.kv_type, "--flash-attn", args.flash_attn, "--threads", str(args.threads)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(run.stderr[-2000:])
        fa_line = [l for l in run.stdout.splitlines() if l.startswith("flash_attn_type")]
        per_call = []
        for c, (a, b) in enumerate(batches):
            stages = map_call(read_nodes(f"{tmp}/call{c}.bin"), n_layers, b - a, garch in PERMUTED)
            logits = np.fromfile(f"{tmp}/logits{c}.bin", dtype="<f4").reshape(b - a, -1)
            stages["logits"] = logits
            per_call.append(stages)
    names = [n for n in per_call[0] if all(n in c for c in per_call)]
    manifest_stages = {}
    for name in names:
        arr = np.concatenate([c[name] for c in per_call], axis=0)
        if arr.dtype.kind == "i":
            arr, dt = arr.astype("<i4"), "i32"
        else:
            arr, dt = arr.astype("<f4"), "f32"
        np.save(out / f"{name}.npy", np.ascontiguousarray(arr))
        manifest_stages[name] = {"file": f"{name}.npy", "shape": list(arr.shape), "dtype": dt}
    order = lambda n: (0, 0, 0) if n == "embed" else (2, 0, 0) if n == "final_norm" else (2, 1, 0) if n == "logits" else (1, int(n[1:].split(".")[0]), 0)
    manifest_stages = dict(sorted(manifest_stages.items(), key=lambda kv: order(kv[0])))
    manifest = {
        "format": "parity-trace/1",
        "producer": {"kind": "llamacpp", "name": "llama.cpp", "version": "llama-cpp-python 0.3.36 vendored tree",
                     "command": "scripts/dump_llamacpp.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])},
        "model": {"path": os.path.relpath(pathlib.Path(args.gguf).resolve(), out), "sha256": sha256_file(args.gguf),
                  "arch": ARCH.get(garch, garch), "dtype": ftype},
        "settings": {"kv_cache_dtype": args.kv_type, "flash_attn": args.flash_attn,
                     "flash_attn_effective": fa_line[0].split()[-1] if fa_line else None, "threads": args.threads},
        "tokens": tokens,
        "positions": None,
        "batches": batches,
        "layers": None,
        "qk_layout": "halfsplit",
        "qk_unpermuted": garch in PERMUTED,
        "stages": manifest_stages,
    }
    (out / "trace.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False, width=120))
    print(f"{out}: {len(tokens)} rows, {len(manifest_stages)} stages ({garch}, {ftype}, kv {args.kv_type}, fa {args.flash_attn})")


if __name__ == "__main__":
    main()
