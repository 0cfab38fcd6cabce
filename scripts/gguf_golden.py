#!/usr/bin/env python3
"""Golden data for parity's GGUF reader and dequantisation.

Writes tests/data/gguf/golden.gguf with PyPI `gguf`'s own writer (gguf==0.19.0):
metadata of every value type (nested arrays included) and one tensor of every
block type parity reads, filled with random but valid blocks (finite f16
scales). Next to it, <tensor>.npy holds what gguf-py's numpy dequantisation
(`gguf.quants.dequantize`, a transcription of ggml-quants.c) computes for it.
The Rust test compares bit for bit.

    /work/lead/venv/bin/python scripts/gguf_golden.py
"""
import pathlib

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "gguf"
RNG = np.random.default_rng(20261122)

# Byte offsets of the f16 scale fields in each block (ggml-common.h).
HALF_FIELDS = {
    Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
    Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
}


def random_blocks(qtype, rows, cols):
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block_elems
    raw = RNG.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for off in HALF_FIELDS[qtype]:
        scale = RNG.uniform(-0.05, 0.05, size=n_blocks).astype(np.float16)
        raw[:, off:off + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(rows, cols // block_elems * block_bytes)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(OUT / "golden.gguf"), "llama")
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
    w.add_array("test.array_u32", [1, 2, 3])
    w.add_array("test.array_str", ["a", "bb", ""])
    w.add_array("test.nested", [[1, 2], [3]])
    rows, cols = 4, 512
    for qtype in HALF_FIELDS:
        raw = random_blocks(qtype, rows, cols)
        name = f"t.{qtype.name.lower()}"
        w.add_tensor(name, raw, raw_dtype=qtype)
        deq = gguf.quants.dequantize(raw, qtype).astype(np.float32)
        assert deq.shape == (rows, cols), deq.shape
        np.save(OUT / f"{name}.npy", deq)
    for name, qtype, dt in [("t.f32", Q.F32, np.float32), ("t.f16", Q.F16, np.float16)]:
        vals = RNG.standard_normal((rows, cols)).astype(dt)
        w.add_tensor(name, vals, raw_dtype=qtype)
        np.save(OUT / f"{name}.npy", vals.astype(np.float32))
    bf = RNG.integers(0, 2**16, size=(rows, cols), dtype=np.uint16)
    bf[(bf & 0x7F80) == 0x7F80] = 0x3F80  # keep values finite
    w.add_tensor("t.bf16", bf.view(np.uint8).reshape(rows, cols * 2), raw_dtype=Q.BF16)
    np.save(OUT / "t.bf16.npy", gguf.quants.dequantize(bf.view(np.uint8).reshape(rows, cols * 2), Q.BF16).astype(np.float32))
    # A 3-D tensor: shape order must come back as [2, 4, 64] (ggml ne reversed).
    w.add_tensor("t.stack", RNG.standard_normal((2, 4, 64)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", OUT, "with gguf", gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0")


if __name__ == "__main__":
    main()
