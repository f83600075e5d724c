//! `paginate` on an `http` source: how a window's answer is split into pages and where each
//! page says the next one is. The pages are fetched one after the other (the next page is
//! known only from the one before), spooled to local files, and landed as objects
//! `<stem>-p00001.<ext>`, `<stem>-p00002.<ext>`, … committed together by the window's manifest.

use reqwest::Url;
use reqwest::header::{HeaderMap, LINK};
use serde::Serialize;
use serde_json::Value;

/// How a paged API says where the next page is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Paginate {
    /// The response's `Link` header (RFC 8288) has a `rel="next"` URL; none on the last page.
    LinkHeader,
    /// A member of the page (a dotted path) holds the next page's URL; absent, null or empty
    /// on the last page.
    NextUrl {
        /// Dotted path to the URL (`links.next`).
        next_url_path: String,
    },
    /// A member of the page holds a token, sent back as query parameter `param`; absent, null
    /// or empty on the last page.
    Cursor {
        /// Dotted path to the token (`meta.next_cursor`).
        cursor_path: String,
        /// The query parameter that carries it.
        param: String,
    },
    /// `param` counts records from `start`, `limit_param` = `limit` per page; a page with
    /// fewer than `limit` records is the last.
    Offset {
        /// The offset's query parameter.
        param: String,
        /// The page size's query parameter.
        limit_param: String,
        /// Records per page.
        limit: u64,
        /// The first offset.
        start: u64,
    },
    /// `param` numbers the pages from `start`; an empty page ends the window.
    Page {
        /// The page number's query parameter.
        param: String,
        /// The first page's number.
        start: u64,
    },
}

impl Paginate {
    /// The kinds, as written in lake.toml.
    pub const KINDS: [&str; 5] = ["link_header", "next_url", "cursor", "offset", "page"];

    /// The query parameters this pagination sets on every request (a source's `query` must
    /// not set them too).
    pub fn params(&self) -> Vec<&str> {
        match self {
            Self::LinkHeader | Self::NextUrl { .. } => Vec::new(),
            Self::Cursor { param, .. } | Self::Page { param, .. } => vec![param],
            Self::Offset {
                param, limit_param, ..
            } => vec![param, limit_param],
        }
    }

    /// Whether the end is found by counting a page's records (`records_path` then needed
    /// unless a page is a JSON array).
    pub fn counts_records(&self) -> bool {
        matches!(self, Self::Offset { .. } | Self::Page { .. })
    }

    /// The first page's URL: `base` (the window's URL with its query) with this pagination's
    /// parameters for the first page.
    pub(crate) fn first(&self, base: &Url) -> Url {
        match self {
            Self::Offset {
                param,
                limit_param,
                limit,
                start,
            } => with_params(
                base,
                &[
                    (param, &start.to_string()),
                    (limit_param, &limit.to_string()),
                ],
            ),
            Self::Page { param, start } => with_params(base, &[(param, &start.to_string())]),
            _ => base.clone(),
        }
    }

    /// Where the page after `page` (the `n`th, 1-based, fetched from `url`) is, or `None`
    /// when it was the last. `records`: how many records it holds, when counted. A URL taken
    /// from the page is resolved against `url`.
    pub(crate) fn next(
        &self,
        first: &Url,
        url: &Url,
        n: u64,
        headers: &HeaderMap,
        page: Option<&Value>,
        records: Option<usize>,
    ) -> Result<Option<Url>, String> {
        let text = |path: &str| -> Option<String> {
            match lookup(page?, path)? {
                Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let join = |link: &str| {
            url.join(link)
                .map_err(|e| format!("the next page's URL {link:?} is not a URL: {e}"))
        };
        Ok(match self {
            Self::LinkHeader => match next_link(headers) {
                Some(link) => Some(join(&link)?),
                None => None,
            },
            Self::NextUrl { next_url_path } => match text(next_url_path) {
                Some(link) => Some(join(&link)?),
                None => None,
            },
            Self::Cursor { cursor_path, param } => {
                text(cursor_path).map(|token| with_params(first, &[(param, &token)]))
            }
            Self::Offset {
                param,
                limit_param,
                limit,
                start,
            } => {
                let got = records.unwrap_or(0) as u64;
                (got >= *limit && got > 0).then(|| {
                    with_params(
                        first,
                        &[
                            (param, &(start + n * limit).to_string()),
                            (limit_param, &limit.to_string()),
                        ],
                    )
                })
            }
            Self::Page { param, start } => (records.unwrap_or(0) > 0)
                .then(|| with_params(first, &[(param, &(start + n).to_string())])),
        })
    }
}

/// `url` with each `(name, value)` set (replacing any value it had).
pub(crate) fn with_params(url: &Url, params: &[(&str, &str)]) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !params.iter().any(|(p, _)| p == k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut out = url.clone();
    out.set_query(None);
    {
        let mut q = out.query_pairs_mut();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    out
}

/// The member of `doc` at a dotted `path` (`meta.next_cursor`); array elements by index
/// (`items.0.id`).
pub(crate) fn lookup<'v>(doc: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(doc, |cur, part| match cur {
        Value::Object(o) => o.get(part),
        Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// How many records a page holds: the array at `records_path`, else the page itself when it
/// is an array.
pub(crate) fn count_records(doc: &Value, records_path: Option<&str>) -> Result<usize, String> {
    match records_path {
        Some(p) => match lookup(doc, p) {
            Some(Value::Array(a)) => Ok(a.len()),
            Some(Value::Null) | None => Ok(0),
            Some(_) => Err(format!("records_path {p:?} is not an array in the page")),
        },
        None => match doc {
            Value::Array(a) => Ok(a.len()),
            _ => Err(
                "the page is not a JSON array: set records_path to where its records are".into(),
            ),
        },
    }
}

/// The `rel="next"` target of a `Link` header (RFC 8288): `<url>; rel="next"`, the relation
/// among several space-separated ones, several links per header and several headers.
pub(crate) fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(links)
        .find(|(_, rels)| rels.iter().any(|r| r.eq_ignore_ascii_case("next")))
        .map(|(target, _)| target)
}

/// The links of one `Link` value: each target with its `rel` values.
fn links(value: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let target = rest[open + 1..open + close].trim().to_owned();
        rest = &rest[open + close + 1..];
        // The link's parameters run to the next `<` outside a quoted string.
        let mut end = rest.len();
        let mut quoted = false;
        for (i, c) in rest.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '<' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let params = &rest[..end];
        rest = &rest[end..];
        let rels = params
            .split(';')
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("rel")
                    .then(|| v.trim().trim_matches(|c| c == '"' || c == ','))
            })
            .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        out.push((target, rels));
    }
    out
}

/// The name of page `n` of an object named `filename`: `orders.json` → `orders-p00001.json`.
pub(crate) fn page_name(filename: &str, n: u64) -> String {
    match filename.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}-p{n:05}.{ext}"),
        _ => format!("{filename}-p{n:05}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn link(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(LINK, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_next_link_is_found_among_others_and_across_headers() {
        let h = link(&[
            r#"<https://api.x/items?page=1>; rel="first", <https://api.x/items?page=3>; rel="next last""#,
        ]);
        assert_eq!(next_link(&h).as_deref(), Some("https://api.x/items?page=3"));
        let h = link(&[r#"</a?page=1>; rel="prev""#, r#"</a?page=2>; rel=next"#]);
        assert_eq!(next_link(&h).as_deref(), Some("/a?page=2"));
        let h = link(&[r#"<https://x/a;b?c=1>; title="a, <b>"; rel="next""#]);
        assert_eq!(next_link(&h).as_deref(), Some("https://x/a;b?c=1"));
        assert_eq!(next_link(&link(&[r#"<https://x/1>; rel="prev""#])), None);
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn params_replace_their_old_values_and_keep_the_rest() {
        let u = Url::parse("https://x/a?since=2024-01-01&cursor=old").unwrap();
        assert_eq!(
            with_params(&u, &[("cursor", "n w")]).as_str(),
            "https://x/a?since=2024-01-01&cursor=n+w"
        );
    }

    #[test]
    fn records_are_counted_at_their_path_or_as_the_page() {
        let doc: Value = serde_json::json!({"data": {"items": [1, 2, 3]}, "n": 1});
        assert_eq!(count_records(&doc, Some("data.items")), Ok(3));
        assert_eq!(count_records(&doc, Some("data.none")), Ok(0));
        assert!(count_records(&doc, Some("n")).is_err());
        assert!(count_records(&doc, None).is_err());
        assert_eq!(count_records(&serde_json::json!([{}, {}]), None), Ok(2));
        assert_eq!(lookup(&doc, "data.items.1"), Some(&serde_json::json!(2)));
    }

    #[test]
    fn pages_are_named_after_the_object() {
        assert_eq!(page_name("orders.json", 1), "orders-p00001.json");
        assert_eq!(page_name("orders", 12), "orders-p00012");
        assert_eq!(page_name("a.b.json", 3), "a.b-p00003.json");
    }

    #[test]
    fn offset_and_page_stop_on_a_short_or_empty_page() {
        let first = Url::parse("https://x/a?q=1").unwrap();
        let off = Paginate::Offset {
            param: "offset".into(),
            limit_param: "limit".into(),
            limit: 2,
            start: 0,
        };
        let f = off.first(&first);
        assert_eq!(f.as_str(), "https://x/a?q=1&offset=0&limit=2");
        let h = HeaderMap::new();
        let next = off.next(&f, &f, 1, &h, None, Some(2)).unwrap().unwrap();
        assert_eq!(next.as_str(), "https://x/a?q=1&offset=2&limit=2");
        assert_eq!(off.next(&f, &next, 2, &h, None, Some(1)).unwrap(), None);
        let page = Paginate::Page {
            param: "page".into(),
            start: 1,
        };
        let f = page.first(&first);
        assert_eq!(
            page.next(&f, &f, 1, &h, None, Some(5))
                .unwrap()
                .unwrap()
                .as_str(),
            "https://x/a?q=1&page=2"
        );
        assert_eq!(page.next(&f, &f, 2, &h, None, Some(0)).unwrap(), None);
    }
}
