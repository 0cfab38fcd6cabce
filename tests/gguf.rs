//! The GGUF reader against a file written by PyPI `gguf` (scripts/gguf_golden.py),
//! and our dequantisation against gguf-py's transcription of ggml-quants.c, bit
//! for bit; plus hostile files, each class with its own message.

use std::path::{Path, PathBuf};

use parity::formats::gguf::{GgufFile, Value};
use parity::formats::npy::{self, NpyData};

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf").join(p)
}

#[test]
fn reads_every_metadata_type() {
    let f = GgufFile::open(&data("golden.gguf")).unwrap();
    assert_eq!(f.version, 3);
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
    let strs: Vec<&str> = f.get("test.array_str").unwrap().as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(strs, ["a", "bb", ""]);
    let nested = f.get("test.nested").unwrap().as_array().unwrap();
    assert_eq!(nested.len(), 2);
    assert_eq!(nested[0].as_array().unwrap().len(), 2);
    assert_eq!(f.tensor("t.stack").unwrap().shape, vec![2, 4, 64], "ggml ne order is reversed into row-major");
}

#[test]
fn dequantisation_is_bit_identical_to_ggml_reference() {
    let f = GgufFile::open(&data("golden.gguf")).unwrap();
    for ty in ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"] {
        let name = format!("t.{ty}");
        let t = f.tensor(&name).unwrap();
        assert_eq!(t.shape, vec![4, 512], "{name}");
        let want = npy::read(&data(&format!("{name}.npy")), None).unwrap();
        let NpyData::F32(want) = want.data else { panic!() };
        let got = t.to_f32();
        let diff = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
        if let Some(i) = diff {
            panic!("{name}: element {i} differs: ours {} vs ggml reference {}", got[i], want[i]);
        }
    }
}

fn hostile(tag: &str, bytes: &[u8]) -> String {
    let p = std::env::temp_dir().join(format!("parity-gguf-{}-{tag}.gguf", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    match GgufFile::open(&p) {
        Ok(_) => panic!("{tag}: opened"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains(&p.display().to_string()), "{tag}: message names the file: {e}");
            e
        }
    }
}

fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(version.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b
}

fn kv_string(b: &mut Vec<u8>, key: &str, val: &str) {
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key.as_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend((val.len() as u64).to_le_bytes());
    b.extend(val.as_bytes());
}

fn tensor_info(b: &mut Vec<u8>, name: &str, ne: &[u64], ty: u32, off: u64) {
    b.extend((name.len() as u64).to_le_bytes());
    b.extend(name.as_bytes());
    b.extend((ne.len() as u32).to_le_bytes());
    for d in ne {
        b.extend(d.to_le_bytes());
    }
    b.extend(ty.to_le_bytes());
    b.extend(off.to_le_bytes());
}

#[test]
fn hostile_files_are_clear_errors() {
    assert!(hostile("magic", b"GGUX\x03\0\0\0").contains("bad magic"));
    assert!(hostile("version", &header(7, 0, 0)).contains("version 7"));
    assert!(hostile("short", b"GGUF\x03\0").contains("header"));
    assert!(hostile("tensor-count", &header(3, u64::MAX, 0)).contains("tensor count"));
    assert!(hostile("kv-count", &header(3, 0, 1 << 40)).contains("metadata count"));
    let mut b = header(3, 0, 1);
    b.extend(u64::MAX.to_le_bytes()); // key length
    assert!(hostile("key-len", &b).contains("cannot fit"));
    let mut b = header(3, 0, 1);
    b.extend(3u64.to_le_bytes());
    b.extend(b"abc");
    b.extend(99u32.to_le_bytes());
    assert!(hostile("value-type", &b).contains("unknown value type 99"));
    let mut b = header(3, 0, 1);
    b.extend(3u64.to_le_bytes());
    b.extend(b"arr");
    b.extend(9u32.to_le_bytes());
    b.extend(4u32.to_le_bytes());
    b.extend((1u64 << 50).to_le_bytes());
    assert!(hostile("array-len", &b).contains("cannot fit"));
    let mut b = header(3, 1, 1);
    kv_string(&mut b, "general.architecture", "llama");
    tensor_info(&mut b, "w", &[32, 2], 77, 0);
    assert!(hostile("tensor-type", &b).contains("unknown or unsupported tensor type 77"));
    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "w", &[32, 2, 1, 1, 1], 0, 0);
    assert!(hostile("dims", &b).contains("5 dimensions"));
    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "w", &[u64::MAX, 4], 0, 0);
    assert!(hostile("overflow", &b).contains("overflow"));
    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "w", &[32, 2], 0, 1 << 20);
    assert!(hostile("past-end", &b).contains("past the end"));
    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "w", &[32, 2], 0, 3);
    assert!(hostile("misaligned", &b).contains("not aligned"));
    let mut b = header(3, 2, 0);
    tensor_info(&mut b, "w", &[8], 0, 0);
    tensor_info(&mut b, "w", &[8], 0, 32);
    b.resize(b.len() + 128, 0);
    assert!(hostile("duplicate", &b).contains("duplicate"));
    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "w", &[33, 1], 8, 0); // q8_0 rows must be whole blocks of 32
    b.resize(b.len() + 128, 0);
    assert!(hostile("partial-block", &b).contains("blocks"));
}
