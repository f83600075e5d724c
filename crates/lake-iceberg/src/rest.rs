//! `[catalog] kind = "rest"`: an Iceberg REST catalog (Apache Polaris, Nessie, Lakekeeper,
//! Gravitino, Unity Catalog's Iceberg endpoint) holds the tables' metadata pointers.
//!
//! With it, the datasets `[catalog] tables` selects are committed *through* the catalog: lake
//! writes the data files (its publish, as always) and the Avro manifests into the dataset's
//! folder, then sends the catalog one commit per publish with its requirements (the table's
//! UUID, the `main` branch's snapshot, schema, spec and last field id as lake read them). The
//! catalog writes the metadata file. A commit refused because another writer moved the table
//! is built again on the table as it is and sent again (iceberg's transaction retry); a table
//! whose current snapshot another writer made is refused, never overwritten.
//!
//! The HTTP protocol is iceberg-rust's `iceberg-catalog-rest`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use iceberg::{NamespaceIdent, TableIdent, TableRequirement, TableUpdate};
use iceberg_catalog_rest::{
    CommitTableRequest, CreateNamespaceRequest, CreateTableRequest, ErrorResponse, LoadTableResult,
};
use lake_core::backend::BackendEnv;
use lake_core::catalog::{Catalog as LakeCatalog, CatalogConfig, CatalogKind, CatalogOutcome};
use lake_core::config::{CatalogSpec, ConfigCx, Template, ZoneRef};
use lake_core::doctor::Check;
use lake_core::publish::{Dataset, Manifest};
use lake_core::run::EnvLookup;
use lake_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

/// The catalog kind's name in lake.toml.
pub(crate) const NAME: &str = "rest";

/// The `rest` catalog kind: register it with `Kinds::catalog(RestKind)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestKind;

/// Its keys, as written (besides `kind` and `tables`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestKeys {
    uri: String,
    warehouse: Option<String>,
    namespace: Option<String>,
    credential: Option<String>,
    token: Option<String>,
    scope: Option<String>,
    oauth2_server_uri: Option<String>,
}

/// A checked `[catalog] kind = "rest"`.
#[derive(Debug, Clone, Serialize)]
pub struct RestConfig {
    /// The catalog's base URI (`https://polaris.example.com/api/catalog`).
    pub uri: String,
    /// The warehouse (a name or a location, as the catalog takes it).
    pub warehouse: Option<String>,
    /// The namespace lake's tables are in; default: the pipeline's name.
    pub namespace: String,
    /// OAuth2 client credentials `client_id:client_secret` (a secret reference).
    pub credential: Option<Template>,
    /// A bearer token (a secret reference).
    pub token: Option<Template>,
    /// The OAuth2 scope asked for with `credential`.
    pub scope: Option<String>,
    /// Where tokens are fetched; default the catalog's `v1/oauth/tokens`.
    pub oauth2_server_uri: Option<String>,
}

fn http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

impl CatalogKind for RestKind {
    fn name(&self) -> &'static str {
        NAME
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn CatalogConfig>> {
        let keys: RestKeys = cx.own()?;
        let mut ok = true;
        if !http_url(&keys.uri) {
            cx.value(
                &cx.key_of("uri"),
                format!(
                    "{:?} is not an http:// or https:// URL (the REST catalog's base, before /v1)",
                    keys.uri
                ),
            );
            ok = false;
        }
        if let Some(u) = &keys.oauth2_server_uri
            && !http_url(u)
        {
            cx.value(
                &cx.key_of("oauth2_server_uri"),
                format!("{u:?} is not an http:// or https:// URL"),
            );
            ok = false;
        }
        let namespace = keys
            .namespace
            .clone()
            .unwrap_or_else(|| cx.pipeline.replace('-', "_").to_lowercase());
        if namespace.is_empty() || namespace.contains(['.', '\u{1f}']) {
            let key = if keys.namespace.is_some() {
                cx.key_of("namespace")
            } else {
                cx.at().to_owned()
            };
            cx.value(
                &key,
                format!("{namespace:?} is not a namespace lake can use: one level, no '.' (set catalog.namespace)"),
            );
            ok = false;
        }
        let mut secret = |key: &str, raw: &Option<String>| -> Option<Template> {
            let raw = raw.as_ref()?;
            match Template::parse(raw) {
                Ok(t) if t.is_secret() => Some(t),
                Ok(_) => {
                    cx.value(
                        &cx.key_of(key),
                        "write it as a secret reference (`${env:NAME}`, `${aws-secretsmanager:NAME}`, `${aws-ssm:/path}`), not in lake.toml",
                    );
                    ok = false;
                    None
                }
                Err(e) => {
                    cx.value(&cx.key_of(key), e.to_string());
                    ok = false;
                    None
                }
            }
        };
        let credential = secret("credential", &keys.credential);
        let token = secret("token", &keys.token);
        ok.then(|| {
            Arc::new(RestConfig {
                uri: keys.uri.trim_end_matches('/').to_owned(),
                warehouse: keys.warehouse,
                namespace,
                credential,
                token,
                scope: keys.scope,
                oauth2_server_uri: keys.oauth2_server_uri,
            }) as Arc<dyn CatalogConfig>
        })
    }
}

#[async_trait]
impl CatalogConfig for RestConfig {
    fn namespace(&self) -> String {
        self.namespace.clone()
    }

    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        lake_core::kinds::json_object(self)
    }

    async fn open(
        &self,
        spec: &CatalogSpec,
        env: &BackendEnv,
    ) -> Result<Option<Arc<dyn LakeCatalog>>> {
        Ok(Some(Arc::new(RestTables {
            rest: Rest::new(self.clone(), spec.clone(), env),
            pipeline: Arc::clone(&env.pipeline),
        })))
    }
}

/// A connection to the catalog, made on first use.
pub(crate) struct Rest {
    config: RestConfig,
    spec: CatalogSpec,
    lookup: EnvLookup,
    http: reqwest::Client,
    session: OnceCell<Session>,
}

/// What the first call learns: the base of the catalog's routes (with the `prefix` its
/// `/v1/config` gives) and the `Authorization` header.
struct Session {
    base: String,
    auth: Option<String>,
}

/// A commit the catalog took, or refused because a requirement failed (another writer).
pub(crate) enum Committed {
    Done,
    Conflict,
}

#[derive(Deserialize)]
struct ConfigResponse {
    #[serde(default)]
    defaults: HashMap<String, String>,
    #[serde(default)]
    overrides: HashMap<String, String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("uri", &self.config.uri)
            .field("namespace", &self.config.namespace)
            .finish_non_exhaustive()
    }
}

impl Rest {
    pub(crate) fn new(config: RestConfig, spec: CatalogSpec, env: &BackendEnv) -> Self {
        let lookup: EnvLookup = env
            .extensions
            .get::<EnvLookup>()
            .cloned()
            .unwrap_or_else(|| Arc::new(|v: &str| std::env::var(v).ok()));
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            // A catalog that redirects elsewhere is not followed with lake's token.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            config,
            spec,
            lookup,
            http,
            session: OnceCell::new(),
        }
    }

    /// The catalog of `env`'s pipeline, when `[catalog]` is a REST catalog.
    pub(crate) fn of(env: &BackendEnv) -> Option<Arc<Self>> {
        let spec = env.pipeline.catalog.as_ref()?;
        let config = (*spec.config.0).as_any().downcast_ref::<RestConfig>()?;
        Some(Arc::new(Self::new(config.clone(), spec.clone(), env)))
    }

    /// The table of the dataset at `prefix` (`trusted/credit`), when this catalog holds it
    /// (`[catalog] tables` selects it): `<namespace>.<zone>_<name>`.
    pub(crate) fn ident(&self, prefix: &str) -> Option<TableIdent> {
        let d = ZoneRef::parse(prefix).ok()?;
        self.spec.includes(d.zone, &d.name).then(|| {
            TableIdent::new(
                NamespaceIdent::new(self.config.namespace.clone()),
                CatalogSpec::table_name(d.zone, &d.name),
            )
        })
    }

    /// An error about `table` (or the catalog, when `None`).
    pub(crate) fn fail(
        &self,
        table: Option<&TableIdent>,
        what: &str,
        e: impl std::fmt::Display,
    ) -> Error {
        let name = match table {
            Some(t) => format!("{}.{}", self.config.namespace, t.name()),
            None => format!("REST catalog {}", self.config.uri),
        };
        Error::catalog(name, format!("{what}: {e}"), None)
    }

    async fn session(&self) -> Result<&Session> {
        self.session
            .get_or_try_init(|| async {
                let secret = |key: &str, t: &Option<Template>| -> Result<Option<String>> {
                    t.as_ref()
                        .map(|t| {
                            t.resolve(&format!("catalog.{key}"), &*self.lookup)
                                .map(|s| s.expose().to_owned())
                        })
                        .transpose()
                };
                let mut auth = secret("token", &self.config.token)?.map(|t| format!("Bearer {t}"));
                if let Some(cred) = secret("credential", &self.config.credential)? {
                    auth = Some(format!("Bearer {}", self.token(&cred).await?));
                }
                let mut request = self.http.get(format!("{}/v1/config", self.config.uri));
                if let Some(w) = &self.config.warehouse {
                    let query: String = url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("warehouse", w)
                        .finish();
                    request = self
                        .http
                        .get(format!("{}/v1/config?{query}", self.config.uri));
                }
                if let Some(a) = &auth {
                    request = request.header(reqwest::header::AUTHORIZATION, a);
                }
                let (status, body) = self.send(None, "reading /v1/config", request).await?;
                if !status.is_success() {
                    return Err(self.refused(None, "reading /v1/config", status, &body));
                }
                let config: ConfigResponse = serde_json::from_slice(&body)
                    .map_err(|e| self.fail(None, "reading /v1/config", e))?;
                let prefix = config
                    .overrides
                    .get("prefix")
                    .or(config.defaults.get("prefix"))
                    .map(|p| p.trim_matches('/').to_owned())
                    .filter(|p| !p.is_empty());
                let base = match prefix {
                    Some(p) => format!("{}/v1/{}", self.config.uri, encode(&p)),
                    None => format!("{}/v1", self.config.uri),
                };
                Ok(Session { base, auth })
            })
            .await
    }

    /// An OAuth2 token for the client credentials `cred` (`client_id:client_secret`).
    async fn token(&self, cred: &str) -> Result<String> {
        let (id, secret) = cred.split_once(':').unwrap_or(("", cred));
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if !id.is_empty() {
                form.append_pair("client_id", id);
            }
            form.append_pair("client_secret", secret);
            form.append_pair("scope", self.config.scope.as_deref().unwrap_or("catalog"));
            form.finish()
        };
        let endpoint = self
            .config
            .oauth2_server_uri
            .clone()
            .unwrap_or_else(|| format!("{}/v1/oauth/tokens", self.config.uri));
        let request = self
            .http
            .post(endpoint)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form);
        let (status, body) = self.send(None, "fetching a token", request).await?;
        if !status.is_success() {
            // The answer is the server's, never the credentials.
            return Err(self.refused(None, "fetching a token", status, &body));
        }
        serde_json::from_slice::<TokenResponse>(&body)
            .map(|t| t.access_token)
            .map_err(|e| self.fail(None, "fetching a token", e))
    }

    async fn send(
        &self,
        table: Option<&TableIdent>,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, bytes::Bytes)> {
        let response = request
            .send()
            .await
            .map_err(|e| self.fail(table, what, lake_core::run::error_chain(&e.without_url())))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.fail(table, what, e.without_url()))?;
        Ok((status, body))
    }

    /// The catalog's answer to a refused call: its status and its error message.
    fn refused(
        &self,
        table: Option<&TableIdent>,
        what: &str,
        status: reqwest::StatusCode,
        body: &[u8],
    ) -> Error {
        let message = serde_json::from_slice::<ErrorResponse>(body)
            .ok()
            .and_then(|e| serde_json::to_value(e).ok())
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
        self.fail(table, what, format!("HTTP {status}: {message}"))
    }

    /// A call to the catalog's route `path` (after its base).
    async fn call(
        &self,
        table: Option<&TableIdent>,
        what: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(reqwest::StatusCode, bytes::Bytes)> {
        let session = self.session().await?;
        let mut request = self
            .http
            .request(method, format!("{}/{path}", session.base));
        if let Some(a) = &session.auth {
            request = request.header(reqwest::header::AUTHORIZATION, a);
        }
        if let Some(b) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        self.send(table, what, request).await
    }

    fn table_path(ident: &TableIdent) -> String {
        format!(
            "namespaces/{}/tables/{}",
            encode(&ident.namespace().join("\u{1f}")),
            encode(ident.name())
        )
    }

    /// The table `ident` as the catalog has it: its metadata file and metadata; `None` when
    /// it has none.
    pub(crate) async fn load(
        &self,
        ident: &TableIdent,
    ) -> Result<Option<(String, iceberg::spec::TableMetadata)>> {
        let what = "loading the table";
        let (status, body) = self
            .call(
                Some(ident),
                what,
                reqwest::Method::GET,
                &Self::table_path(ident),
                None,
            )
            .await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.refused(Some(ident), what, status, &body));
        }
        let t: LoadTableResult =
            serde_json::from_slice(&body).map_err(|e| self.fail(Some(ident), what, e))?;
        Ok(Some((t.metadata_location.unwrap_or_default(), t.metadata)))
    }

    /// Create the namespace if the catalog does not have it.
    pub(crate) async fn namespace(&self) -> Result<()> {
        let ns = NamespaceIdent::new(self.config.namespace.clone());
        let what = "creating the namespace";
        let (status, _) = self
            .call(
                None,
                what,
                reqwest::Method::GET,
                &format!("namespaces/{}", encode(&self.config.namespace)),
                None,
            )
            .await?;
        if status.is_success() {
            return Ok(());
        }
        let body = serde_json::to_vec(&CreateNamespaceRequest {
            namespace: ns,
            properties: HashMap::new(),
        })
        .map_err(|e| self.fail(None, what, e))?;
        let (status, body) = self
            .call(None, what, reqwest::Method::POST, "namespaces", Some(body))
            .await?;
        if status.is_success() || status == reqwest::StatusCode::CONFLICT {
            return Ok(());
        }
        Err(self.refused(None, what, status, &body))
    }

    /// Create the table `request` describes; one that exists already is left as it is.
    pub(crate) async fn create(
        &self,
        ident: &TableIdent,
        request: &CreateTableRequest,
    ) -> Result<()> {
        let what = "creating the table";
        let body = serde_json::to_vec(request).map_err(|e| self.fail(Some(ident), what, e))?;
        let path = format!(
            "namespaces/{}/tables",
            encode(&ident.namespace().join("\u{1f}"))
        );
        let (status, body) = self
            .call(Some(ident), what, reqwest::Method::POST, &path, Some(body))
            .await?;
        if status.is_success() || status == reqwest::StatusCode::CONFLICT {
            return Ok(());
        }
        Err(self.refused(Some(ident), what, status, &body))
    }

    /// Send a commit: `updates`, if the table still meets `requirements`.
    pub(crate) async fn commit(
        &self,
        ident: &TableIdent,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<Committed> {
        let what = "committing";
        let body = serde_json::to_vec(&CommitTableRequest {
            identifier: Some(ident.clone()),
            requirements,
            updates,
        })
        .map_err(|e| self.fail(Some(ident), what, e))?;
        let (status, body) = self
            .call(
                Some(ident),
                what,
                reqwest::Method::POST,
                &Self::table_path(ident),
                Some(body),
            )
            .await?;
        match status {
            s if s.is_success() => Ok(Committed::Done),
            reqwest::StatusCode::CONFLICT => Ok(Committed::Conflict),
            s => Err(self.refused(Some(ident), what, s, &body)),
        }
    }

    /// `lake doctor`: the catalog answers, with lake's credentials.
    async fn reachable(&self) -> Result<usize> {
        let what = "listing namespaces";
        let (status, body) = self
            .call(None, what, reqwest::Method::GET, "namespaces", None)
            .await?;
        if !status.is_success() {
            return Err(self.refused(None, what, status, &body));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| self.fail(None, what, e))?;
        Ok(v["namespaces"].as_array().map_or(0, Vec::len))
    }
}

/// A path segment, percent-encoded.
fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The tables of a REST catalog: committed by the `iceberg` table format as each step
/// publishes; registering checks that the catalog holds the run's snapshot.
#[derive(Debug)]
struct RestTables {
    rest: Rest,
    pipeline: Arc<lake_core::config::Pipeline>,
}

impl RestTables {
    /// The table format of the step writing `zone/name`.
    fn format_of(&self, d: &Dataset) -> Option<&str> {
        self.pipeline
            .steps
            .values()
            .find(|s| {
                s.output
                    .as_ref()
                    .is_some_and(|o| o.zone == d.zone && o.name == d.name)
            })
            .map(|s| s.table_format.as_str())
    }

    fn not_iceberg(&self, d: &Dataset, format: &str) -> Error {
        Error::catalog(
            format!(
                "{}.{}",
                self.rest.config.namespace,
                CatalogSpec::table_name(d.zone, &d.name)
            ),
            format!(
                "{}/{} is written with table_format = {format:?}; a REST catalog holds Iceberg tables only: set table_format = \"iceberg\" on its step (or [lake]), or leave it out of catalog.tables",
                d.zone.as_str(),
                d.name
            ),
            None,
        )
    }
}

#[async_trait]
impl LakeCatalog for RestTables {
    async fn register(&self, dataset: &Dataset, manifest: &Manifest) -> Result<CatalogOutcome> {
        if let Some(f) = self.format_of(dataset)
            && f != crate::NAME
        {
            return Err(self.not_iceberg(dataset, f));
        }
        let prefix = format!("{}/{}", dataset.zone.as_str(), dataset.name);
        let Some(ident) = self.rest.ident(&prefix) else {
            return Ok(CatalogOutcome::default());
        };
        let Some((_, metadata)) = self.rest.load(&ident).await? else {
            return Err(self.rest.fail(
                Some(&ident),
                "registering",
                "the catalog has no such table: the step's table format commits it as it publishes (is table_format = \"iceberg\"?)",
            ));
        };
        let current = metadata.current_snapshot();
        let run = current.and_then(|s| s.summary().additional_properties.get(crate::RUN_ID));
        if run != Some(&manifest.run_id) {
            return Err(self.rest.fail(
                Some(&ident),
                "registering",
                format!(
                    "the table's current snapshot is not run {}'s (it is {}); run the step again",
                    manifest.run_id,
                    run.map_or("another writer's", String::as_str)
                ),
            ));
        }
        Ok(CatalogOutcome {
            created: metadata.snapshots().len() == 1,
            updated: metadata.snapshots().len() > 1,
            ..CatalogOutcome::default()
        })
    }

    async fn check_staged(&self, staged: &Dataset) -> Result<()> {
        match self.format_of(staged) {
            Some(f) if f != crate::NAME => Err(self.not_iceberg(staged, f)),
            _ => Ok(()),
        }
    }

    async fn doctor(&self) -> Vec<Check> {
        let name = format!("REST catalog {}", self.rest.config.uri);
        let result = self.rest.reachable().await;
        vec![match result {
            Ok(ns) => Check::pass(name, format!("reachable; {ns} namespace(s)")),
            Err(e) => Check::fail(name, e.to_string(), "check catalog.uri and the credentials"),
        }]
    }
}
