#!/usr/bin/env python3
"""Golden data for parity's GGUF reader and dequantisation (tests/gguf.rs).

Made with PyPI gguf==0.19.0 and numpy 2.4 (the versions this was last run with).
Writes into tests/data/gguf/:

* golden.gguf, by gguf's own writer: metadata of every value type (typed and
  nested arrays included) and, for every block type parity reads, two tensors
  of random but valid blocks written raw with their `raw_dtype`:
  `t.<type>` (f16 scale fields uniform in +-0.05) and `t.<type>.edge`
  (scale fields cycling through +-0, the smallest and largest f16 subnormals,
  +-65504 and 1; one row of all-0xFF and one of all-0x00 quant bytes).
  Also `t.stack`, a 3-D f32 tensor whose shape must come back reversed.
* <tensor>.npy: the f32 values gguf-py's numpy `gguf.quants.dequantize`
  computes for each tensor (a transcription of ggml-quants.c). The Rust test
  compares bit for bit.
* aligned64.gguf: two tensors under `general.alignment = 64`.
* big_endian.gguf: a big-endian file (GGUF v3 allows them; parity refuses).

With --ggml-lib PATH/libggml-base.so the script also runs ggml's own C
`dequantize_row_*` (and `ggml_*_to_fp32_row`) on every tensor and checks that
ggml agrees with the .npy bit for bit, so the golden data is ggml's, not only
gguf-py's. Last checked against libggml-base of llama.cpp as vendored in
llama-cpp-python 0.3.36 (built by scripts/build_llamacpp.sh): all identical.

    python -m venv /work/pyenv-gguf && /work/pyenv-gguf/bin/pip install gguf==0.19.0 numpy
    /work/pyenv-gguf/bin/python scripts/gguf_golden.py [--out DIR] [--ggml-lib LIB]

The output is deterministic (fixed seed): rerunning must not change the files.
"""
import argparse
import ctypes
import pathlib

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

REPO = pathlib.Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(20261122)
ROWS, COLS = 4, 512

# Byte offsets of the f16 scale fields in each block (ggml-common.h).
HALF_FIELDS = {
    Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
    Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
}
# f16 bit patterns for the edge tensors: +0, -0, smallest and largest subnormal,
# +-65504 (largest finite), 1.0. No inf or NaN: NaN payloads are not portable.
EDGE_HALVES = np.array([0x0000, 0x8000, 0x0001, 0x03FF, 0x7BFF, 0xFBFF, 0x3C00], dtype=np.uint16)


def random_blocks(qtype, edge):
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    per_row = COLS // block_elems
    n_blocks = ROWS * per_row
    raw = RNG.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    if edge:
        raw[:per_row] = 0xFF
        raw[per_row:2 * per_row] = 0x00
    for k, off in enumerate(HALF_FIELDS[qtype]):
        if edge:
            bits = EDGE_HALVES[(np.arange(n_blocks) + 3 * k) % len(EDGE_HALVES)]
        else:
            bits = RNG.uniform(-0.05, 0.05, size=n_blocks).astype(np.float16).view(np.uint16)
        raw[:, off:off + 2] = bits.astype("<u2").view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(ROWS, per_row * block_bytes)


def add_metadata(w):
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -2_000_000_000)
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float32("test.f32", 0.1)
    w.add_float64("test.f64", 1e-300)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo gguf")
    w.add_array("test.array_int", [1, 2, 3])  # gguf-py writes Python ints as INT32
    w.add_array("test.array_str", ["a", "bb", ""])
    w.add_array("test.array_bool", [True, False])
    w.add_key_value("test.array_i8", [-1, 2], V.ARRAY, sub_type=V.INT8)
    w.add_key_value("test.array_f64", [0.5, -2.0], V.ARRAY, sub_type=V.FLOAT64)
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_array("test.nested_str", [["x"], ["y", "z"]])
    w.add_array("test.nested3", [[[7]]])


def write(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def golden(out):
    w = gguf.GGUFWriter(str(out / "golden.gguf"), "llama")
    add_metadata(w)
    add_quantised(w, out, edge=False)
    for name, qtype, dt in [("t.f32", Q.F32, np.float32), ("t.f16", Q.F16, np.float16)]:
        vals = RNG.standard_normal((ROWS, COLS)).astype(dt)
        w.add_tensor(name, vals, raw_dtype=qtype)
        np.save(out / f"{name}.npy", vals.astype(np.float32))
    bf = RNG.integers(0, 2**16, size=(ROWS, COLS), dtype=np.uint16)
    bf[(bf & 0x7F80) == 0x7F80] = 0x3F80  # keep values finite
    raw = bf.view(np.uint8).reshape(ROWS, COLS * 2)
    w.add_tensor("t.bf16", raw, raw_dtype=Q.BF16)
    np.save(out / "t.bf16.npy", gguf.quants.dequantize(raw, Q.BF16).astype(np.float32))
    # A 3-D tensor: shape order must come back as [2, 4, 64] (ggml ne reversed).
    w.add_tensor("t.stack", RNG.standard_normal((2, 4, 64)).astype(np.float32))
    # Last, so the random draws above stay those of earlier versions of this script.
    add_quantised(w, out, edge=True)
    write(w)


def add_quantised(w, out, edge):
    for qtype in HALF_FIELDS:
        raw = random_blocks(qtype, edge)
        name = f"t.{qtype.name.lower()}" + (".edge" if edge else "")
        w.add_tensor(name, raw, raw_dtype=qtype)
        deq = gguf.quants.dequantize(raw, qtype).astype(np.float32)
        assert deq.shape == (ROWS, COLS), deq.shape
        np.save(out / f"{name}.npy", deq)


def small_files(out):
    w = gguf.GGUFWriter(str(out / "aligned64.gguf"), "llama")
    w.add_custom_alignment(64)
    w.add_tensor("a", np.arange(3, dtype=np.float32))  # 12 bytes: b must start at 64
    w.add_tensor("b", np.arange(8, dtype=np.float32).reshape(2, 4))
    write(w)
    w = gguf.GGUFWriter(str(out / "big_endian.gguf"), "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_tensor("a", np.arange(4, dtype=np.float32))
    write(w)


def check_against_ggml(out, lib_path):
    """ggml's own C dequantisation of every golden tensor must equal its .npy bit for bit."""
    lib = ctypes.CDLL(lib_path)
    r = gguf.GGUFReader(str(out / "golden.gguf"))
    bad = 0
    for t in r.tensors:
        npy = out / f"{t.name}.npy"
        if not npy.exists() or t.tensor_type == Q.F32:
            continue
        want = np.load(npy).ravel()
        raw = np.ascontiguousarray(t.data).view(np.uint8)
        got = np.zeros(want.size, np.float32)
        fn_name = {Q.F16: "ggml_fp16_to_fp32_row", Q.BF16: "ggml_bf16_to_fp32_row"}.get(
            t.tensor_type, "dequantize_row_" + t.tensor_type.name.lower().replace("_k", "_K"))
        fn = getattr(lib, fn_name)
        fn.restype = None
        fn(raw.ctypes.data_as(ctypes.c_void_p), got.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(got.size))
        diff = np.nonzero(got.view(np.uint32) != want.view(np.uint32))[0]
        if diff.size:
            bad += 1
            i = diff[0]
            print(f"{t.name}: {diff.size} values differ from ggml, first #{i}: ggml {got[i]!r} vs gguf-py {want[i]!r}")
        else:
            print(f"{t.name}: ggml {fn_name} identical")
    if bad:
        raise SystemExit(f"{bad} tensors differ between ggml and gguf-py")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=REPO / "tests" / "data" / "gguf")
    ap.add_argument("--ggml-lib", help="libggml-base.so to cross-check the golden values against ggml's C code")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    golden(args.out)
    small_files(args.out)
    print("wrote", args.out)
    if args.ggml_lib:
        check_against_ggml(args.out, args.ggml_lib)


if __name__ == "__main__":
    main()
