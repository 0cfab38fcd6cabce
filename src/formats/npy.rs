//! `.npy` (NumPy format versions 1-3), little-endian, C order: the stage files
//! of a trace. `bf16` has no NumPy dtype, so it is stored as `<u2` bit patterns
//! and the manifest says `dtype: bf16`.

use std::io::Write;
use std::path::Path;

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::formats::tensor::DType;

/// A decoded array: floats widened to f32, integers kept as i64.
#[derive(Clone, Debug)]
pub enum NpyData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Clone, Debug)]
pub struct Npy {
    pub shape: Vec<usize>,
    /// The descr found in the file, mapped to our dtype names (`<u2` reads as bf16
    /// only when the caller says so).
    pub dtype: DType,
    pub data: NpyData,
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// Reads an `.npy` file; `want` is the manifest dtype (needed to tell bf16 from u16).
pub fn read(path: &Path, want: Option<DType>) -> Result<Npy> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(path, &bytes, want)
}

pub fn parse(path: &Path, bytes: &[u8], want: Option<DType>) -> Result<Npy> {
    let bad = |item: &str, msg: String| Error::format(path, item, msg);
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("header", "not an .npy file (magic \\x93NUMPY missing)".into()));
    }
    let (hlen, hstart) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(bad("header", format!("unsupported .npy version {v}"))),
    };
    let hend = hstart.checked_add(hlen).filter(|&e| e <= bytes.len()).ok_or_else(|| bad("header", format!("header of {hlen} bytes runs past the end of the file")))?;
    let header = std::str::from_utf8(&bytes[hstart..hend]).map_err(|_| bad("header", "header is not text".into()))?;
    let descr = dict_value(header, "descr").ok_or_else(|| bad("header", "no 'descr' key".into()))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order").unwrap_or("False");
    if fortran.starts_with("True") {
        return Err(bad("header", "Fortran-order arrays are not supported; save in C order".into()));
    }
    let shape_txt = dict_value(header, "shape").ok_or_else(|| bad("header", "no 'shape' key".into()))?;
    let shape = parse_shape(shape_txt).ok_or_else(|| bad("header", format!("unreadable shape {shape_txt}")))?;
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| bad("shape", format!("shape {shape:?} overflows")))?;
    let body = &bytes[hend..];
    let (itemsize, dtype) = match descr {
        "<f4" => (4, DType::F32),
        "<f2" => (2, DType::F16),
        "<u2" | "<i2" if want == Some(DType::BF16) => (2, DType::BF16),
        "<i4" => (4, DType::I32),
        "<i8" => (8, DType::I64),
        "<f8" => (8, DType::F32), // widened on read; kept as f32 below
        other => return Err(bad("descr", format!("unsupported dtype {other} (expected <f4, <f2, <f8, <i4, <i8, or <u2 with dtype bf16 in the manifest)"))),
    };
    let need = n.checked_mul(itemsize).ok_or_else(|| bad("shape", format!("shape {shape:?} overflows")))?;
    if body.len() != need {
        return Err(bad("data", format!("shape {shape:?} of {descr} needs {need} bytes, the file holds {}", body.len())));
    }
    let data = match descr {
        "<f4" => NpyData::F32(body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        "<f8" => NpyData::F32(body.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32).collect()),
        "<f2" => NpyData::F32(body.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()),
        "<u2" | "<i2" => NpyData::F32(body.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()),
        "<i4" => NpyData::I64(body.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect()),
        _ => NpyData::I64(body.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect()),
    };
    Ok(Npy { shape, dtype, data })
}

/// The raw text of `key`'s value in a Python dict literal header.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat_sq = format!("'{key}'");
    let at = header.find(&pat_sq).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + pat_sq.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find(',').unwrap_or(rest.len()) };
    Some(rest[..end].trim())
}

fn parse_shape(s: &str) -> Option<Vec<usize>> {
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    inner.split(',').map(str::trim).filter(|t| !t.is_empty()).map(|t| t.trim_end_matches('L').parse().ok()).collect()
}

fn header_bytes(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending with a newline.
    let total = MAGIC.len() + 4 + h.len() + 1;
    h.push_str(&" ".repeat((64 - total % 64) % 64));
    h.push('\n');
    let mut out = Vec::with_capacity(10 + h.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out
}

/// Writes f32 data as `dtype` (f32, f16 or bf16-as-`<u2`).
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32], dtype: DType) -> Result<()> {
    let (descr, body): (&str, Vec<u8>) = match dtype {
        DType::F16 => ("<f2", data.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect()),
        DType::BF16 => ("<u2", data.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect()),
        _ => ("<f4", data.iter().flat_map(|&x| x.to_le_bytes()).collect()),
    };
    write_raw(path, descr, shape, &body)
}

pub fn write_i32(path: &Path, shape: &[usize], data: &[i32]) -> Result<()> {
    let body: Vec<u8> = data.iter().flat_map(|&x| x.to_le_bytes()).collect();
    write_raw(path, "<i4", shape, &body)
}

fn write_raw(path: &Path, descr: &str, shape: &[usize], body: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(&header_bytes(descr, shape)).and_then(|_| f.write_all(body)).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_dtypes() {
        let tmp = tempfile::Builder::new().prefix("parity-npy-").tempdir().expect("a scratch folder under the system temporary directory");
        let dir = tmp.path();
        let data = [1.0f32, -2.5, 3.25, 0.0, 1e-3, 7.0];
        for dt in [DType::F32, DType::F16, DType::BF16] {
            let p = dir.join(format!("a-{dt}.npy"));
            write_f32(&p, &[2, 3], &data, dt).unwrap();
            let a = read(&p, Some(dt)).unwrap();
            assert_eq!(a.shape, vec![2, 3]);
            let NpyData::F32(v) = a.data else { panic!() };
            for (x, y) in v.iter().zip(data) {
                assert!((x - y).abs() <= 1e-2 * y.abs().max(1e-3), "{dt}: {x} vs {y}");
            }
        }
        let p = dir.join("i.npy");
        write_i32(&p, &[3], &[1, -2, 3]).unwrap();
        let NpyData::I64(v) = read(&p, None).unwrap().data else { panic!() };
        assert_eq!(v, vec![1, -2, 3]);
    }

    #[test]
    fn truncated_and_hostile_headers_are_errors() {
        let p = Path::new("x.npy");
        assert!(parse(p, b"garbage", None).is_err());
        let mut good = header_bytes("<f4", &[4]);
        good.extend_from_slice(&[0u8; 12]); // one element short
        let e = parse(p, &good, None).unwrap_err().to_string();
        assert!(e.contains("needs 16 bytes"), "{e}");
        let mut huge = header_bytes("<f4", &[usize::MAX / 2, 4]);
        huge.extend_from_slice(&[0u8; 16]);
        assert!(parse(p, &huge, None).is_err());
        let mut v1 = b"\x93NUMPY\x01\x00\xff\xff".to_vec();
        v1.extend_from_slice(b"{}");
        assert!(parse(p, &v1, None).unwrap_err().to_string().contains("past the end"));
    }
}
