//! GGUF v2/v3 reader over a memory map (ggml `docs/gguf.md`, `gguf.cpp`).
//!
//! Every count and length read from the file is checked against the bytes that
//! remain before anything is allocated from it, so a truncated or hostile file
//! is an `Error::Format` naming the file and item, never a panic or a huge
//! allocation. Checks follow ggml's own reader (`gguf_init_from_file_impl`)
//! except that tensor offsets need only be aligned and in bounds, not
//! consecutive: overlapping data cannot make a read go out of bounds.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::formats::tensor::{Backing, DType, Tensor};

const MAGIC: &[u8; 4] = b"GGUF";
/// ggml.h `GGML_MAX_DIMS`.
const MAX_DIMS: usize = 4;
/// gguf.h `GGUF_DEFAULT_ALIGNMENT`, used when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// Nested arrays deeper than this are refused (the format allows nesting; no real file nests).
const MAX_DEPTH: usize = 8;
/// Vectors are pre-sized from a file's counts at most this far; beyond it they
/// grow only as items are actually parsed, so memory follows the bytes read.
const MAX_PREALLOC: usize = 4096;
/// Smallest tensor info: name length 8 + n_dims 4 + type 4 + offset 8 (a zero-dimension tensor).
const MIN_TENSOR_INFO: usize = 24;
/// Smallest KV pair: key length 8 + value type 4 + a one-byte value.
const MIN_KV: usize = 13;

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
    /// Any integer that is non-negative.
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
    /// Any number: floats as stored, integers converted.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(x) => Some(x as f64),
            Value::F64(x) => Some(x),
            Value::I8(x) => Some(x as f64),
            Value::I16(x) => Some(x as f64),
            Value::I32(x) => Some(x as f64),
            Value::I64(x) => Some(x as f64),
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
    /// A short rendering for `parity inspect` (long strings and arrays are summarised).
    pub fn short(&self) -> String {
        match self {
            Value::String(s) if s.len() > 80 => format!("{:?}… ({} chars)", &s[..s.char_indices().nth(60).map_or(s.len(), |c| c.0)], s.len()),
            Value::Array(v) if v.len() > 8 => format!("[{}, … {} items]", v[..4].iter().map(Value::short).collect::<Vec<_>>().join(", "), v.len()),
            Value::Array(v) => format!("[{}]", v.iter().map(Value::short).collect::<Vec<_>>().join(", ")),
            other => other.to_string(),
        }
    }
}

/// The whole value: numbers as written, strings quoted, arrays in brackets.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U8(x) => write!(f, "{x}"),
            Value::I8(x) => write!(f, "{x}"),
            Value::U16(x) => write!(f, "{x}"),
            Value::I16(x) => write!(f, "{x}"),
            Value::U32(x) => write!(f, "{x}"),
            Value::I32(x) => write!(f, "{x}"),
            Value::U64(x) => write!(f, "{x}"),
            Value::I64(x) => write!(f, "{x}"),
            Value::F32(x) => write!(f, "{x}"),
            Value::F64(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Array(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
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

impl TensorInfo {
    /// The shape in row-major (transformers) order: `ne` reversed.
    pub fn shape(&self) -> Vec<usize> {
        // Every ne was checked at open to fit in i64 and its product in memory.
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }
}

pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub alignment: u64,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    index: BTreeMap<String, usize>,
    map: Arc<memmap2::Mmap>,
    /// File offset of the data section (after the tensor infos, aligned).
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

/// ggml's name of a type id we do not read, so the error says what the file holds.
fn ggml_type_name(id: u32) -> Option<&'static str> {
    const NAMES: [(u32, &str); 17] = [
        (9, "q8_1"),
        (15, "q8_K"),
        (16, "iq2_xxs"),
        (17, "iq2_xs"),
        (18, "iq3_xxs"),
        (19, "iq1_s"),
        (20, "iq4_nl"),
        (21, "iq3_s"),
        (22, "iq2_s"),
        (23, "iq4_xs"),
        (24, "i8"),
        (25, "i16"),
        (28, "f64"),
        (29, "iq1_m"),
        (34, "tq1_0"),
        (35, "tq2_0"),
        (39, "mxfp4"),
    ];
    NAMES.iter().find(|(i, _)| *i == id).map(|(_, n)| *n)
}

/// Reads little-endian items from the mapped bytes, every read bounds-checked.
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
    fn array<const N: usize>(&mut self, item: &str) -> Result<[u8; N]> {
        let s = self.take(N, item)?;
        <[u8; N]>::try_from(s).map_err(|_| self.err(item, format!("expected {N} bytes")))
    }
    fn u32(&mut self, item: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(item)?))
    }
    fn u64(&mut self, item: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(item)?))
    }
    /// A count of items at least `min_item` bytes each, checked against what remains.
    fn count(&mut self, item: &str, what: &str, min_item: usize) -> Result<usize> {
        let n = self.u64(item)?;
        let most = (self.remaining() / min_item.max(1)) as u64;
        if n > most {
            return Err(self.err(item, format!("{what} {n} cannot fit in the {} bytes that remain (at most {most} of at least {min_item} bytes each)", self.remaining())));
        }
        Ok(n as usize)
    }
    fn string(&mut self, item: &str) -> Result<String> {
        let n = self.count(item, "string length", 1)?;
        let s = self.take(n, item)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.err(item, "string is not UTF-8"))
    }
    /// One value of GGUF type `ty` (gguf.h `enum gguf_type`).
    fn value(&mut self, ty: u32, item: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(u8::from_le_bytes(self.array(item)?)),
            1 => Value::I8(i8::from_le_bytes(self.array(item)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(item)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(item)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(item)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(item)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(item)?)),
            7 => match self.take(1, item)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(item, format!("bool byte {b} is neither 0 nor 1"))),
            },
            8 => Value::String(self.string(item)?),
            9 => self.array_value(item, depth)?,
            10 => Value::U64(u64::from_le_bytes(self.array(item)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(item)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(item)?)),
            _ => return Err(self.err(item, format!("unknown value type {ty} (expected 0 to 12)"))),
        })
    }
    /// An array: element type u32, count u64, elements (which may be arrays).
    fn array_value(&mut self, item: &str, depth: usize) -> Result<Value> {
        if depth >= MAX_DEPTH {
            return Err(self.err(item, format!("arrays nested deeper than {MAX_DEPTH}")));
        }
        let et = self.u32(item)?;
        // The fewest bytes one element can take: a string is at least its length,
        // an array at least its element type and count.
        let min = match et {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 12,
            _ => return Err(self.err(item, format!("unknown array element type {et} (expected 0 to 12)"))),
        };
        let n = self.count(item, "array length", min)?;
        let mut v = Vec::with_capacity(n.min(MAX_PREALLOC));
        for _ in 0..n {
            v.push(self.value(et, item, depth + 1)?);
        }
        Ok(Value::Array(v))
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only map; the file is not expected to change while parity runs.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let mut c = Cursor { b: &map, pos: 0, path };
        let version = read_header(&mut c)?;
        let n_tensors = c.count("header", "tensor count", MIN_TENSOR_INFO)?;
        let n_kv = c.count("header", "metadata count", MIN_KV)?;
        let metadata = read_metadata(&mut c, n_kv)?;
        let alignment = alignment_of(&c, &metadata)?;
        let (tensors, index) = read_tensor_infos(&mut c, n_tensors, alignment)?;
        let data_start = c.pos.div_ceil(alignment as usize) * alignment as usize;
        if !tensors.is_empty() && data_start > map.len() {
            return Err(c.err("header", format!("the data section starts at {data_start}, past the end of the file ({} bytes)", map.len())));
        }
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

    /// Tensor names in file order.
    pub fn tensor_names(&self) -> Vec<&str> {
        self.tensors.iter().map(|t| t.name.as_str()).collect()
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// File offset of the data section (tensor offsets are relative to it).
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// The byte range of a tensor's data in the file.
    fn extent(&self, t: &TensorInfo) -> Result<std::ops::Range<usize>> {
        let bad = |msg: String| Error::format(&self.path, &t.name, msg);
        let n = element_count(&t.ne).ok_or_else(|| bad(format!("dimensions {:?} overflow (ggml requires each and their product below 2^63)", t.ne)))?;
        let (be, bb) = t.dtype.block();
        let row = t.ne.first().copied().unwrap_or(1) as usize;
        if !row.is_multiple_of(be) {
            return Err(bad(format!("rows of {row} elements are not whole {} blocks of {be}", t.dtype)));
        }
        let len = (n / be).checked_mul(bb).ok_or_else(|| bad(format!("{n} {} elements overflow a byte count", t.dtype)))?;
        let start = usize::try_from(t.offset).ok().and_then(|o| o.checked_add(self.data_start));
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(start), Some(end)) if end <= self.map.len() => Ok(start..end),
            _ => Err(bad(format!("data at offset {} ({len} bytes) from the data section at {} runs past the end of the file ({} bytes)", t.offset, self.data_start, self.map.len()))),
        }
    }

    /// A tensor by its GGUF name, with its shape in row-major (transformers) order.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let t = self.info(name).ok_or_else(|| Error::format(&self.path, name, "tensor is missing from the GGUF"))?;
        let range = self.extent(t)?;
        Tensor::new(name, t.dtype, t.shape(), Backing::Map(self.map.clone()), range).map_err(|e| Error::format(&self.path, name, e.to_string()))
    }
}

/// Magic and version; returns the version.
fn read_header(c: &mut Cursor) -> Result<u32> {
    if c.take(4, "header")? != MAGIC {
        return Err(c.err("header", "bad magic: not a GGUF file (expected the bytes \"GGUF\")"));
    }
    let version = c.u32("header")?;
    // gguf.cpp's heuristic: a big-endian v2/v3 file reads as 0x0N000000 here.
    if version != 0 && version & 0xFFFF == 0 {
        return Err(c.err("header", format!("GGUF version {version:#x} looks like a big-endian file, which is not supported")));
    }
    if !(2..=3).contains(&version) {
        return Err(c.err("header", format!("GGUF version {version} is not supported (expected 2 or 3)")));
    }
    Ok(version)
}

fn read_metadata(c: &mut Cursor, n_kv: usize) -> Result<Vec<(String, Value)>> {
    let mut metadata = Vec::with_capacity(n_kv.min(MAX_PREALLOC));
    let mut seen = HashSet::new();
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key #{i}"))?;
        if !seen.insert(key.clone()) {
            return Err(c.err(&key, "duplicate metadata key"));
        }
        let ty = c.u32(&key)?;
        let v = c.value(ty, &key, 0)?;
        metadata.push((key, v));
    }
    Ok(metadata)
}

/// `general.alignment`: a power of two (ggml), default 32.
fn alignment_of(c: &Cursor, metadata: &[(String, Value)]) -> Result<u64> {
    let Some((_, v)) = metadata.iter().find(|(k, _)| k == "general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let a = v.as_u64().ok_or_else(|| c.err("general.alignment", format!("must be an unsigned integer, found {}", v.short())))?;
    if a == 0 || !a.is_power_of_two() || a > u32::MAX as u64 {
        return Err(c.err("general.alignment", format!("{a} is not a power of two that fits in u32")));
    }
    Ok(a)
}

fn read_tensor_infos(c: &mut Cursor, n: usize, alignment: u64) -> Result<(Vec<TensorInfo>, BTreeMap<String, usize>)> {
    let mut tensors = Vec::with_capacity(n.min(MAX_PREALLOC));
    let mut index = BTreeMap::new();
    for i in 0..n {
        let t = read_tensor_info(c, i, alignment)?;
        if index.insert(t.name.clone(), tensors.len()).is_some() {
            return Err(c.err(&t.name, "duplicate tensor name"));
        }
        tensors.push(t);
    }
    Ok((tensors, index))
}

/// One tensor info: name, n_dims, ne[n_dims], type, offset.
fn read_tensor_info(c: &mut Cursor, i: usize, alignment: u64) -> Result<TensorInfo> {
    let name = c.string(&format!("tensor info #{i}"))?;
    let nd = c.u32(&name)? as usize;
    if nd > MAX_DIMS {
        return Err(c.err(&name, format!("{nd} dimensions (expected at most {MAX_DIMS})")));
    }
    let mut ne = Vec::with_capacity(nd);
    for _ in 0..nd {
        ne.push(c.u64(&name)?);
    }
    if element_count(&ne).is_none() {
        return Err(c.err(&name, format!("dimensions {ne:?} overflow (ggml requires each and their product below 2^63)")));
    }
    let ty = c.u32(&name)?;
    let dtype = dtype_from_ggml(ty).ok_or_else(|| match ggml_type_name(ty) {
        Some(known) => c.err(&name, format!("tensor type {ty} ({known}) is not supported")),
        None => c.err(&name, format!("unknown tensor type {ty}")),
    })?;
    let offset = c.u64(&name)?;
    if offset % alignment != 0 {
        return Err(c.err(&name, format!("data offset {offset} is not aligned to {alignment}")));
    }
    Ok(TensorInfo { name, ne, dtype, offset })
}

/// The product of `ne` if it stays below 2^63 (ggml's `INT64_MAX` bound) and fits a usize.
fn element_count(ne: &[u64]) -> Option<usize> {
    let n = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d).filter(|&p| p <= i64::MAX as u64))?;
    usize::try_from(n).ok()
}
