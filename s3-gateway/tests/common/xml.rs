//! Just enough XML for S3 answers: a well-formedness check (balanced tags, one root) and the
//! text of elements by name.

/// The elements of `doc` as (path, text) in document order, e.g. ("Error/Code", "NoSuchKey").
/// Panics when the document is not well formed.
pub fn elements(doc: &str) -> Vec<(String, String)> {
    let mut rest = doc.trim();
    if let Some(r) = rest.strip_prefix("<?xml") {
        let end = r.find("?>").expect("unterminated XML declaration");
        rest = r[end + 2..].trim_start();
    }
    let mut stack: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut text = String::new();
    let mut roots = 0;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('<') {
            let end = r
                .find('>')
                .unwrap_or_else(|| panic!("unterminated tag in {doc}"));
            let tag = &r[..end];
            rest = &r[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack
                    .pop()
                    .unwrap_or_else(|| panic!("stray </{name}> in {doc}"));
                assert_eq!(open, name, "mismatched tags in {doc}");
                out.push((
                    format!("{}/{name}", stack.join("/"))
                        .trim_start_matches('/')
                        .to_owned(),
                    unescape(&text),
                ));
                text.clear();
            } else {
                let self_closing = tag.ends_with('/');
                let name = tag
                    .trim_end_matches('/')
                    .split_whitespace()
                    .next()
                    .unwrap_or_else(|| panic!("empty tag in {doc}"))
                    .to_owned();
                if stack.is_empty() {
                    roots += 1;
                }
                if self_closing {
                    let path = if stack.is_empty() {
                        name
                    } else {
                        format!("{}/{name}", stack.join("/"))
                    };
                    out.push((path, String::new()));
                } else {
                    stack.push(name);
                }
                text.clear();
            }
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            text.push_str(&rest[..end]);
            rest = &rest[end..];
        }
    }
    assert!(stack.is_empty(), "unclosed elements {stack:?} in {doc}");
    assert_eq!(roots, 1, "not exactly one root element in {doc}");
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Texts of the elements whose path ends with `suffix` (e.g. "Contents/Key").
pub fn all(doc: &str, suffix: &str) -> Vec<String> {
    elements(doc)
        .into_iter()
        .filter(|(p, _)| p == suffix || p.ends_with(&format!("/{suffix}")))
        .map(|(_, t)| t)
        .collect()
}

pub fn one(doc: &str, suffix: &str) -> Option<String> {
    all(doc, suffix).into_iter().next()
}

/// The code of an S3 error document, checking its shape: root `Error` with a `Code`.
pub fn error_code(doc: &str) -> String {
    let els = elements(doc);
    assert!(
        els.last().is_some_and(|(p, _)| p == "Error"),
        "root is not <Error>: {doc}"
    );
    els.into_iter()
        .find(|(p, _)| p == "Error/Code")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("no <Code> in {doc}"))
}
