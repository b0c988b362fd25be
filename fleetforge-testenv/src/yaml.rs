//! Multi-document YAML, as Kubernetes manifests hold it: the one reader the tests
//! share.

use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize as _;

/// The documents of a multi-document YAML text (separated by `---`), as JSON
/// values, in order. Empty documents (a leading or trailing `---`, a document of
/// comments only) are left out; a document that does not parse fails the whole
/// text, naming its position (1-based, counting empty ones).
pub fn documents(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value =
            serde_json::Value::deserialize(doc).with_context(|| format!("YAML document {}", i + 1))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The [`documents`] of the file at `path`, naming the file in errors.
pub fn file_documents(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    documents(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn splits_documents_and_leaves_out_empty_ones() -> anyhow::Result<()> {
        let text = "---\n# only a comment\n---\nkind: A\nitems: [1, 2]\n---\n---\nkind: B\n---\n";
        assert_eq!(
            documents(text)?,
            vec![json!({"kind": "A", "items": [1, 2]}), json!({"kind": "B"})]
        );
        assert!(documents("")?.is_empty());
        Ok(())
    }

    #[test]
    fn a_bad_document_is_named() {
        let err = documents("kind: A\n---\nkind: [unclosed\n").unwrap_err();
        assert!(format!("{err:#}").starts_with("YAML document 2"), "{err:#}");
    }
}
