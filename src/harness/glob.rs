//! Stage globs (SPEC §3): `*` (any run of characters, dots included, so `L*`
//! matches every layer), `?` (one character), `{a,b}` alternatives and
//! `{0..3}` inclusive numeric ranges (`L{0..3}.*` is layers 0 to 3).
//! Braces may nest; a pattern expands to a set of plain wildcard patterns.

use std::fmt;

/// A compiled stage glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    source: String,
    /// Brace-free wildcard patterns; the glob matches if any of them does.
    alternatives: Vec<String>,
}

/// Expansion beyond this many alternatives is almost certainly a typo (`{0..99999}`).
const MAX_ALTERNATIVES: usize = 4096;

impl Glob {
    /// Parses a glob; the error says what is wrong in a sentence.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty stage glob".into());
        }
        let alternatives = expand(pattern)?;
        Ok(Glob { source: pattern.to_string(), alternatives })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, name: &str) -> bool {
        self.alternatives.iter().any(|p| wildcard(p.as_bytes(), name.as_bytes()))
    }

    /// True for the catch-all `*` (or any glob that is only stars).
    pub fn is_catch_all(&self) -> bool {
        self.alternatives.iter().any(|p| !p.is_empty() && p.bytes().all(|b| b == b'*'))
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Expands the first top-level brace group and recurses on the results.
fn expand(p: &str) -> Result<Vec<String>, String> {
    let Some(open) = p.find('{') else {
        if p.contains('}') {
            return Err(format!("unbalanced '}}' in stage glob {p:?}"));
        }
        return Ok(vec![p.to_string()]);
    };
    if p[..open].contains('}') {
        return Err(format!("unbalanced '}}' in stage glob {p:?}"));
    }
    // Find the matching close brace and the top-level commas inside it.
    let mut depth = 0;
    let mut close = None;
    let mut commas = Vec::new();
    for (i, c) in p.char_indices().skip_while(|&(i, _)| i < open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    let close = close.ok_or_else(|| format!("unclosed '{{' in stage glob {p:?}"))?;
    let inner = &p[open + 1..close];
    let mut parts: Vec<String> = Vec::new();
    if commas.is_empty() {
        if let Some((a, b)) = inner.split_once("..") {
            let (a, b): (usize, usize) = match (a.trim().parse(), b.trim().parse()) {
                (Ok(a), Ok(b)) => (a, b),
                _ => return Err(format!("range {{{inner}}} in stage glob {p:?} must be {{START..END}} with integers")),
            };
            if a > b {
                return Err(format!("range {{{inner}}} in stage glob {p:?} is empty (start after end)"));
            }
            if b - a >= MAX_ALTERNATIVES {
                return Err(format!("range {{{inner}}} in stage glob {p:?} is too large"));
            }
            parts.extend((a..=b).map(|i| i.to_string()));
        } else if inner.is_empty() {
            return Err(format!("empty '{{}}' in stage glob {p:?}"));
        } else {
            // A single alternative: `{q}` is the same as `q`.
            parts.push(inner.to_string());
        }
    } else {
        let mut start = open + 1;
        for &c in commas.iter().chain(std::iter::once(&close)) {
            let alt = &p[start..c];
            if alt.is_empty() {
                return Err(format!("empty alternative in {{{inner}}} of stage glob {p:?}"));
            }
            parts.push(alt.to_string());
            start = c + 1;
        }
    }
    let (head, tail) = (&p[..open], &p[close + 1..]);
    let mut out = Vec::new();
    for part in parts {
        for e in expand(&format!("{head}{part}{tail}"))? {
            out.push(e);
            if out.len() > MAX_ALTERNATIVES {
                return Err(format!("stage glob {p:?} expands to more than {MAX_ALTERNATIVES} patterns"));
            }
        }
    }
    Ok(out)
}

/// Classic `*`/`?` matcher with single-star backtracking: O(len(p) * len(s)).
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p).unwrap().matches(s)
    }

    #[test]
    fn wildcards_and_braces() {
        assert!(m("*", "logits"));
        assert!(m("L*", "L12.q_rope"));
        assert!(!m("L*", "logits"));
        assert!(m("L*.{q_rope,k_rope}", "L3.k_rope"));
        assert!(!m("L*.{q_rope,k_rope}", "L3.q"));
        assert!(m("L?.q", "L7.q"));
        assert!(!m("L?.q", "L17.q"));
        assert!(m("L{0..3}.*", "L3.out"));
        assert!(!m("L{0..3}.*", "L4.out"));
        assert!(!m("L{0..3}.*", "L13.out"));
        assert!(m("L{1,{5..6}}.out", "L6.out"));
        assert!(m("logits", "logits"));
        assert!(!m("logits", "logits2"));
    }

    #[test]
    fn bad_globs_are_errors() {
        for p in ["", "L{0..3", "L0}", "L{}", "L{a..3}", "L{5..1}", "L{a,,b}"] {
            assert!(Glob::new(p).is_err(), "{p:?} should be rejected");
        }
        assert!(Glob::new("*").unwrap().is_catch_all());
        assert!(!Glob::new("L*").unwrap().is_catch_all());
    }
}
