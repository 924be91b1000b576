//! A reader of one JSON object that collects every problem instead of stopping at the
//! first, and remembers which keys it was asked for (the others are typos, or keys of
//! the platform's own).

use serde_json::{Map, Value};

use super::keys::{ChoiceKey, IntKey};

/// Reads keys of one JSON object, collecting problems instead of stopping at the first,
/// and remembering which keys it knows (the others are typos or someone else's).
pub(super) struct Reader<'a> {
    obj: &'a Map<String, Value>,
    /// Prefix of the keys in messages (`retry.` inside `retry`).
    prefix: &'static str,
    pub(super) problems: Vec<String>,
    known: std::cell::RefCell<Vec<String>>,
    /// Unknown keys inside nested objects (`retry`).
    pub(super) nested_unknown: Vec<String>,
}

/// A key the connector does not read is probably a typo of one it does when it is at
/// least this similar (Jaro-Winkler).
const TYPO_SIMILARITY: f64 = 0.8;

/// The known name closest to `name`, if it looks like a typo of it.
pub fn did_you_mean<'k>(name: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(score, _)| *score >= TYPO_SIMILARITY)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

impl<'a> Reader<'a> {
    pub(super) fn new(obj: &'a Map<String, Value>, prefix: &'static str) -> Self {
        Reader {
            obj,
            prefix,
            problems: Vec::new(),
            known: Default::default(),
            nested_unknown: Vec::new(),
        }
    }

    /// The keys present that no reader asked for, each with a suggestion when it looks
    /// like a typo: warnings, not errors (platforms may add keys of their own).
    pub(super) fn unknown_keys(&self) -> Vec<String> {
        let known = self.known.borrow();
        self.obj
            .keys()
            .filter(|k| !known.contains(k))
            .map(|k| {
                let hint = match did_you_mean(k, known.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{}{s}`?", self.prefix),
                    None => "it is ignored".to_string(),
                };
                format!(
                    "unknown config key `{}{k}`: {hint} (see spec.json for every key)",
                    self.prefix
                )
            })
            .collect()
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        {
            let mut known = self.known.borrow_mut();
            if !known.iter().any(|k| k == key) {
                known.push(key.to_string());
            }
        }
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub(super) fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    pub(super) fn string(&mut self, key: &str, hint: &str) -> Option<String> {
        match self.get(key) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                let p = format!(
                    "`{}{key}` must be a string, got {}{hint}",
                    self.prefix,
                    kind(other)
                );
                self.problem(p);
                None
            }
        }
    }

    pub(super) fn number_in(
        &mut self,
        key: &str,
        min: f64,
        max: f64,
        default: f64,
        hint: &str,
    ) -> f64 {
        let Some(v) = self.get(key) else {
            return default;
        };
        let n = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n.is_finite() && n >= min && n <= max => n,
            _ => {
                let p = format!(
                    "`{}{key}` must be a number between {min} and {max}, got {}{hint}",
                    self.prefix,
                    short(v)
                );
                self.problem(p);
                default
            }
        }
    }

    /// The key's value within its bounds, or its default (when absent or wrong).
    pub(super) fn integer(&mut self, k: &IntKey) -> u64 {
        let Some(v) = self.get(k.key) else {
            return k.default;
        };
        let n = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n >= k.min && n <= k.max => n,
            _ => {
                let p = format!(
                    "`{}{}` must be a whole number between {} and {}, got {}",
                    self.prefix,
                    k.key,
                    k.min,
                    k.max,
                    short(v)
                );
                self.problem(p);
                k.default
            }
        }
    }

    pub(super) fn choice<T: Copy>(&mut self, k: &ChoiceKey<T>) -> T {
        let Some(s) = self.string(k.key, "") else {
            return k.default;
        };
        match k
            .options
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&s))
        {
            Some((_, v)) => *v,
            None => {
                let names: Vec<&str> = k.options.iter().map(|(n, _)| *n).collect();
                let p = format!(
                    "`{}{}` must be one of {}, got {:?}",
                    self.prefix,
                    k.key,
                    names.join(", "),
                    s
                );
                self.problem(p);
                k.default
            }
        }
    }

    pub(super) fn boolean(&mut self, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                let p = format!(
                    "`{}{key}` must be true or false, got {}",
                    self.prefix,
                    short(other)
                );
                self.problem(p);
                default
            }
        }
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}…", &s[..s.floor_char_boundary(40)])
    } else {
        s
    }
}
