//! Weight tensors that stay in their stored type, backed by a memory map.
//!
//! Shapes are in the transformers (row-major, outermost first) order, so a
//! linear weight is `[out, in]` whatever file it came from; GGUF's reversed
//! `ne` order is undone by the GGUF reader. Quantised blocks run along the
//! innermost dimension, so one row can always be dequantised on its own.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::formats::quants;

/// Element types of weights and traces. GGUF quant names follow ggml.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
    I64,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl DType {
    /// (elements per block, bytes per block); plain types have blocks of one.
    pub fn block(self) -> (usize, usize) {
        match self {
            DType::F32 | DType::I32 => (1, 4),
            DType::F16 | DType::BF16 => (1, 2),
            DType::I64 => (1, 8),
            DType::Q4_0 => (32, 18),
            DType::Q4_1 => (32, 20),
            DType::Q5_0 => (32, 22),
            DType::Q5_1 => (32, 24),
            DType::Q8_0 => (32, 34),
            DType::Q2_K => (256, 84),
            DType::Q3_K => (256, 110),
            DType::Q4_K => (256, 144),
            DType::Q5_K => (256, 176),
            DType::Q6_K => (256, 210),
        }
    }

    /// The dtype name used in manifests, contracts and messages.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q5_0 => "q5_0",
            DType::Q5_1 => "q5_1",
            DType::Q8_0 => "q8_0",
            DType::Q2_K => "q2_k",
            DType::Q3_K => "q3_k",
            DType::Q4_K => "q4_k",
            DType::Q5_K => "q5_k",
            DType::Q6_K => "q6_k",
        }
    }

    pub fn from_name(s: &str) -> Option<DType> {
        const ALL: [DType; 15] = [
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::I32,
            DType::I64,
            DType::Q4_0,
            DType::Q4_1,
            DType::Q5_0,
            DType::Q5_1,
            DType::Q8_0,
            DType::Q2_K,
            DType::Q3_K,
            DType::Q4_K,
            DType::Q5_K,
            DType::Q6_K,
        ];
        ALL.into_iter().find(|d| d.name().eq_ignore_ascii_case(s))
    }

    pub fn is_quantized(self) -> bool {
        self.block().0 > 1
    }

    /// Bytes needed for `n` elements, or None if `n` is not a whole number of blocks.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        let (be, bb) = self.block();
        if !n.is_multiple_of(be) {
            return None;
        }
        (n / be).checked_mul(bb)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bytes of a file region: a shared memory map (weights) or an owned buffer (tests, derived tensors).
#[derive(Clone)]
pub enum Backing {
    Map(Arc<memmap2::Mmap>),
    Owned(Arc<Vec<u8>>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Owned(v) => v,
        }
    }
    pub fn len(&self) -> usize {
        self.bytes().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One named weight tensor in its stored dtype.
#[derive(Clone)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    /// Row-major shape, outermost first (transformers order).
    pub shape: Vec<usize>,
    backing: Backing,
    range: Range<usize>,
    /// Logical row r is stored at row `row_map[r]` (undoing a converter's row
    /// permutation without copying the stored blocks).
    row_map: Option<Arc<Vec<u32>>>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({} {} {:?})", self.name, self.dtype, self.shape)
    }
}

impl Tensor {
    /// A tensor over `backing[range]`; checks that the byte length fits the shape and dtype.
    pub fn new(name: impl Into<String>, dtype: DType, shape: Vec<usize>, backing: Backing, range: Range<usize>) -> Result<Tensor> {
        let name = name.into();
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| Error::mismatch(format!("tensor {name}: shape {shape:?} overflows")))?;
        let need = dtype.bytes_for(n).ok_or_else(|| Error::mismatch(format!("tensor {name}: {n} elements are not a whole number of {dtype} blocks of {}", dtype.block().0)))?;
        if range.end < range.start || range.end > backing.len() || range.len() != need {
            return Err(Error::mismatch(format!(
                "tensor {name}: {dtype} {shape:?} needs {need} bytes, the file region holds {} (bytes {}..{} of {})",
                range.end.saturating_sub(range.start),
                range.start,
                range.end,
                backing.len()
            )));
        }
        Ok(Tensor { name, dtype, shape, backing, range, row_map: None })
    }

    /// An owned f32 tensor (tests, derived weights such as un-permuted Q/K rows).
    pub fn from_f32(name: impl Into<String>, shape: Vec<usize>, data: &[f32]) -> Result<Tensor> {
        let bytes: Vec<u8> = bytemuck::cast_slice(data).to_vec();
        let len = bytes.len();
        Tensor::new(name, DType::F32, shape, Backing::Owned(Arc::new(bytes)), 0..len)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.backing.bytes()[self.range.clone()]
    }

    /// Says the process will not read this tensor's bytes again soon (they
    /// were laid out again elsewhere): the whole pages inside it leave the
    /// resident set, so a model's memory stays about its file's size. A later
    /// read maps them in again from the file. Only for tensors over a mapped
    /// file; a hint, errors ignored.
    pub fn release_pages(&self) {
        #[cfg(unix)]
        if let Backing::Map(m) = &self.backing {
            const PAGE: usize = 4096;
            let (start, end) = (self.range.start.next_multiple_of(PAGE), self.range.end / PAGE * PAGE);
            if end > start {
                // SAFETY: the map is read-only and private (`Mmap::map`), never
                // written: dropping its pages loses nothing, and reads after
                // this fault them in again from the file.
                let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
            }
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Length of the innermost dimension (a matrix row).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    pub fn n_rows(&self) -> usize {
        self.numel() / self.row_len().max(1)
    }

    /// Bytes of logical row `r` (rows are whole blocks: checked at load by `expect_shape`).
    pub fn row_bytes(&self, r: usize) -> &[u8] {
        self.row_view().row(r)
    }

    /// The tensor's rows, for reading many: the row size and the backing
    /// looked up once (`row_bytes` does both for each row).
    pub fn row_view(&self) -> RowView<'_> {
        RowView { bytes: self.bytes(), size: self.dtype.bytes_for(self.row_len()).unwrap_or(0), map: self.row_map.as_deref().map(|m| m.as_slice()) }
    }

    /// Dequantise row `r` into `out` (length `row_len`).
    pub fn dequant_row(&self, r: usize, out: &mut [f32]) {
        quants::dequantize(self.dtype, self.row_bytes(r), out);
    }

    /// The whole tensor as f32 (small tensors: norms, biases, embeddings rows on demand).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.numel()];
        let rl = self.row_len().max(1);
        for (r, chunk) in out.chunks_mut(rl).enumerate() {
            self.dequant_row(r, chunk);
        }
        out
    }

    /// The same tensor with logical row `r` read from stored row `map[r]`; `map` must
    /// be a permutation of the rows.
    pub fn with_row_map(mut self, map: Vec<u32>) -> Result<Tensor> {
        let n = self.n_rows();
        let mut seen = vec![false; n];
        if map.len() != n || !map.iter().all(|&r| (r as usize) < n && !std::mem::replace(&mut seen[r as usize], true)) {
            return Err(Error::mismatch(format!("tensor {}: row map is not a permutation of its {n} rows", self.name)));
        }
        self.row_map = Some(Arc::new(map));
        Ok(self)
    }

    /// The `i`-th slice along the first dimension (`[E, R, C]` -> `[R, C]`): one expert of a stack.
    pub fn select(&self, i: usize) -> Result<Tensor> {
        if self.row_map.is_some() {
            return Err(Error::mismatch(format!("tensor {}: cannot slice a row-mapped tensor", self.name)));
        }
        let (&n, rest) = self.shape.split_first().ok_or_else(|| Error::mismatch(format!("tensor {} is a scalar", self.name)))?;
        if i >= n {
            return Err(Error::mismatch(format!("tensor {}: index {i} outside its first dimension of {n}", self.name)));
        }
        let per = self.bytes_len() / n;
        let start = self.range.start + i * per;
        Tensor::new(format!("{}[{i}]", self.name), self.dtype, rest.to_vec(), self.backing.clone(), start..start + per)
    }

    /// Rows `first..first+n` of a matrix (`[R, C]` -> `[n, C]`).
    pub fn rows(&self, first: usize, n: usize) -> Result<Tensor> {
        if self.shape.len() != 2 || first + n > self.shape[0] || self.row_map.is_some() {
            return Err(Error::mismatch(format!("tensor {} {:?}: rows {first}..{} out of range", self.name, self.shape, first + n)));
        }
        let rb = self.dtype.bytes_for(self.row_len()).unwrap_or(0);
        let start = self.range.start + first * rb;
        Tensor::new(format!("{}[{first}..{}]", self.name, first + n), self.dtype, vec![n, self.shape[1]], self.backing.clone(), start..start + n * rb)
    }

    fn bytes_len(&self) -> usize {
        self.range.len()
    }

    /// Checks the shape against what the model config implies.
    pub fn expect_shape(&self, model: &str, want: &[usize]) -> Result<()> {
        if self.shape != want {
            return Err(Error::model(model, format!("tensor {} has shape {:?}, the config implies {:?}", self.name, self.shape, want)));
        }
        if self.dtype.bytes_for(self.row_len()).is_none() {
            return Err(Error::model(model, format!("tensor {}: rows of {} are not whole {} blocks", self.name, self.row_len(), self.dtype)));
        }
        Ok(())
    }
}

/// A tensor's rows as stored bytes (`Tensor::row_view`).
#[derive(Clone, Copy, Debug)]
pub struct RowView<'a> {
    bytes: &'a [u8],
    size: usize,
    map: Option<&'a [u32]>,
}

impl<'a> RowView<'a> {
    /// Bytes of logical row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> &'a [u8] {
        let r = self.map.map_or(r, |m| m[r] as usize);
        &self.bytes[r * self.size..(r + 1) * self.size]
    }
}
