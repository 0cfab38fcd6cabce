//! The GGUF reader against files written by PyPI `gguf` and by llama.cpp's
//! converter, our dequantisation against ggml's reference bit for bit, and
//! hostile files, each class with its own test and message.
//!
//! Golden data: tests/data/gguf, made by scripts/gguf_golden.py (gguf 0.19.0).
//! Its .npy values are gguf-py's numpy dequantisation; the script's
//! `--ggml-lib` check found ggml's own C `dequantize_row_*` (llama.cpp as
//! vendored in llama-cpp-python 0.3.36) identical to them for every tensor,
//! so equality here is equality with ggml-quants.c.

use std::path::{Path, PathBuf};

use parity::error::Error;
use parity::formats::gguf::{GgufFile, Value};
use parity::formats::npy::{self, NpyData};

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf").join(p)
}

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(p)
}

fn golden() -> GgufFile {
    GgufFile::open(&data("golden.gguf")).unwrap()
}

// ---------------------------------------------------------------- metadata

#[test]
fn reads_every_metadata_type() {
    let f = golden();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32, "general.alignment absent: ggml's default");
    assert_eq!(f.get("general.architecture").and_then(Value::as_str), Some("llama"));
    assert_eq!(f.get("test.u8"), Some(&Value::U8(200)));
    assert_eq!(f.get("test.i8"), Some(&Value::I8(-100)));
    assert_eq!(f.get("test.u16"), Some(&Value::U16(60000)));
    assert_eq!(f.get("test.i16"), Some(&Value::I16(-30000)));
    assert_eq!(f.get("test.u32"), Some(&Value::U32(4_000_000_000)));
    assert_eq!(f.get("test.i32"), Some(&Value::I32(-2_000_000_000)));
    assert_eq!(f.get("test.u64"), Some(&Value::U64((1 << 63) + 5)));
    assert_eq!(f.get("test.i64"), Some(&Value::I64(-(1 << 62))));
    assert_eq!(f.get("test.f32"), Some(&Value::F32(0.1)));
    assert_eq!(f.get("test.f64"), Some(&Value::F64(1e-300)));
    assert_eq!(f.get("test.bool"), Some(&Value::Bool(true)));
    assert_eq!(f.get("test.string").and_then(Value::as_str), Some("héllo gguf"));
    assert_eq!(f.get("missing.key"), None);
}

#[test]
fn reads_typed_and_nested_arrays() {
    let f = golden();
    let arr = |k: &str| f.get(k).and_then(Value::as_array).unwrap_or_else(|| panic!("{k} is not an array"));
    // gguf-py writes Python ints as INT32.
    assert_eq!(arr("test.array_int"), [Value::I32(1), Value::I32(2), Value::I32(3)]);
    let strs: Vec<&str> = arr("test.array_str").iter().filter_map(Value::as_str).collect();
    assert_eq!(strs, ["a", "bb", ""]);
    assert_eq!(arr("test.array_bool"), [Value::Bool(true), Value::Bool(false)]);
    assert_eq!(arr("test.array_i8"), [Value::I8(-1), Value::I8(2)]);
    assert_eq!(arr("test.array_f64"), [Value::F64(0.5), Value::F64(-2.0)]);
    assert_eq!(f.get("test.nested").unwrap().to_string(), "[[1, 2], [3]]");
    assert_eq!(f.get("test.nested_str").unwrap().to_string(), r#"[["x"], ["y", "z"]]"#);
    assert_eq!(f.get("test.nested3").unwrap().to_string(), "[[[7]]]");
}

#[test]
fn value_accessors_and_display() {
    assert_eq!(Value::I32(-5).as_u64(), None);
    assert_eq!(Value::I32(5).as_u64(), Some(5));
    assert_eq!(Value::I32(-5).as_f64(), Some(-5.0));
    assert_eq!(Value::F32(0.5).as_u64(), None);
    assert_eq!(Value::String("x".into()).as_f64(), None);
    assert_eq!(Value::Bool(true).as_bool(), Some(true));
    assert_eq!(Value::I64(-7).to_string(), "-7");
    assert_eq!(Value::String("a\"b".into()).to_string(), r#""a\"b""#);
    let long = Value::Array((0..100).map(Value::U32).collect());
    assert_eq!(long.short(), "[0, 1, 2, 3, … 100 items]");
}

// ------------------------------------------------------------------ tensors

#[test]
fn shapes_are_ne_reversed_into_row_major() {
    let f = golden();
    let t = f.tensor("t.stack").unwrap();
    assert_eq!(f.info("t.stack").unwrap().ne, [64, 4, 2]);
    assert_eq!(t.shape, [2, 4, 64], "ggml ne order is reversed into row-major");
    assert!(f.tensor_names().contains(&"t.q6_k"));
    let e = f.tensor("no.such.tensor").unwrap_err().to_string();
    assert!(e.contains("no.such.tensor") && e.contains("missing"), "{e}");
}

#[test]
fn custom_alignment_from_the_writer() {
    let f = GgufFile::open(&data("aligned64.gguf")).unwrap();
    assert_eq!(f.alignment, 64);
    assert_eq!(f.data_start() % 64, 0);
    assert_eq!(f.info("b").unwrap().offset, 64, "a's 12 bytes padded to 64");
    assert_eq!(f.tensor("a").unwrap().to_f32(), [0.0, 1.0, 2.0]);
    let b = f.tensor("b").unwrap();
    assert_eq!(b.shape, [2, 4]);
    assert_eq!(b.to_f32(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
}

/// Our dequantisation of golden tensor `name` equals ggml's, compared as f32 bits.
fn bit_identical(name: &str) {
    let f = golden();
    let t = f.tensor(name).unwrap();
    assert_eq!(t.shape, [4, 512], "{name}");
    let NpyData::F32(want) = npy::read(&data(&format!("{name}.npy")), None).unwrap().data else { panic!("{name}.npy is not f32") };
    let got = t.to_f32();
    assert_eq!(got.len(), want.len(), "{name}");
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits()) {
        panic!("{name}: element {i} (row {}, col {}) differs: ours {:e} vs ggml {:e}", i / 512, i % 512, got[i], want[i]);
    }
}

/// One test per block type: random blocks with ordinary scales, and edge blocks
/// (scales of ±0, f16 subnormals, ±65504; all-0xFF and all-0x00 quant bytes).
macro_rules! golden_dequant {
    ($($ty:ident),*) => {$(
        #[test]
        fn $ty() {
            bit_identical(concat!("t.", stringify!($ty)));
            bit_identical(concat!("t.", stringify!($ty), ".edge"));
        }
    )*};
}

mod dequant_bit_identical_to_ggml {
    use super::bit_identical;
    golden_dequant!(q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k);

    #[test]
    fn plain_types() {
        for name in ["t.f32", "t.f16", "t.bf16"] {
            bit_identical(name);
        }
    }
}

// ------------------------------------------------- files from llama.cpp's converter

#[test]
fn llama_cpp_converted_qwen3() {
    let f = GgufFile::open(&fixture("examples/qwen3-1layer.f32.gguf")).unwrap();
    assert_eq!(f.get("general.architecture").and_then(Value::as_str), Some("qwen3"));
    assert_eq!(f.get("qwen3.block_count").and_then(Value::as_u64), Some(1));
    assert_eq!(f.get("qwen3.embedding_length").and_then(Value::as_u64), Some(32));
    assert_eq!(f.get("qwen3.attention.head_count_kv").and_then(Value::as_u64), Some(1));
    assert_eq!(f.get("qwen3.rope.freq_base").and_then(Value::as_f64), Some(1e6));
    assert_eq!(f.get("tokenizer.ggml.tokens").and_then(Value::as_array).map(<[_]>::len), Some(300));
    for (name, shape) in [
        ("token_embd.weight", [300, 32].as_slice()),
        ("blk.0.attn_q.weight", &[32, 32]),
        ("blk.0.attn_k.weight", &[16, 32]),
        ("blk.0.ffn_down.weight", &[32, 64]),
        ("blk.0.ffn_up.weight", &[64, 32]),
        ("blk.0.attn_q_norm.weight", &[16]),
    ] {
        assert_eq!(f.tensor(name).unwrap().shape, shape, "{name}");
    }
}

/// Root-mean-square error of `a` relative to the RMS of `b`.
fn rel_rms(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    (num / den).sqrt()
}

/// Every tensor of a llama.cpp-quantised file dequantises close to the f32 file
/// (a wrong block layout scores ~1.4, uncorrelated); bounds are about twice the
/// errors measured with gguf-py.
#[test]
fn llama_cpp_quantised_files_dequantise_near_f32() {
    let reference = GgufFile::open(&fixture("llama-wide/gguf/llama-wide.f32.gguf")).unwrap();
    for (kind, bound) in [("f16", 1e-3), ("bf16", 5e-3), ("q8_0", 1.5e-2), ("q6_k", 4e-2), ("q4_k_m", 0.15)] {
        let f = GgufFile::open(&fixture(&format!("llama-wide/gguf/llama-wide.{kind}.gguf"))).unwrap();
        assert_eq!(f.tensors.len(), reference.tensors.len(), "{kind}");
        for name in f.tensor_names() {
            let (t, r) = (f.tensor(name).unwrap(), reference.tensor(name).unwrap());
            assert_eq!(t.shape, r.shape, "{kind} {name}");
            let e = rel_rms(&t.to_f32(), &r.to_f32());
            assert!(e < bound, "{kind} {name} ({}): relative RMS error {e:.4} against f32, bound {bound}", t.dtype);
        }
    }
}

// ------------------------------------------------------------- hostile files

/// Writes `bytes` to a temp file, opens it, and returns the error's item and
/// message, checking it is a format error naming that file.
fn hostile(tag: &str, bytes: &[u8]) -> (String, String) {
    let p = std::env::temp_dir().join(format!("parity-gguf-{}-{tag}.gguf", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    let r = GgufFile::open(&p);
    let _ = std::fs::remove_file(&p);
    match r {
        Ok(_) => panic!("{tag}: opened"),
        Err(Error::Format { path, item, msg }) => {
            assert_eq!(path, p, "{tag}: the error names the file");
            assert!(!msg.ends_with('.'), "{tag}: messages are sentences without a trailing period: {msg}");
            (item, msg)
        }
        Err(e) => panic!("{tag}: not a format error: {e}"),
    }
}

fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(version.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b
}

fn string(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend(s.as_bytes());
}

/// A key and value type, the value's bytes to follow.
fn key(b: &mut Vec<u8>, key: &str, ty: u32) {
    string(b, key);
    b.extend(ty.to_le_bytes());
}

fn tensor_info(b: &mut Vec<u8>, name: &str, ne: &[u64], ty: u32, off: u64) {
    string(b, name);
    b.extend((ne.len() as u32).to_le_bytes());
    for d in ne {
        b.extend(d.to_le_bytes());
    }
    b.extend(ty.to_le_bytes());
    b.extend(off.to_le_bytes());
}

/// Pads to the data section (alignment 32) and appends `n` data bytes.
fn data_section(b: &mut Vec<u8>, n: usize) {
    b.resize(b.len().div_ceil(32) * 32 + n, 0);
}

#[test]
fn hostile_bad_magic() {
    let (item, msg) = hostile("magic", b"GGUX\x03\0\0\0");
    assert_eq!(item, "header");
    assert!(msg.contains("bad magic"), "{msg}");
    let (item, _) = hostile("empty", b"");
    assert_eq!(item, "header");
}

#[test]
fn hostile_unsupported_version() {
    for v in [0, 1, 4, 7] {
        let (item, msg) = hostile("version", &header(v, 0, 0));
        assert_eq!(item, "header");
        assert!(msg.contains(&format!("version {v} is not supported")), "{msg}");
    }
}

#[test]
fn hostile_big_endian_file_from_the_writer() {
    let bytes = std::fs::read(data("big_endian.gguf")).unwrap();
    let (_, msg) = hostile("big-endian", &bytes);
    assert!(msg.contains("big-endian"), "{msg}");
}

#[test]
fn hostile_truncated_header() {
    let (item, msg) = hostile("short", b"GGUF\x03\0");
    assert_eq!(item, "header");
    assert!(msg.contains("needs 4 bytes"), "{msg}");
}

#[test]
fn hostile_absurd_counts() {
    let (item, msg) = hostile("tensor-count", &header(3, u64::MAX, 0));
    assert_eq!(item, "header");
    assert!(msg.contains("tensor count") && msg.contains("cannot fit"), "{msg}");
    let (item, msg) = hostile("kv-count", &header(3, 0, 1 << 40));
    assert_eq!(item, "header");
    assert!(msg.contains("metadata count") && msg.contains("cannot fit"), "{msg}");
}

#[test]
fn hostile_absurd_string_length() {
    let mut b = header(3, 0, 1);
    b.extend(u64::MAX.to_le_bytes()); // key length
    b.extend([0u8; 16]); // enough left for the one KV pair the header announces
    let (item, msg) = hostile("key-len", &b);
    assert_eq!(item, "metadata key #0");
    assert!(msg.contains("string length") && msg.contains("cannot fit"), "{msg}");
    let mut b = header(3, 0, 1);
    key(&mut b, "general.name", 8);
    b.extend((1u64 << 40).to_le_bytes());
    b.extend(b"abc");
    let (item, msg) = hostile("value-len", &b);
    assert_eq!(item, "general.name");
    assert!(msg.contains("cannot fit"), "{msg}");
}

#[test]
fn hostile_absurd_array_length() {
    let mut b = header(3, 0, 1);
    key(&mut b, "arr", 9);
    b.extend(4u32.to_le_bytes());
    b.extend((1u64 << 50).to_le_bytes());
    let (item, msg) = hostile("array-len", &b);
    assert_eq!(item, "arr");
    assert!(msg.contains("array length") && msg.contains("cannot fit"), "{msg}");
    // Nested: the inner array's length is checked against what remains, too.
    let mut b = header(3, 0, 1);
    key(&mut b, "nest", 9);
    b.extend(9u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(u64::MAX.to_le_bytes());
    let (item, msg) = hostile("nested-len", &b);
    assert_eq!(item, "nest");
    assert!(msg.contains("cannot fit"), "{msg}");
}

#[test]
fn hostile_arrays_nested_too_deep() {
    let mut b = header(3, 0, 1);
    key(&mut b, "deep", 9);
    for _ in 0..20 {
        b.extend(9u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
    }
    b.extend([0u8; 64]);
    let (item, msg) = hostile("deep", &b);
    assert_eq!(item, "deep");
    assert!(msg.contains("nested deeper"), "{msg}");
}

#[test]
fn hostile_unknown_value_type() {
    let mut b = header(3, 0, 1);
    key(&mut b, "abc", 99);
    let (item, msg) = hostile("value-type", &b);
    assert_eq!(item, "abc");
    assert!(msg.contains("unknown value type 99"), "{msg}");
    let mut b = header(3, 0, 1);
    key(&mut b, "arr", 9);
    b.extend(13u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    let (item, msg) = hostile("element-type", &b);
    assert_eq!(item, "arr");
    assert!(msg.contains("unknown array element type 13"), "{msg}");
}

#[test]
fn hostile_bad_values() {
    let mut b = header(3, 0, 1);
    key(&mut b, "flag", 7);
    b.push(2);
    let (item, msg) = hostile("bool", &b);
    assert_eq!((item.as_str(), msg.as_str()), ("flag", "bool byte 2 is neither 0 nor 1"));
    let mut b = header(3, 0, 1);
    key(&mut b, "s", 8);
    b.extend(2u64.to_le_bytes());
    b.extend([0xC3, 0x28]);
    let (item, msg) = hostile("utf8", &b);
    assert_eq!((item.as_str(), msg.as_str()), ("s", "string is not UTF-8"));
    let mut b = header(3, 0, 2);
    for _ in 0..2 {
        key(&mut b, "twice", 0);
        b.push(1);
    }
    let (item, msg) = hostile("dup-key", &b);
    assert_eq!((item.as_str(), msg.as_str()), ("twice", "duplicate metadata key"));
}

#[test]
fn hostile_bad_alignment() {
    for (tag, ty, payload) in [("align-3", 4u32, 3u32.to_le_bytes().to_vec()), ("align-str", 8, [1, 0, 0, 0, 0, 0, 0, 0, b'x'].to_vec())] {
        let mut b = header(3, 0, 1);
        key(&mut b, "general.alignment", ty);
        b.extend(payload);
        let (item, _) = hostile(tag, &b);
        assert_eq!(item, "general.alignment", "{tag}");
    }
}

#[test]
fn hostile_unknown_tensor_type() {
    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "w", &[32, 2], 77, 0);
    let (item, msg) = hostile("tensor-type", &b);
    assert_eq!((item.as_str(), msg.as_str()), ("w", "unknown tensor type 77"));
    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "w", &[256, 2], 16, 0);
    let (item, msg) = hostile("tensor-type-iq", &b);
    assert_eq!((item.as_str(), msg.as_str()), ("w", "tensor type 16 (iq2_xxs) is not supported"));
}

#[test]
fn hostile_too_many_dimensions() {
    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "w", &[32, 2, 1, 1, 1], 0, 0);
    let (item, msg) = hostile("dims", &b);
    assert_eq!(item, "w");
    assert!(msg.contains("5 dimensions"), "{msg}");
}

#[test]
fn hostile_dimension_overflow() {
    for (tag, ne) in [("product", [u64::MAX, 4]), ("product-i64", [1 << 32, 1 << 31]), ("negative-i64", [1 << 63, 1])] {
        let mut b = header(3, 1, 0);
        tensor_info(&mut b, "w", &ne, 0, 0);
        let (item, msg) = hostile(tag, &b);
        assert_eq!(item, "w", "{tag}");
        assert!(msg.contains("overflow"), "{tag}: {msg}");
    }
}

#[test]
fn hostile_offsets() {
    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "w", &[32, 2], 0, 1 << 20);
    data_section(&mut b, 256);
    let (item, msg) = hostile("past-end", &b);
    assert_eq!(item, "w");
    assert!(msg.contains("past the end"), "{msg}");
    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "w", &[32, 2], 0, u64::MAX - 31);
    data_section(&mut b, 256);
    let (_, msg) = hostile("offset-overflow", &b);
    assert!(msg.contains("past the end"), "{msg}");
    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "w", &[32, 2], 0, 3);
    let (item, msg) = hostile("misaligned", &b);
    assert_eq!((item.as_str(), msg.as_str()), ("w", "data offset 3 is not aligned to 32"));
}

#[test]
fn hostile_data_section_past_the_end() {
    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "w", &[8], 0, 0);
    b.push(0); // the data section would start at the next multiple of 32
    let (item, msg) = hostile("data-start", &b);
    assert_eq!(item, "header");
    assert!(msg.contains("data section starts at"), "{msg}");
}

#[test]
fn hostile_duplicate_tensor_name() {
    let mut b = header(3, 2, 0);
    tensor_info(&mut b, "w", &[8], 0, 0);
    tensor_info(&mut b, "w", &[8], 0, 32);
    data_section(&mut b, 128);
    let (item, msg) = hostile("duplicate", &b);
    assert_eq!((item.as_str(), msg.as_str()), ("w", "duplicate tensor name"));
}

#[test]
fn hostile_partial_block_rows() {
    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "w", &[33, 1], 8, 0); // q8_0 rows must be whole blocks of 32
    data_section(&mut b, 128);
    let (item, msg) = hostile("partial-block", &b);
    assert_eq!(item, "w");
    assert!(msg.contains("not whole q8_0 blocks of 32"), "{msg}");
}

/// Every truncation of the header, metadata and tensor infos, and of the data,
/// is an error, never a panic.
#[test]
fn hostile_every_truncation() {
    let bytes = std::fs::read(data("aligned64.gguf")).unwrap();
    let f = GgufFile::open(&data("aligned64.gguf")).unwrap();
    // The writer pads after the last tensor too; cutting only padding leaves a valid file.
    let needed = f.data_start() + 64 + 8 * 4;
    assert!(needed <= bytes.len());
    for n in 0..needed {
        hostile("truncated", &bytes[..n]);
    }
}

/// Deterministic random byte corruption of the structured part: open may
/// succeed or fail, but must not panic, and whatever opens must read.
#[test]
fn hostile_corrupted_bytes_never_panic() {
    let good = std::fs::read(data("aligned64.gguf")).unwrap();
    let p = std::env::temp_dir().join(format!("parity-gguf-{}-corrupt.gguf", std::process::id()));
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut b = good.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() % 192) as usize; // header, metadata and tensor infos
            b[at] = next() as u8;
        }
        std::fs::write(&p, &b).unwrap();
        if let Ok(f) = GgufFile::open(&p) {
            for name in f.tensor_names() {
                if let Ok(t) = f.tensor(name) {
                    let _ = t.to_f32();
                }
            }
        }
    }
    let _ = std::fs::remove_file(&p);
}

// ------------------------------------------------- hand-built valid files

#[test]
fn reads_version_2_and_an_empty_array() {
    let mut b = header(2, 1, 1);
    key(&mut b, "empty", 9);
    b.extend(8u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    tensor_info(&mut b, "s", &[], 0, 0); // zero dimensions: a scalar, as ggml allows
    data_section(&mut b, 4);
    let n = b.len();
    b[n - 4..].copy_from_slice(&2.5f32.to_le_bytes());
    let p = std::env::temp_dir().join(format!("parity-gguf-{}-v2.gguf", std::process::id()));
    std::fs::write(&p, &b).unwrap();
    let f = GgufFile::open(&p).unwrap();
    let _ = std::fs::remove_file(&p);
    assert_eq!(f.version, 2);
    assert_eq!(f.get("empty"), Some(&Value::Array(vec![])));
    let s = f.tensor("s").unwrap();
    assert_eq!((s.shape.len(), s.to_f32()), (0, vec![2.5]));
}

/// A string array holds elements as small as their 8-byte length: a file whose
/// last bytes are many empty strings is valid.
#[test]
fn reads_an_array_of_empty_strings_ending_the_file() {
    let mut b = header(3, 0, 1);
    key(&mut b, "tokens", 9);
    b.extend(8u32.to_le_bytes());
    b.extend(100u64.to_le_bytes());
    b.extend([0u8; 800]);
    let p = std::env::temp_dir().join(format!("parity-gguf-{}-empty-strings.gguf", std::process::id()));
    std::fs::write(&p, &b).unwrap();
    let f = GgufFile::open(&p).unwrap();
    let _ = std::fs::remove_file(&p);
    assert_eq!(f.get("tokens").and_then(Value::as_array).map(<[_]>::len), Some(100));
}
