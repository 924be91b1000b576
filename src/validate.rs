//! JSON Schema validation of records, compiled once per stream per run.

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
#[error("schema of stream {stream:?} does not compile: {message}")]
pub struct SchemaError {
    pub stream: String,
    pub message: String,
}

pub struct RecordValidator {
    validator: jsonschema::Validator,
}

/// One reason a record does not match its schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub path: String,
    pub reason: String,
}

impl RecordValidator {
    pub fn new(stream: &str, schema: &Value) -> Result<Self, SchemaError> {
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .map_err(|e| SchemaError {
                stream: stream.to_string(),
                message: e.to_string(),
            })?;
        Ok(RecordValidator { validator })
    }

    /// The first few violations (empty when valid).
    pub fn check(&self, record: &Value) -> Vec<Violation> {
        if self.validator.is_valid(record) {
            return Vec::new();
        }
        self.validator
            .iter_errors(record)
            .take(5)
            .map(|e| {
                let path = e.instance_path().to_string();
                Violation {
                    path: if path.is_empty() { "/".into() } else { path },
                    reason: e.to_string(),
                }
            })
            .collect()
    }
}
