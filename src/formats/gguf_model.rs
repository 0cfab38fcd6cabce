//! A GGUF file as a model: metadata mapped onto `ModelConfig`, tensors renamed to
//! transformers names, and the converter's transforms undone. (Filled in once the
//! GGUF reader lands.)

use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::model::ModelSource;

pub fn open(path: &Path) -> Result<ModelSource> {
    Err(Error::format(path, "model", "GGUF models are not supported yet"))
}
