//! The OTLP exporters' HTTP client: lake's reqwest, each request spawned on the runtime that
//! made the client, so an exporter may be driven from any thread (the metrics reader's own).

use bytes::Bytes;
use http::{Request, Response};
use opentelemetry_http::{HttpClient, HttpError};

/// A reqwest client with a deadline per request, sending on one tokio runtime.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    inner: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl Client {
    /// A client whose requests end within `timeout`; on the current tokio runtime.
    pub(crate) fn new(timeout: std::time::Duration) -> reqwest::Result<Self> {
        Ok(Self {
            inner: reqwest::Client::builder()
                .connect_timeout(timeout)
                .timeout(timeout)
                // A collector does not redirect; a redirect is not followed anywhere.
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.inner.clone();
        let sent = self.runtime.spawn(async move {
            let response = client.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = sent.await??;
        let mut out = Response::builder().status(status);
        if let Some(h) = out.headers_mut() {
            *h = headers;
        }
        Ok(out.body(body)?)
    }
}
