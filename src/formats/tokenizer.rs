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
