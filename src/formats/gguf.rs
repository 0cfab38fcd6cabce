//! GGUF v2/v3 reader over a memory map (ggml `docs/gguf.md`, `gguf.cpp`).
//!
//! Every count and length read from the file is checked against the bytes that
//! remain before anything is allocated from it, so a truncated or hostile file
//! is an error naming the item, never a panic or a huge allocation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::formats::tensor::{Backing, DType, Tensor};

const MAGIC: &[u8; 4] = b"GGUF";
const MAX_DIMS: usize = 4;
/// Nested arrays deeper than this are refused (the format allows nesting; no real file nests).
const MAX_DEPTH: usize = 8;

/// A metadata value (GGUF value types 0..12).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(x) => Some(x as u64),
            Value::U16(x) => Some(x as u64),
            Value::U32(x) => Some(x as u64),
            Value::U64(x) => Some(x),
            Value::I8(x) => u64::try_from(x).ok(),
            Value::I16(x) => u64::try_from(x).ok(),
            Value::I32(x) => u64::try_from(x).ok(),
            Value::I64(x) => u64::try_from(x).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(x) => Some(x as f64),
            Value::F64(x) => Some(x),
            _ => self.as_u64().map(|x| x as f64),
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }
    /// A short rendering for `parity inspect` (long arrays are summarised).
    pub fn short(&self) -> String {
        match self {
            Value::String(s) if s.len() > 80 => format!("{:?}… ({} chars)", &s[..s.char_indices().nth(60).map_or(s.len(), |c| c.0)], s.len()),
            Value::String(s) => format!("{s:?}"),
            Value::Array(v) if v.len() > 8 => format!("[{}, … {} items]", v[..4].iter().map(Value::short).collect::<Vec<_>>().join(", "), v.len()),
            Value::Array(v) => format!("[{}]", v.iter().map(Value::short).collect::<Vec<_>>().join(", ")),
            Value::F32(x) => format!("{x}"),
            Value::F64(x) => format!("{x}"),
            Value::Bool(b) => format!("{b}"),
            other => other.as_u64().map_or_else(|| format!("{other:?}"), |x| x.to_string()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `ne[0]` is the innermost (contiguous) dimension.
    pub ne: Vec<u64>,
    pub dtype: DType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub alignment: u64,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    index: BTreeMap<String, usize>,
    map: Arc<memmap2::Mmap>,
    data_start: usize,
}

/// The ggml type id of each dtype we read (ggml.h `enum ggml_type`).
pub fn dtype_from_ggml(id: u32) -> Option<DType> {
    Some(match id {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::Q4_0,
        3 => DType::Q4_1,
        6 => DType::Q5_0,
        7 => DType::Q5_1,
        8 => DType::Q8_0,
        10 => DType::Q2_K,
        11 => DType::Q3_K,
        12 => DType::Q4_K,
        13 => DType::Q5_K,
        14 => DType::Q6_K,
        26 => DType::I32,
        27 => DType::I64,
        30 => DType::BF16,
        _ => return None,
    })
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, item: &str, msg: impl Into<String>) -> Error {
        Error::format(self.path, item, msg)
    }
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    fn take(&mut self, n: usize, item: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(item, format!("needs {n} bytes at offset {}, the file ends after {} more", self.pos, self.remaining())));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self, item: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, item)?.try_into().unwrap_or_default()))
    }
    fn u64(&mut self, item: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, item)?.try_into().unwrap_or_default()))
    }
    /// A count of items at least `min_item` bytes each, checked against what remains.
    fn count(&mut self, item: &str, min_item: usize) -> Result<usize> {
        let n = self.u64(item)?;
        let most = (self.remaining() / min_item.max(1)) as u64;
        if n > most {
            return Err(self.err(item, format!("count {n} cannot fit in the {} bytes that remain", self.remaining())));
        }
        Ok(n as usize)
    }
    fn string(&mut self, item: &str) -> Result<String> {
        let n = self.count(item, 1)?;
        let s = self.take(n, item)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.err(item, "string is not UTF-8"))
    }
    fn value(&mut self, ty: u32, item: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.take(1, item)?[0]),
            1 => Value::I8(self.take(1, item)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.take(2, item)?.try_into().unwrap_or_default())),
            3 => Value::I16(i16::from_le_bytes(self.take(2, item)?.try_into().unwrap_or_default())),
            4 => Value::U32(self.u32(item)?),
            5 => Value::I32(self.u32(item)? as i32),
            6 => Value::F32(f32::from_bits(self.u32(item)?)),
            7 => match self.take(1, item)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(item, format!("bool byte {b} is neither 0 nor 1"))),
            },
            8 => Value::String(self.string(item)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(self.err(item, format!("arrays nested deeper than {MAX_DEPTH}")));
                }
                let et = self.u32(item)?;
                let min = match et {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4 | 5 | 6 => 4,
                    10..=12 => 8,
                    8 | 9 => 12, // a string or array carries at least its 8-byte length (and type)
                    _ => return Err(self.err(item, format!("unknown array element type {et}"))),
                };
                let n = self.count(item, min)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(et, item, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(item)?),
            11 => Value::I64(self.u64(item)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(item)?)),
            _ => return Err(self.err(item, format!("unknown value type {ty}"))),
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only map; the file is not expected to change while parity runs.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let mut c = Cursor { b: &map, pos: 0, path };
        if c.take(4, "header")? != MAGIC {
            return Err(c.err("header", "bad magic: not a GGUF file"));
        }
        let version = c.u32("header")?;
        if !(2..=3).contains(&version) {
            return Err(c.err("header", format!("GGUF version {version} is not supported (2 or 3)")));
        }
        // A tensor info takes at least 8 (name len) + 4 + 8 + 4 + 8 bytes; a KV pair 8 + 4 + 1.
        let n_tensors = c.count("header: tensor count", 32)?;
        let n_kv = c.count("header: metadata count", 13)?;
        let mut metadata = Vec::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let ty = c.u32(&key)?;
            let v = c.value(ty, &key, 0)?;
            metadata.push((key, v));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, v)) => {
                let a = v.as_u64().ok_or_else(|| c.err("general.alignment", "must be an integer"))?;
                if a == 0 || !a.is_power_of_two() {
                    return Err(c.err("general.alignment", format!("{a} is not a power of two")));
                }
                a
            }
            None => 32,
        };
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut index = BTreeMap::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor info #{i}"))?;
            let nd = c.u32(&name)? as usize;
            if nd == 0 || nd > MAX_DIMS {
                return Err(c.err(&name, format!("{nd} dimensions (expected 1 to {MAX_DIMS})")));
            }
            let mut ne = Vec::with_capacity(nd);
            for _ in 0..nd {
                ne.push(c.u64(&name)?);
            }
            let ty = c.u32(&name)?;
            let dtype = dtype_from_ggml(ty).ok_or_else(|| c.err(&name, format!("unknown or unsupported tensor type {ty}")))?;
            let offset = c.u64(&name)?;
            if offset % alignment != 0 {
                return Err(c.err(&name, format!("data offset {offset} is not aligned to {alignment}")));
            }
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(c.err(&name, "duplicate tensor name"));
            }
            tensors.push(TensorInfo { name, ne, dtype, offset });
        }
        let data_start = c.pos.div_ceil(alignment as usize) * alignment as usize;
        let f = GgufFile { path: path.to_path_buf(), version, alignment, metadata, tensors, index, map: Arc::new(map), data_start };
        // Check every tensor's extent now, so later reads cannot go out of bounds.
        for t in &f.tensors {
            f.extent(t)?;
        }
        Ok(f)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor_names(&self) -> Vec<&str> {
        self.tensors.iter().map(|t| t.name.as_str()).collect()
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    fn extent(&self, t: &TensorInfo) -> Result<std::ops::Range<usize>> {
        let bad = |msg: String| Error::format(&self.path, &t.name, msg);
        let n = t.ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or_else(|| bad(format!("dimensions {:?} overflow", t.ne)))?;
        let n = usize::try_from(n).map_err(|_| bad(format!("{n} elements")))?;
        if t.ne.first().is_some_and(|&r| r as usize % t.dtype.block().0 != 0) {
            return Err(bad(format!("rows of {} are not whole {} blocks of {}", t.ne[0], t.dtype, t.dtype.block().0)));
        }
        let len = t.dtype.bytes_for(n).ok_or_else(|| bad(format!("{n} elements are not whole {} blocks", t.dtype)))?;
        let start = usize::try_from(t.offset).ok().and_then(|o| o.checked_add(self.data_start)).ok_or_else(|| bad("offset overflows".into()))?;
        let end = start.checked_add(len).ok_or_else(|| bad("extent overflows".into()))?;
        if end > self.map.len() {
            return Err(bad(format!("data {start}..{end} runs past the end of the file ({} bytes)", self.map.len())));
        }
        Ok(start..end)
    }

    /// A tensor by its GGUF name, with its shape in row-major (transformers) order.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let t = self.info(name).ok_or_else(|| Error::format(&self.path, name, "tensor is missing from the GGUF"))?;
        let range = self.extent(t)?;
        let shape: Vec<usize> = t.ne.iter().rev().map(|&d| d as usize).collect();
        Tensor::new(name, t.dtype, shape, Backing::Map(self.map.clone()), range).map_err(|e| Error::format(&self.path, name, e.to_string()))
    }
}
