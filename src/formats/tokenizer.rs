//! Text in and out: `tokenizer.json` through the `tokenizers` crate (onig regex,
//! as the Python tokenizers use), and chat templates through minijinja.

use std::path::Path;

use crate::error::{Error, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// Loads `tokenizer.json` from a model folder (or the folder beside a GGUF file).
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::format(dir, "tokenizer.json", "missing: parity run needs the model's tokenizer.json"));
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| Error::format(&path, "tokenizer", e.to_string()))?;
        Ok(Tokenizer { inner })
    }

    /// Builds a byte-level BPE tokenizer from a GGUF's own vocabulary
    /// (`tokenizer.ggml.model = gpt2`: tokens, merges, and control tokens as
    /// specials). The pre-tokenizer is the byte-level default; a GGUF records a
    /// pre-tokenizer name (`tokenizer.ggml.pre`) whose exact regex is llama.cpp's.
    pub fn from_gguf(f: &crate::formats::gguf::GgufFile) -> Result<Tokenizer> {
        use tokenizers::models::bpe::{Vocab, BPE};
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::AddedToken;
        let bad = |item: &str, msg: &str| Error::format(&f.path, item, msg);
        match f.get("tokenizer.ggml.model").and_then(|v| v.as_str()) {
            Some("gpt2") => {}
            Some(other) => return Err(bad("tokenizer.ggml.model", &format!("{other:?} vocabularies are not supported (byte-level BPE `gpt2` only)"))),
            None => return Err(bad("tokenizer.ggml.model", "missing: the GGUF carries no vocabulary")),
        }
        let tokens = f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).ok_or_else(|| bad("tokenizer.ggml.tokens", "missing or not an array"))?;
        let merges = f.get("tokenizer.ggml.merges").and_then(|v| v.as_array()).ok_or_else(|| bad("tokenizer.ggml.merges", "missing or not an array"))?;
        let types = f.get("tokenizer.ggml.token_type").and_then(|v| v.as_array());
        let mut vocab: Vec<(String, u32)> = Vec::with_capacity(tokens.len());
        let mut specials = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            let t = t.as_str().ok_or_else(|| bad("tokenizer.ggml.tokens", "a token is not a string"))?;
            vocab.push((t.to_string(), i as u32));
            // llama.cpp token types: 3 = control (special tokens such as <|im_end|>).
            if types.and_then(|ty| ty.get(i)).and_then(|v| v.as_u64()) == Some(3) {
                specials.push(AddedToken::from(t.to_string(), true));
            }
        }
        let merges: Vec<(String, String)> = merges.iter().filter_map(|m| m.as_str().and_then(|m| m.split_once(' ')).map(|(a, b)| (a.to_string(), b.to_string()))).collect();
        let bpe = BPE::builder().vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges).build().map_err(|e| bad("tokenizer.ggml.merges", &e.to_string()))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::default()));
        inner.add_special_tokens(specials).map_err(|e| bad("tokenizer.ggml.tokens", &e.to_string()))?;
        Ok(Tokenizer { inner })
    }

    /// Encodes text as-is (special tokens in the text are recognised, none are added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::mismatch(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| Error::mismatch(format!("tokenizer: {e}")))
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// Renders a chat template for one user message, with the generation prompt,
/// the way transformers' `apply_chat_template(add_generation_prompt=True)` does.
pub fn render_chat(template: &str, user: &str) -> Result<String> {
    let mut env = minijinja::Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_template("chat", template).map_err(|e| Error::mismatch(format!("chat template: {e}")))?;
    let t = env.get_template("chat").map_err(|e| Error::mismatch(format!("chat template: {e}")))?;
    let ctx = minijinja::context! {
        messages => vec![minijinja::context! { role => "user", content => user }],
        add_generation_prompt => true,
        bos_token => "",
        eos_token => "",
    };
    t.render(ctx).map_err(|e| Error::mismatch(format!("chat template: {e}")))
}
