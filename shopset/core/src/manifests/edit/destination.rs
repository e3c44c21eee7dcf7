//! Setting a ShopSet's `spec.destination` in place (`shopctl shopset move`): one line changed or
//! added, every other byte kept, and the result re-read to prove it.

use serde::Deserialize;
use serde_json::Value;

use super::{Document, EditError, documents, indent, is_content, is_shopset, line_ending, scalar};

const FIELD: &str = "spec.destination";

/// Sets `spec.destination` of ShopSet `name` in the YAML stream `text` to `destination`, changing
/// no other byte: the existing `destination:` line is rewritten (keeping a comment after it), or
/// a new one goes right after `tier:` (else at the end of `spec`). `Ok(None)` when the stream
/// holds no such ShopSet; the new text when it does (equal to `text` when it is there already).
///
/// # Errors
/// When a document is not YAML, or the ShopSet's `spec` is laid out so that a line edit cannot be
/// proven to touch `spec.destination` alone.
pub fn set_destination(
    text: &str,
    name: &str,
    namespace: Option<&str>,
    destination: &str,
) -> Result<Option<String>, EditError> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let docs = documents(&lines);
    let mut parsed = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        parsed.push(Value::deserialize(doc).map_err(|error| EditError::Yaml { index, error })?);
    }
    let content: Vec<&Document> = docs.iter().filter(|d| lines[d.start..d.end].iter().any(|l| is_content(l))).collect();
    let Some(index) = parsed.iter().position(|v| is_shopset(v, name, namespace)) else {
        return Ok(None);
    };
    let layout = |why: &'static str| EditError::Layout { name: name.into(), index, field: FIELD, why };
    if content.len() != parsed.len() {
        return Err(layout("the file's documents are not separated by `---` lines"));
    }
    let doc = content[index];
    let eol = line_ending(text);

    let spec = (doc.start..doc.end)
        .find(|&i| lines[i].strip_prefix("spec:").is_some_and(|r| r.trim().is_empty() || r.trim().starts_with('#')))
        .ok_or_else(|| layout("spec is not written as a block mapping (`spec:` alone on its line)"))?;
    let mut end = spec + 1;
    let mut last_content = spec;
    while end < doc.end && !(is_content(lines[end]) && indent(lines[end]) == 0) {
        if is_content(lines[end]) {
            last_content = end;
        }
        end += 1;
    }
    let body_end = last_content + 1;
    let child = (spec + 1..body_end)
        .find(|&i| is_content(lines[i]))
        .map(|i| indent(lines[i]))
        .ok_or_else(|| layout("spec is empty"))?;
    let key_at = |i: usize, key: &str| {
        let line = lines[i];
        indent(line) == child && line[child..].strip_prefix(key).is_some_and(|r| r.starts_with(':'))
    };
    let pad = " ".repeat(child);
    let value = scalar(destination);

    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match (spec + 1..body_end).find(|&i| key_at(i, "destination")) {
        Some(at) => {
            let rest = &lines[at][child + "destination:".len()..];
            // A comment after the value stays; the value is one plain word or quoted string.
            let comment = rest
                .find(" #")
                .map(|hash| rest[rest[..hash].trim_end().len()..].trim_end_matches(['\r', '\n']))
                .unwrap_or_default();
            let ending = if lines[at].ends_with('\n') { eol } else { "" };
            out[at] = format!("{pad}destination: {value}{comment}{ending}");
        }
        None => {
            let after = (spec + 1..body_end).find(|&i| key_at(i, "tier")).unwrap_or(last_content);
            if !out[after].ends_with('\n') {
                out[after].push_str(eol);
            }
            out.insert(after + 1, format!("{pad}destination: {value}{eol}"));
        }
    }
    let out = out.concat();

    // The proof: the result reads as the input with spec.destination set, nothing else.
    let mut expected = parsed;
    let spec_value = expected[index]
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| layout("spec is not a mapping"))?;
    spec_value.insert("destination".into(), Value::String(destination.into()));
    let mut reread = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&out).enumerate() {
        reread.push(Value::deserialize(doc).map_err(|error| EditError::Yaml { index: i, error })?);
    }
    if reread != expected {
        return Err(layout("the edit would change more than spec.destination (e.g. anchors or flow style in spec)"));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# Cells of tier-1. Reviewed by the platform team.
apiVersion: shopset.dev/v1alpha1
kind: ShopSet
metadata:
  name: eu-west   # the big one
spec:
  tier: tier-1 # do not change
  configuration: shop-config
  shops: [shop-0100, shop-0101]
---
apiVersion: shopset.dev/v1alpha1
kind: ShopSet
metadata:
  name: us-east
spec:
    tier: tier-1
    destination: dc-a   # moved here after OPS-7
    shops:
        - shop-1100
";

    #[test]
    fn a_new_destination_goes_after_the_tier_and_every_other_byte_stays() {
        let out = set_destination(FILE, "eu-west", None, "dc-b").unwrap().unwrap();
        assert_eq!(
            out,
            FILE.replace("  tier: tier-1 # do not change\n", "  tier: tier-1 # do not change\n  destination: dc-b\n")
        );
    }

    #[test]
    fn an_existing_destination_is_rewritten_with_its_comment() {
        let out = set_destination(FILE, "us-east", None, "dc-c").unwrap().unwrap();
        assert_eq!(out, FILE.replace("destination: dc-a   # moved", "destination: dc-c   # moved"));
        // Already there: nothing changes.
        assert_eq!(set_destination(FILE, "us-east", None, "dc-a").unwrap().unwrap(), FILE);
    }

    #[test]
    fn other_objects_are_not_matched_and_flow_style_is_refused() {
        assert!(set_destination(FILE, "nope", None, "dc-a").unwrap().is_none());
        let flow = "apiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata: {name: a}\nspec: {tier: t}\n";
        let err = set_destination(flow, "a", None, "dc-a").unwrap_err();
        assert!(err.to_string().contains("spec.destination cannot be edited in place"), "{err}");
    }
}
