//! `kind = "s3"`: the objects another system writes into a bucket, landed in raw when they are
//! new or changed. What was landed is read from the source's committed windows (each raw
//! object's origin names the S3 key and the ETag it had), so an object lands once per version,
//! exactly once, whatever crashed in between.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::AwsSpec;
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use lake_core::backend::BackendEnv;
use lake_core::config::{ConfigCx, SourceSpec};
use lake_core::publish::{WindowIndex, raw_window_prefix};
use lake_core::source::{Source, SourceConfig, SourceKind, SourceObject, Window};
use lake_core::zone::{ByteStream, Digested};
use lake_core::{DynZoneStore, Error, Result};
use serde::{Deserialize, Serialize};

use crate::Aws;

/// The start of a version made from size and modification time, for a server whose listing
/// gives no ETag.
const SYNTHETIC: &str = "lake-size-mtime:";
/// The `s3` source kind: register it with `Kinds::source(S3SourceKind)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct S3SourceKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Keys {
    url: Option<String>,
    profile: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
}

impl SourceKind for S3SourceKind {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn SourceConfig>> {
        let k: S3Keys = cx.own()?;
        let Some(url) = k.url else {
            let at = cx.at().to_owned();
            cx.key(
                &at,
                "an s3 source needs `url`, e.g. url = \"s3://bucket/exports/*.csv.gz\"",
            );
            return None;
        };
        let spec = match S3SourceSpec::parse(&url) {
            Ok(s) => s,
            Err(m) => {
                cx.value(&cx.key_of("url"), m);
                return None;
            }
        };
        if let Some(e) = &k.endpoint_url
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            cx.value(
                &cx.key_of("endpoint_url"),
                format!("{e:?} is not an http:// or https:// URL"),
            );
            return None;
        }
        Some(Arc::new(S3SourceSpec {
            profile: k.profile,
            region: k.region,
            endpoint_url: k.endpoint_url,
            ..spec
        }))
    }
}

/// A checked `kind = "s3"` source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct S3SourceSpec {
    /// The bucket.
    pub bucket: String,
    /// The key pattern (`exports/*.csv.gz`): `*` and `?` within a path segment, `**` across.
    pub pattern: String,
    /// The pattern's literal start, listed from (`exports/`).
    pub prefix: String,
    /// Another profile than `[aws]`'s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Another region than `[aws]`'s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Another endpoint than `[aws]`'s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
}

impl S3SourceSpec {
    /// Parse `s3://bucket/pattern`.
    pub fn parse(url: &str) -> std::result::Result<Self, lake_core::ValueError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not an s3:// URL"))?;
        let (bucket, pattern) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(format!("{bucket:?} in {url:?} is not an S3 bucket name").into());
        }
        let pattern = if pattern.is_empty() || pattern.ends_with('/') {
            format!("{pattern}**")
        } else {
            pattern.to_owned()
        };
        glob::Pattern::new(&pattern)
            .map_err(|e| format!("{pattern:?} is not a valid key pattern: {e}"))?;
        let literal = pattern
            .find(['*', '?', '['])
            .map_or(pattern.as_str(), |i| &pattern[..i]);
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix: literal.to_owned(),
            pattern,
            profile: None,
            region: None,
            endpoint_url: None,
        })
    }

    /// The folder part of the prefix: what a key's object name drops (`exports/` of
    /// `exports/a/x.csv`, named `a/x.csv`).
    fn folder(&self) -> &str {
        self.prefix.rfind('/').map_or("", |i| &self.prefix[..=i])
    }

    fn matches(&self, key: &str) -> bool {
        glob::Pattern::new(&self.pattern).is_ok_and(|p| {
            p.matches_with(
                key,
                glob::MatchOptions {
                    require_literal_separator: true,
                    ..Default::default()
                },
            )
        })
    }

    /// The AWS configuration to read the bucket with: the source's own keys over `[aws]`'s,
    /// else the run's.
    async fn aws(&self, env: &BackendEnv) -> Aws {
        match self.aws_spec(&AwsSpec::of(&env.pipeline)) {
            Some(own) => Aws::load(&own).await,
            None => crate::emr::aws_of(env).await,
        }
    }

    fn aws_spec(&self, base: &AwsSpec) -> Option<AwsSpec> {
        (self.profile.is_some() || self.region.is_some() || self.endpoint_url.is_some()).then(
            || AwsSpec {
                profile: self.profile.clone().or_else(|| base.profile.clone()),
                region: self.region.clone().or_else(|| base.region.clone()),
                endpoint_url: self
                    .endpoint_url
                    .clone()
                    .or_else(|| base.endpoint_url.clone()),
                ..base.clone()
            },
        )
    }
}

#[async_trait]
impl SourceConfig for S3SourceSpec {
    fn describe(&self, spec: &SourceSpec) -> String {
        format!(
            "(s3, line {}): new or changed objects of s3://{}/{} → raw/{}/ingest_date=<date>/",
            spec.line, self.bucket, self.pattern, spec.name
        )
    }

    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        lake_core::kinds::json_object(self)
    }

    async fn open(&self, spec: &SourceSpec, env: &BackendEnv) -> Result<Arc<dyn Source>> {
        let aws = self.aws(env).await;
        Ok(Arc::new(S3Source::new(
            &spec.name,
            self.clone(),
            aws.s3(),
            Arc::clone(&env.store),
        )))
    }

    async fn doctor(&self, spec: &SourceSpec, env: &BackendEnv) -> Vec<lake_core::doctor::Check> {
        let aws = self.aws(env).await;
        let name = format!("source {}: s3://{}/{}", spec.name, self.bucket, self.prefix);
        let listed = aws
            .s3()
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .max_keys(1000)
            .send()
            .await;
        vec![match listed {
            Ok(page) => {
                let n = page
                    .contents()
                    .iter()
                    .filter(|o| o.key().is_some_and(|k| self.matches(k)))
                    .count();
                lake_core::doctor::Check::pass(
                    name,
                    format!(
                        "listed; {n} object(s) match {} in the first page",
                        self.pattern
                    ),
                )
            }
            Err(e) => lake_core::doctor::Check::fail(
                name,
                format!("cannot list it: {}", crate::calls::api_error(&e)),
                "allow s3:ListBucket on the bucket (`lake iam-policy` prints it) and check the bucket's name and region",
            ),
        }]
    }

    fn iam_statements(&self, spec: &SourceSpec) -> Vec<serde_json::Value> {
        let sid = spec
            .name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>();
        vec![
            serde_json::json!({
                "Sid": format!("Source{sid}List"),
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": format!("arn:aws:s3:::{}", self.bucket),
                "Condition": { "StringLike": { "s3:prefix": [format!("{}*", self.prefix)] } }
            }),
            serde_json::json!({
                "Sid": format!("Source{sid}Read"),
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": format!("arn:aws:s3:::{}/{}*", self.bucket, self.prefix)
            }),
        ]
    }
}

/// Lands the objects of a bucket that match a pattern and were not landed at their current
/// version (ETag) by an earlier window of the source.
pub struct S3Source {
    name: String,
    spec: S3SourceSpec,
    client: aws_sdk_s3::Client,
    /// The bucket read as a zone store: an object comes in ranged parts, several at once.
    bucket: crate::S3ZoneStore,
    store: Arc<DynZoneStore>,
    /// The key and ETag of each object `objects` offered, by window and name.
    offered: std::sync::Mutex<HashMap<(Window, String), (String, String)>>,
}

impl std::fmt::Debug for S3Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Source")
            .field("name", &self.name)
            .field("bucket", &self.spec.bucket)
            .field("pattern", &self.spec.pattern)
            .finish_non_exhaustive()
    }
}

/// How a raw object's origin names its S3 object and version: `s3://bucket/key#etag=…`.
fn origin(bucket: &str, key: &str, etag: &str) -> String {
    format!("s3://{bucket}/{key}#etag={etag}")
}

impl S3Source {
    /// The source `name` reading `spec`'s objects with `client`; `store` holds the lake's
    /// zones, whose committed windows say what was landed.
    pub fn new(
        name: &str,
        spec: S3SourceSpec,
        client: aws_sdk_s3::Client,
        store: Arc<DynZoneStore>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            bucket: crate::S3ZoneStore::new(client.clone(), spec.bucket.clone(), ""),
            spec,
            client,
            store,
            offered: Default::default(),
        }
    }

    fn err(&self, message: String, source: Option<lake_core::BoxError>) -> Error {
        Error::Source {
            source_name: self.name.clone(),
            message,
            source,
        }
    }

    /// The key of a listed object and the ETag to read it at (`If-Match`; none for a version
    /// made from size and time): the version listed, or an error, so a changed object is
    /// landed by the next window.
    fn version(&self, window: &Window, object: &SourceObject) -> Result<(String, Option<String>)> {
        let Some((key, etag)) = self
            .offered
            .lock()
            .expect("offered lock")
            .get(&(*window, object.name.clone()))
            .cloned()
        else {
            return Err(self.err(format!("{} was not listed", object.name), None));
        };
        let if_match = (!etag.starts_with(SYNTHETIC)).then(|| format!("\"{etag}\""));
        Ok((key, if_match))
    }

    fn unreadable(&self, key: &str, e: Error) -> Error {
        self.err(
            format!("cannot read s3://{}/{key} (s3:GetObject)", self.spec.bucket),
            Some(Box::new(e)),
        )
    }

    /// The origins (key and version) other windows of the source committed.
    async fn landed(&self, window: &Window) -> Result<HashSet<String>> {
        let index = WindowIndex::load(&*self.store, &self.name).await?;
        // This window's own objects do not count: a refetch (`--force`) offers them again.
        let own = raw_window_prefix(&self.name, window.start);
        Ok(index
            .windows
            .iter()
            .filter(|m| m.prefix != own)
            .flat_map(|m| m.objects.iter().filter_map(|o| o.origin.clone()))
            .collect())
    }
}

#[async_trait]
impl Source for S3Source {
    fn name(&self) -> &str {
        &self.name
    }

    async fn objects(&self, window: &Window) -> Result<Vec<SourceObject>> {
        let landed = self.landed(window).await?;
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.spec.bucket)
            .prefix(&self.spec.prefix)
            .into_paginator()
            .send();
        let mut offered = HashMap::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                self.err(
                    format!(
                        "cannot list s3://{}/{} (s3:ListBucket): {}",
                        self.spec.bucket,
                        self.spec.prefix,
                        crate::calls::api_error(&e)
                    ),
                    None,
                )
            })?;
            for o in page.contents() {
                let Some(key) = o.key() else {
                    continue;
                };
                if key.ends_with('/') || !self.spec.matches(key) {
                    continue;
                }
                // S3 lists each object's ETag; a server that lists none (s3s-fs, some
                // S3-compatible stores) gets a version from its size and modification time,
                // which is then not sent back as If-Match.
                let etag = match o.e_tag() {
                    Some(e) => e.trim_matches('"').to_owned(),
                    None => format!(
                        "{SYNTHETIC}{}-{}",
                        o.size().unwrap_or_default(),
                        o.last_modified().map_or(0, |t| t.secs())
                    ),
                };
                let etag = etag.as_str();
                let from = origin(&self.spec.bucket, key, etag);
                if landed.contains(&from) {
                    continue;
                }
                let name = key
                    .strip_prefix(self.spec.folder())
                    .unwrap_or(key)
                    .to_owned();
                offered.insert((*window, name.clone()), (key.to_owned(), etag.to_owned()));
                out.push(SourceObject {
                    name,
                    size: o.size().and_then(|s| u64::try_from(s).ok()),
                    content_type: None,
                    origin: from,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        self.offered.lock().expect("offered lock").extend(offered);
        Ok(out)
    }

    async fn open(&self, window: &Window, object: &SourceObject) -> Result<ByteStream> {
        let (key, if_match) = self.version(window, object)?;
        let failed = |e: Error| self.unreadable(&key, e);
        let name = self.name.clone();
        let named = move |e: Error| Error::Source {
            source_name: name.clone(),
            message: "reading an object failed".into(),
            source: Some(Box::new(e)),
        };
        match lake_core::zone::Key::new(key.as_str()) {
            // Parts fetched at once, handed on in order (as the S3 zone store reads).
            Ok(k) => {
                let got = self
                    .bucket
                    .get_version(&k, if_match.as_deref())
                    .await
                    .map_err(failed)?;
                Ok(got.body.map_err(named).boxed())
            }
            // A key lake could not store under its own name (`a//b`) is one GET, as sent.
            Err(_) => {
                let out = self
                    .client
                    .get_object()
                    .bucket(&self.spec.bucket)
                    .key(&key)
                    .set_if_match(if_match)
                    .send()
                    .await
                    .map_err(|e| {
                        self.err(
                            format!(
                                "cannot read s3://{}/{key} (s3:GetObject): {}",
                                self.spec.bucket,
                                crate::calls::api_error(&e)
                            ),
                            None,
                        )
                    })?;
                let name = self.name.clone();
                let body = futures::stream::unfold(Some(out.body), move |body| {
                    let name = name.clone();
                    async move {
                        let mut body = body?;
                        match body.try_next().await {
                            Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
                            Ok(None) => None,
                            Err(e) => Some((
                                Err(Error::Source {
                                    source_name: name,
                                    message: "reading an object failed".into(),
                                    source: Some(Box::new(e)),
                                }),
                                None,
                            )),
                        }
                    }
                });
                Ok(body.boxed())
            }
        }
    }

    fn at_once(&self) -> usize {
        // A window of small objects waits on each GET's latency: S3 serves many at once
        // (s5cmd runs 256 workers; BENCHMARKS.md, "S3 source").
        128
    }

    async fn download(
        &self,
        window: &Window,
        object: &SourceObject,
        path: &std::path::Path,
    ) -> Result<Option<Digested>> {
        let (key, if_match) = self.version(window, object)?;
        let Ok(k) = lake_core::zone::Key::new(key.as_str()) else {
            return Ok(None);
        };
        let digest = self
            .bucket
            .download_hashed(&k, path, if_match.as_deref())
            .await
            .map_err(|e| self.unreadable(&key, e))?;
        Ok(Some(digest))
    }

    async fn finish(&self, window: &Window) {
        self.offered
            .lock()
            .expect("offered lock")
            .retain(|(w, _), _| w != window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_the_bucket_the_pattern_and_its_literal_prefix() {
        let s = S3SourceSpec::parse("s3://partner-bucket/exports/*.csv.gz").unwrap();
        assert_eq!(
            (s.bucket.as_str(), s.prefix.as_str(), s.folder()),
            ("partner-bucket", "exports/", "exports/")
        );
        assert!(s.matches("exports/a.csv.gz"));
        assert!(!s.matches("exports/sub/a.csv.gz"), "* stays in its segment");
        assert!(!s.matches("exports/a.csv"));
        let all = S3SourceSpec::parse("s3://b-1/drops/").unwrap();
        assert_eq!(all.pattern, "drops/**");
        assert!(all.matches("drops/2024/x.json"));
        let p = S3SourceSpec::parse("s3://bkt/in/day-*.json").unwrap();
        assert_eq!((p.prefix.as_str(), p.folder()), ("in/day-", "in/"));
        assert!(S3SourceSpec::parse("https://x/y").is_err());
        assert!(S3SourceSpec::parse("s3://Bad_Bucket/x").is_err());
        assert!(S3SourceSpec::parse("s3://bkt/[x").is_err());
    }
}
