//! Editing a ShopSet's manifest in place (`spec.maintenance`, `spec.shops`): the files live in git and are reviewed, so an edit
//! changes the one field it is about and leaves every other byte (comments, order, quoting, other
//! documents) as the person wrote it. YAML libraries drop comments, so this works on lines, and
//! then parses its result to prove that it changed exactly that field.

use serde::Deserialize;
use serde_json::Value;

use crate::api::{GROUP, Hold, Maintenance};

mod destination;
pub use destination::set_destination;

/// Why a manifest could not be edited.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("document {index}: not valid YAML: {error}; fix: correct the YAML syntax first")]
    Yaml { index: usize, error: serde_yaml::Error },
    #[error(
        "ShopSet/{name} (document {index}): spec is not written as a block mapping (`spec:` alone on its line, its fields indented below); fix: write it so, or edit spec.{field} by hand"
    )]
    NotBlock { name: String, index: usize, field: &'static str },
    /// An edit of another field than spec.maintenance that cannot be made on lines.
    #[error("ShopSet/{name} (document {index}): {field} cannot be edited in place: {why}; fix: edit {field} by hand")]
    Layout { name: String, index: usize, field: &'static str, why: &'static str },
    #[error(
        "Tier/{name} (document {index}): spec.promotion is not written as a block mapping (`promotion:` alone on its line, its fields indented below); fix: write it so, or edit spec.promotion.hold by hand"
    )]
    NotBlockTier { name: String, index: usize },
    #[error(
        "Tier/{name} (document {index}): the edit would change more than spec.promotion.hold (an unusual layout); fix: edit spec.promotion.hold by hand"
    )]
    UnsafeTier { name: String, index: usize },
    #[error(
        "ShopSet/{name} (document {index}): the edit would change more than spec.{field} (an unusual layout, e.g. anchors, or a flow list over several lines); fix: edit spec.{field} by hand"
    )]
    Unsafe { name: String, index: usize, field: &'static str },
}

/// One document of a YAML stream: its lines `[start, end)`.
struct Document {
    start: usize,
    end: usize,
}

/// Splits lines (each with its line ending) into documents at `---` lines.
fn documents(lines: &[&str]) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut start = 0;
    for (i, line) in lines.iter().enumerate() {
        let rest = line.strip_prefix("---");
        if rest.is_some_and(|r| r.trim().is_empty() || r.starts_with([' ', '\t'])) {
            docs.push(Document { start, end: i });
            start = i + 1;
        }
    }
    docs.push(Document { start, end: lines.len() });
    docs
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// A line that holds YAML content (not blank, not only a comment).
fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// The line ending the text uses (CRLF when its first line ends so).
fn line_ending(text: &str) -> &'static str {
    match text.find('\n') {
        Some(i) if i > 0 && text.as_bytes()[i - 1] == b'\r' => "\r\n",
        _ => "\n",
    }
}

/// A YAML scalar for a shop ID: plain where YAML reads it back as that string, else quoted.
fn scalar(value: &str) -> String {
    let plain = value.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !matches!(
            value.to_ascii_lowercase().as_str(),
            "y" | "yes" | "n" | "no" | "true" | "false" | "on" | "off" | "null"
        );
    if plain { value.to_string() } else { quoted(value) }
}

/// A double-quoted YAML scalar: JSON's, plus escapes for the characters YAML reads as line breaks.
fn quoted(value: &str) -> String {
    let json = serde_json::Value::String(value.to_string()).to_string();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if matches!(c, '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}') {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether the document is the ShopSet `name` (in `namespace`, when one is given: a document that
/// names none is in it, as with `kubectl -n`).
fn is_shopset(value: &Value, name: &str, namespace: Option<&str>) -> bool {
    let text = |p: &str| value.pointer(p).and_then(Value::as_str);
    text("/apiVersion").and_then(|v| v.split('/').next()) == Some(GROUP)
        && text("/kind") == Some("ShopSet")
        && text("/metadata/name") == Some(name)
        && namespace.is_none_or(|ns| text("/metadata/namespace").is_none_or(|n| n == ns))
}

/// The `spec:` block of one ShopSet in a YAML stream, located for a line edit.
struct SpecBlock<'t> {
    lines: Vec<&'t str>,
    parsed: Vec<Value>,
    name: String,
    index: usize,
    spec: usize,
    body_end: usize,
    /// Indentation of spec's fields.
    child: usize,
    eol: &'static str,
}

impl<'t> SpecBlock<'t> {
    /// Finds ShopSet `name`; `Ok(None)` when the stream holds none.
    fn locate(
        text: &'t str,
        name: &str,
        namespace: Option<&str>,
        field: &'static str,
    ) -> Result<Option<Self>, EditError> {
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let docs = documents(&lines);
        let mut parsed = Vec::new();
        for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            parsed.push(Value::deserialize(doc).map_err(|error| EditError::Yaml { index, error })?);
        }
        // serde_yaml skips empty documents (e.g. before a leading `---`); match the line documents
        // that hold content to the parsed ones, in order.
        let content: Vec<&Document> =
            docs.iter().filter(|d| lines[d.start..d.end].iter().any(|l| is_content(l))).collect();
        if content.len() != parsed.len() {
            // A layout this splitter does not know (e.g. `--- value` on one line): find the ShopSet
            // anyway, but do not touch it.
            return match parsed.iter().position(|v| is_shopset(v, name, namespace)) {
                Some(index) => Err(EditError::Unsafe { name: name.into(), index, field }),
                None => Ok(None),
            };
        }
        let Some(index) = parsed.iter().position(|v| is_shopset(v, name, namespace)) else {
            return Ok(None);
        };
        let doc = content[index];
        let eol = line_ending(text);
        let not_block = || EditError::NotBlock { name: name.into(), index, field };

        // `spec:` at column 0, alone (a comment may follow).
        let spec = (doc.start..doc.end)
            .find(|&i| {
                lines[i].strip_prefix("spec:").is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t', '\r', '\n']))
            })
            .ok_or_else(not_block)?;
        let after = lines[spec].strip_prefix("spec:").unwrap_or_default();
        if !(after.trim().is_empty() || after.trim_start().starts_with('#')) {
            return Err(not_block());
        }
        // The block: every line up to the first content line at column 0.
        let mut end = spec + 1;
        let mut last_content = spec;
        while end < doc.end {
            let line = lines[end];
            if is_content(line) {
                if indent(line) == 0 {
                    break;
                }
                last_content = end;
            }
            end += 1;
        }
        let body_end = last_content + 1;
        let child =
            (spec + 1..body_end).find(|&i| is_content(lines[i])).map(|i| indent(lines[i])).ok_or_else(not_block)?;
        Ok(Some(SpecBlock { lines, parsed, name: name.into(), index, spec, body_end, child, eol }))
    }

    fn key_at(&self, i: usize, key: &str) -> bool {
        let line = self.lines[i];
        indent(line) == self.child && line[self.child..].strip_prefix(key).is_some_and(|r| r.starts_with(':'))
    }

    /// The lines `[at, end)` of spec's entry `key`: its line and the more indented lines under it.
    fn entry(&self, key: &str) -> Option<(usize, usize)> {
        let at = (self.spec + 1..self.body_end).find(|&i| self.key_at(i, key))?;
        let mut last = at;
        for i in at + 1..self.body_end {
            let line = self.lines[i];
            if is_content(line) {
                // Items of a list may sit at their key's indentation (kubectl's style).
                let item = indent(line) == self.child && line.trim_start().starts_with('-');
                if indent(line) < self.child || (indent(line) == self.child && !item) {
                    break;
                }
                last = i;
            }
        }
        Some((at, last + 1))
    }

    /// How much deeper than their key the items of `shops:` are (0: kubectl's style, the default).
    fn seq_indent(&self) -> usize {
        (self.spec + 1..self.body_end)
            .find(|&i| self.key_at(i, "shops"))
            .and_then(|i| (i + 1..self.body_end).find(|&j| is_content(self.lines[j])))
            .filter(|&j| self.lines[j].trim_start().starts_with("- "))
            .map(|j| indent(self.lines[j]).saturating_sub(self.child))
            .unwrap_or(0)
    }

    fn unsafe_edit(&self, field: &'static str) -> EditError {
        EditError::Unsafe { name: self.name.clone(), index: self.index, field }
    }

    /// Replaces lines `[from, to)` with `block`, and proves that the result reads as the input
    /// with `spec.<field>` set to `value` (removed when None) and nothing else changed.
    fn finish(
        self,
        from: usize,
        to: usize,
        block: &str,
        field: &'static str,
        value: Option<Value>,
    ) -> Result<String, EditError> {
        let mut out = String::new();
        for line in &self.lines[..from] {
            out.push_str(line);
        }
        if !block.is_empty() && !out.is_empty() && !out.ends_with('\n') {
            out.push_str(self.eol);
        }
        out.push_str(block);
        for line in &self.lines[to..] {
            out.push_str(line);
        }
        let unsafe_edit = self.unsafe_edit(field);
        let mut expected = self.parsed;
        let spec_value = expected[self.index]
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| EditError::NotBlock { name: self.name.clone(), index: self.index, field })?;
        match value {
            Some(value) => {
                spec_value.insert(field.into(), value);
            }
            None => {
                spec_value.remove(field);
            }
        }
        let mut reread = Vec::new();
        for (i, doc) in serde_yaml::Deserializer::from_str(&out).enumerate() {
            reread.push(Value::deserialize(doc).map_err(|error| EditError::Yaml { index: i, error })?);
        }
        if reread != expected {
            return Err(unsafe_edit);
        }
        Ok(out)
    }
}

/// Sets (`Some`) or removes (`None`) `spec.maintenance` of ShopSet `name` in the YAML stream
/// `text`, changing no other byte. `Ok(None)` when the stream holds no such ShopSet; the new text
/// when it does (equal to `text` when there was nothing to change).
///
/// # Errors
/// When a document is not YAML, or the ShopSet's `spec` is laid out so that a line edit cannot be
/// proven to touch `spec.maintenance` alone.
pub fn set_maintenance(
    text: &str,
    name: &str,
    namespace: Option<&str>,
    maintenance: Option<&Maintenance>,
) -> Result<Option<String>, EditError> {
    const FIELD: &str = "maintenance";
    let Some(b) = SpecBlock::locate(text, name, namespace, FIELD)? else {
        return Ok(None);
    };
    let (child, eol) = (b.child, b.eol);
    let unit = child;
    let seq_indent = b.seq_indent();
    let mut block = String::new();
    if let Some(m) = maintenance {
        let pad = " ".repeat(child);
        let inner = " ".repeat(child + unit);
        block.push_str(&format!("{pad}maintenance:{eol}"));
        block.push_str(&format!("{inner}reason: {}{eol}", quoted(&m.reason)));
        let since = serde_json::to_value(&m.since).map_err(|_| b.unsafe_edit(FIELD))?;
        block.push_str(&format!("{inner}since: {}{eol}", quoted(since.as_str().unwrap_or_default())));
        if !m.shops.is_empty() {
            block.push_str(&format!("{inner}shops:{eol}"));
            let item = " ".repeat(child + unit + seq_indent);
            for shop in &m.shops {
                block.push_str(&format!("{item}- {}{eol}", scalar(shop)));
            }
        }
    }
    let (from, to) = b.entry(FIELD).unwrap_or((b.body_end, b.body_end));
    let value = match maintenance {
        Some(m) => Some(serde_json::to_value(m).map_err(|_| b.unsafe_edit(FIELD))?),
        None => None,
    };
    b.finish(from, to, &block, FIELD, value).map(Some)
}

/// Sets `spec.shops` of ShopSet `name` in the YAML stream `text` to `shops`, changing no other
/// byte: in a flow list (`shops: [a, b] # comment`) the brackets are rewritten and the comment
/// kept; in a block list, the lines (and comments) of shops that stay are kept, the lines of
/// shops that go are removed, and new shops are appended after the last item. `Ok(None)` when the
/// stream holds no such ShopSet.
///
/// # Errors
/// When a document is not YAML, or `spec.shops` is laid out so that a line edit cannot be proven
/// to touch it alone (e.g. a flow list over several lines).
pub fn set_shops(
    text: &str,
    name: &str,
    namespace: Option<&str>,
    shops: &[String],
) -> Result<Option<String>, EditError> {
    const FIELD: &str = "shops";
    let Some(b) = SpecBlock::locate(text, name, namespace, FIELD)? else {
        return Ok(None);
    };
    let (child, eol) = (b.child, b.eol);
    let pad = " ".repeat(child);
    let flow =
        |rest: &str| format!("{pad}shops: [{}]{rest}", shops.iter().map(|s| scalar(s)).collect::<Vec<_>>().join(", "));
    let value = Some(Value::Array(shops.iter().map(|s| Value::String(s.clone())).collect()));
    let Some((at, end)) = b.entry(FIELD) else {
        // No shops yet: a flow list at the end of spec.
        let block = flow(eol);
        let body_end = b.body_end;
        return b.finish(body_end, body_end, &block, FIELD, value).map(Some);
    };
    let key_line = b.lines[at];
    let after_key = &key_line[child + "shops:".len()..];
    let after = after_key.trim_start();
    if after.starts_with('[') {
        // A flow list on one line: keep what follows the closing bracket (a comment, the line end).
        let close = after.find(']').ok_or_else(|| b.unsafe_edit(FIELD))?;
        if end != at + 1 {
            return Err(b.unsafe_edit(FIELD));
        }
        let block = flow(&after[close + 1..]);
        return b.finish(at, end, &block, FIELD, value).map(Some);
    }
    if !(after.trim().is_empty() || after.starts_with('#')) {
        return Err(b.unsafe_edit(FIELD));
    }
    // A block list: one item per line.
    let mut block = String::new();
    let mut kept = Vec::new();
    let mut item_indent = child + b.seq_indent();
    let mut body = Vec::new();
    for i in at + 1..end {
        let line = b.lines[i];
        if is_content(line) {
            let item: Vec<String> = serde_yaml::from_str(line.trim()).map_err(|_| b.unsafe_edit(FIELD))?;
            let [item] = item.as_slice() else { return Err(b.unsafe_edit(FIELD)) };
            item_indent = indent(line);
            if shops.contains(item) {
                kept.push(item.clone());
                body.push(line.to_string());
            }
        } else {
            body.push(line.to_string());
        }
    }
    // New shops go after the last kept item (before trailing comments and blank lines).
    let insert_at = body.iter().rposition(|l| is_content(l)).map_or(0, |i| i + 1);
    let added: Vec<String> = shops
        .iter()
        .filter(|s| !kept.contains(s))
        .map(|s| format!("{}- {}{eol}", " ".repeat(item_indent), scalar(s)))
        .collect();
    body.splice(insert_at..insert_at, added);
    if shops.is_empty() {
        // An empty block list is not YAML: write an empty flow list.
        let rest = after_key.trim_start_matches([' ', '\t']);
        let comment = if rest.starts_with('#') { format!(" {rest}") } else { rest.to_string() };
        block.push_str(&format!("{pad}shops: []{comment}"));
    } else {
        block.push_str(key_line);
    }
    for line in body {
        block.push_str(&line);
    }
    b.finish(at, end, &block, FIELD, value).map(Some)
}

/// Whether the document is the Tier `name` (in `namespace`, as [`is_shopset`]).
fn is_tier(value: &Value, name: &str, namespace: Option<&str>) -> bool {
    let text = |p: &str| value.pointer(p).and_then(Value::as_str);
    text("/apiVersion").and_then(|v| v.split('/').next()) == Some(GROUP)
        && text("/kind") == Some("Tier")
        && text("/metadata/name") == Some(name)
        && namespace.is_none_or(|ns| text("/metadata/namespace").is_none_or(|n| n == ns))
}

/// The block mapping under the key at line `at` (indented `indent`): the lines `(at, end)` more
/// indented than it, and the indentation of its first key. `None` when the key has a value on its
/// own line (flow style) or nothing under it.
fn block_under(lines: &[&str], at: usize, indent_of_key: usize, key: &str, limit: usize) -> Option<(usize, usize)> {
    let after = lines[at][indent_of_key..].strip_prefix(key)?.strip_prefix(':')?;
    if !(after.trim().is_empty() || after.trim_start().starts_with('#')) {
        return None;
    }
    let mut last = at;
    for (i, line) in lines.iter().enumerate().take(limit).skip(at + 1) {
        if is_content(line) {
            if indent(line) <= indent_of_key {
                break;
            }
            last = i;
        }
    }
    let child = (at + 1..=last).find(|&i| is_content(lines[i])).map(|i| indent(lines[i]))?;
    Some((last + 1, child))
}

/// Sets (`Some`) or removes (`None`) `spec.promotion.hold` of Tier `name` in the YAML stream
/// `text`, changing no other byte, as [`set_maintenance`] does for a ShopSet. `Ok(None)` when the
/// stream holds no such Tier.
///
/// # Errors
/// When a document is not YAML, the Tier has no `spec.promotion` written as a block mapping, or
/// the edit cannot be proven to touch `spec.promotion.hold` alone.
pub fn set_hold(
    text: &str,
    name: &str,
    namespace: Option<&str>,
    hold: Option<&Hold>,
) -> Result<Option<String>, EditError> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let docs = documents(&lines);
    let mut parsed = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        parsed.push(Value::deserialize(doc).map_err(|error| EditError::Yaml { index, error })?);
    }
    let content: Vec<&Document> = docs.iter().filter(|d| lines[d.start..d.end].iter().any(|l| is_content(l))).collect();
    let Some(index) = parsed.iter().position(|v| is_tier(v, name, namespace)) else {
        return Ok(None);
    };
    let unsafe_edit = || EditError::UnsafeTier { name: name.into(), index };
    if content.len() != parsed.len() {
        return Err(unsafe_edit());
    }
    let doc = content[index];
    let eol = line_ending(text);
    let not_block = || EditError::NotBlockTier { name: name.into(), index };

    let spec = (doc.start..doc.end).find(|&i| lines[i].starts_with("spec:")).ok_or_else(not_block)?;
    let (spec_end, child) = block_under(&lines, spec, 0, "spec", doc.end).ok_or_else(not_block)?;
    let key_at = |i: usize, at: usize, key: &str| {
        let line = lines[i];
        indent(line) == at && line[at..].strip_prefix(key).is_some_and(|r| r.starts_with(':'))
    };
    let promotion = (spec + 1..spec_end).find(|&i| key_at(i, child, "promotion")).ok_or_else(not_block)?;
    let (promotion_end, inner) = block_under(&lines, promotion, child, "promotion", spec_end).ok_or_else(not_block)?;
    let existing = (promotion + 1..promotion_end).find(|&i| key_at(i, inner, "hold")).map(|at| {
        let mut last = at;
        for (i, line) in lines.iter().enumerate().take(promotion_end).skip(at + 1) {
            if is_content(line) {
                if indent(line) <= inner {
                    break;
                }
                last = i;
            }
        }
        (at, last + 1)
    });

    let mut block = String::new();
    if let Some(h) = hold {
        let pad = " ".repeat(inner);
        let deeper = " ".repeat(inner + child);
        block.push_str(&format!("{pad}hold:{eol}"));
        block.push_str(&format!("{deeper}reason: {}{eol}", quoted(&h.reason)));
        let since = serde_json::to_value(&h.since).map_err(|_| unsafe_edit())?;
        block.push_str(&format!("{deeper}since: {}{eol}", quoted(since.as_str().unwrap_or_default())));
        if let Some(by) = &h.by {
            block.push_str(&format!("{deeper}by: {}{eol}", quoted(by)));
        }
    }
    let mut out = String::with_capacity(text.len() + block.len());
    let (from, to) = existing.unwrap_or((promotion_end, promotion_end));
    for line in &lines[..from] {
        out.push_str(line);
    }
    if !block.is_empty() && !out.is_empty() && !out.ends_with('\n') {
        out.push_str(eol);
    }
    out.push_str(&block);
    for line in &lines[to..] {
        out.push_str(line);
    }

    // The proof, as for maintenance.
    let mut expected = parsed;
    let promotion_value =
        expected[index].pointer_mut("/spec/promotion").and_then(Value::as_object_mut).ok_or_else(not_block)?;
    match hold {
        Some(h) => {
            promotion_value.insert("hold".into(), serde_json::to_value(h).map_err(|_| unsafe_edit())?);
        }
        None => {
            promotion_value.remove("hold");
        }
    }
    let mut reread = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&out).enumerate() {
        reread.push(Value::deserialize(doc).map_err(|error| EditError::Yaml { index: i, error })?);
    }
    if reread != expected {
        return Err(unsafe_edit());
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn maintenance(shops: &[&str]) -> Maintenance {
        Maintenance {
            reason: "database migration, see OPS-123".into(),
            since: Time("2026-12-03T02:00:00Z".parse().unwrap()),
            shops: shops.iter().map(|s| s.to_string()).collect(),
        }
    }

    const FILE: &str = "\
# The ShopSets of tier-0. Reviewed by the shop team.
apiVersion: shopset.dev/v1alpha1
kind: ShopSet
metadata:
  name: canary-eu   # the first cell
spec:
  tier: tier-0
  configuration: shop-config
  # EU shops, keep sorted
  shops:
  - shop-de
  - shop-fr

  replicas: 2 # more at peak
---
# another one
apiVersion: shopset.dev/v1alpha1
kind: ShopSet
metadata:
  name: canary-us
spec:
    tier: tier-0
    configuration: shop-config
    shops:
        - shop-us
# trailing comment of the file
";

    #[test]
    fn turning_on_appends_the_block_and_keeps_every_other_byte() {
        let out = set_maintenance(FILE, "canary-eu", None, Some(&maintenance(&[]))).unwrap().unwrap();
        let expected = FILE.replace(
            "  replicas: 2 # more at peak\n",
            "  replicas: 2 # more at peak\n  maintenance:\n    reason: \"database migration, see OPS-123\"\n    since: \"2026-12-03T02:00:00Z\"\n",
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn shops_follow_the_files_indentation_and_list_style() {
        let out = set_maintenance(FILE, "canary-us", None, Some(&maintenance(&["shop-us"]))).unwrap().unwrap();
        let expected = FILE.replace(
            "        - shop-us\n",
            "        - shop-us\n    maintenance:\n        reason: \"database migration, see OPS-123\"\n        since: \"2026-12-03T02:00:00Z\"\n        shops:\n            - shop-us\n",
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn turning_off_removes_exactly_what_turning_on_added() {
        let on = set_maintenance(FILE, "canary-eu", None, Some(&maintenance(&["shop-fr"]))).unwrap().unwrap();
        assert_ne!(on, FILE);
        let off = set_maintenance(&on, "canary-eu", None, None).unwrap().unwrap();
        assert_eq!(off, FILE);
        // Off again: nothing to change.
        assert_eq!(set_maintenance(FILE, "canary-eu", None, None).unwrap().unwrap(), FILE);
    }

    #[test]
    fn an_existing_block_is_replaced_in_place() {
        let text = "apiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata:\n  name: a\nspec:\n  tier: t\n  maintenance: # by hand\n    reason: old\n    since: 2026-01-01T00:00:00Z\n  # shops of this cell\n  shops: [x, \"1\"]\nstatus: {}\n";
        let out = set_maintenance(text, "a", None, Some(&maintenance(&["1"]))).unwrap().unwrap();
        assert_eq!(
            out,
            "apiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata:\n  name: a\nspec:\n  tier: t\n  maintenance:\n    reason: \"database migration, see OPS-123\"\n    since: \"2026-12-03T02:00:00Z\"\n    shops:\n    - \"1\"\n  # shops of this cell\n  shops: [x, \"1\"]\nstatus: {}\n"
        );
    }

    #[test]
    fn other_objects_and_namespaces_are_not_matched() {
        assert!(set_maintenance(FILE, "nope", None, None).unwrap().is_none());
        let other_kind =
            FILE.replace("kind: ShopSet\nmetadata:\n  name: canary-eu", "kind: Tier\nmetadata:\n  name: canary-eu");
        assert!(set_maintenance(&other_kind, "canary-eu", None, Some(&maintenance(&[]))).unwrap().is_none());
        let namespaced =
            FILE.replace("  name: canary-eu   # the first cell\n", "  name: canary-eu\n  namespace: shops\n");
        assert!(set_maintenance(&namespaced, "canary-eu", Some("other"), None).unwrap().is_none());
        assert!(set_maintenance(&namespaced, "canary-eu", Some("shops"), None).unwrap().is_some());
    }

    #[test]
    fn crlf_files_and_files_without_a_final_newline_stay_so() {
        let crlf =
            "apiVersion: shopset.dev/v1alpha1\r\nkind: ShopSet\r\nmetadata:\r\n  name: a\r\nspec:\r\n  tier: t\r\n";
        let out = set_maintenance(crlf, "a", None, Some(&maintenance(&[]))).unwrap().unwrap();
        assert!(out.starts_with(crlf) && !out.replace("\r\n", "").contains('\n'), "{out:?}");
        let bare = crlf.replace("\r\n", "\n");
        let bare = bare.trim_end();
        let out = set_maintenance(bare, "a", None, Some(&maintenance(&[]))).unwrap().unwrap();
        assert!(out.starts_with(&format!("{bare}\n  maintenance:\n")), "{out:?}");
        assert_eq!(set_maintenance(&out, "a", None, None).unwrap().unwrap(), format!("{bare}\n"));
    }

    fn list(shops: &[&str]) -> Vec<String> {
        shops.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shops_in_a_block_list_keep_their_lines_and_comments() {
        let added = set_shops(FILE, "canary-eu", None, &list(&["shop-de", "shop-fr", "shop-it"])).unwrap().unwrap();
        assert_eq!(added, FILE.replace("  - shop-fr\n", "  - shop-fr\n  - shop-it\n"));
        let removed = set_shops(&added, "canary-eu", None, &list(&["shop-fr", "shop-it"])).unwrap().unwrap();
        assert_eq!(removed, FILE.replace("  - shop-de\n  - shop-fr\n", "  - shop-fr\n  - shop-it\n"));
        // The other document's deeper indentation is followed.
        let out = set_shops(FILE, "canary-us", None, &list(&["shop-us", "shop-ca"])).unwrap().unwrap();
        assert_eq!(out, FILE.replace("        - shop-us\n", "        - shop-us\n        - shop-ca\n"));
        // None left: an empty flow list, the key's comment kept.
        let text = "apiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata:\n  name: a\nspec:\n  shops: # mine\n  - x\n  tier: t\n";
        let out = set_shops(text, "a", None, &[]).unwrap().unwrap();
        assert_eq!(out, text.replace("  shops: # mine\n  - x\n", "  shops: [] # mine\n"));
    }

    #[test]
    fn shops_in_a_flow_list_keep_the_comment() {
        let text = "apiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata:\n  name: a\nspec:\n  tier: t\n  shops: [shop-1, \"2\"]   # EU canaries\n  replicas: 2\n";
        let out = set_shops(text, "a", None, &list(&["shop-1", "2", "shop-3"])).unwrap().unwrap();
        assert_eq!(out, text.replace("[shop-1, \"2\"]", "[shop-1, \"2\", shop-3]"));
        let none = "apiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata:\n  name: a\nspec:\n  tier: t\n";
        let out = set_shops(none, "a", None, &list(&["x"])).unwrap().unwrap();
        assert_eq!(out, format!("{none}  shops: [x]\n"));
        let multi = text.replace("[shop-1, \"2\"]", "[shop-1,\n    \"2\"]");
        assert!(matches!(set_shops(&multi, "a", None, &list(&["x"])), Err(EditError::Unsafe { .. })));
    }

    #[test]
    fn a_flow_style_spec_is_refused_not_rewritten() {
        let text =
            "apiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata: {name: a}\nspec: {tier: t, shops: [x]}\n";
        let err = set_maintenance(text, "a", None, Some(&maintenance(&[]))).unwrap_err();
        assert!(matches!(err, EditError::NotBlock { .. }), "{err}");
    }

    #[test]
    fn reasons_that_yaml_would_misread_are_quoted() {
        let mut m = maintenance(&[]);
        m.reason = "yes: #1\nsecond line \u{2028} 'quoted' \"too\"".into();
        let text = "apiVersion: shopset.dev/v1alpha1\nkind: ShopSet\nmetadata:\n  name: a\nspec:\n  tier: t\n";
        // The proof inside set_maintenance re-reads the reason; a bad quote would be an error.
        let out = set_maintenance(text, "a", None, Some(&m)).unwrap().unwrap();
        assert!(out.contains("\\u2028"), "{out}");
    }

    const TIER: &str = "\
apiVersion: shopset.dev/v1alpha1
kind: Tier
metadata:
  name: tier-1
spec:
  app:
    url: https://git.example/app # the shop
  promotion:
    from: tier-0
    soak: 30m # a quiet half hour
  interval: 1m
";

    fn hold() -> Hold {
        Hold {
            reason: "rolled back 1a2b3c4".into(),
            since: Time("2026-12-03T02:00:00Z".parse().unwrap()),
            by: Some("alice".into()),
        }
    }

    #[test]
    fn a_hold_goes_under_promotion_and_comes_out_again() {
        let on = set_hold(TIER, "tier-1", None, Some(&hold())).unwrap().unwrap();
        assert_eq!(
            on,
            TIER.replace(
                "    soak: 30m # a quiet half hour\n",
                "    soak: 30m # a quiet half hour\n    hold:\n      reason: \"rolled back 1a2b3c4\"\n      since: \"2026-12-03T02:00:00Z\"\n      by: \"alice\"\n"
            )
        );
        assert_eq!(set_hold(&on, "tier-1", None, None).unwrap().unwrap(), TIER);
        assert!(set_hold(TIER, "tier-0", None, None).unwrap().is_none());
        let err = set_hold(
            &TIER.replace("  promotion:\n    from: tier-0\n    soak: 30m # a quiet half hour\n", ""),
            "tier-1",
            None,
            Some(&hold()),
        )
        .unwrap_err();
        assert!(matches!(err, EditError::NotBlockTier { .. }), "{err}");
    }
}
