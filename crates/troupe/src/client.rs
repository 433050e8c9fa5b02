//! A small typed client for troupe's API, used by the CLI.

use anyhow::Context;
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::Path;
use troupe_wire::errors::ErrorBody;

/// An error answer from the server, shown the way the API worded it.
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// The API's error code.
    pub code: String,
    /// The API's message.
    pub message: String,
    /// The field at fault.
    pub field: Option<String>,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.message, self.code)?;
        if let Some(field) = &self.field {
            write!(f, ", field {field}")?;
        }
        write!(f, ", HTTP {})", self.status.as_u16())
    }
}

impl std::error::Error for ApiFailure {}

/// Where the server is and how to prove who we are.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client for `server` (e.g. `http://127.0.0.1:8080`) with `token`, or with the token
    /// file a local server wrote into `data_dir`; `https://` servers are verified against the
    /// system's CAs and those of `ca_file`.
    pub fn new(
        server: &str,
        token: Option<String>,
        data_dir: &Path,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<Client> {
        let token = match token {
            Some(t) => t,
            None => {
                let file = data_dir.join("admin-token");
                std::fs::read_to_string(&file)
                    .map(|t| t.trim().to_owned())
                    .with_context(|| {
                        format!(
                            "no API token: pass --token or TROUPE_TOKEN, or run next to a server whose data dir has {}",
                            file.display()
                        )
                    })?
            }
        };
        let http = troupe_http::builder(ca_file)?
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .context("could not build the HTTP client")?;
        Ok(Client {
            http,
            base: server.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("could not reach the troupe server at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        // Answers that are not the API's error body (a proxy's page, say) still say something.
        let failure = match resp.json::<ErrorBody>().await {
            Ok(ErrorBody { error }) => ApiFailure {
                status,
                code: error.code,
                message: error.message,
                field: error.field,
            },
            Err(_) => ApiFailure {
                status,
                code: "http_error".into(),
                message: format!("server answered {status}"),
                field: None,
            },
        };
        Err(failure.into())
    }

    /// GET a streaming response (Server-Sent Events), checked for an error answer.
    pub async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        self.send(
            self.http
                .get(self.url(path))
                .header(reqwest::header::ACCEPT, "text/event-stream"),
        )
        .await
    }

    /// GET a JSON document.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(self.http.get(self.url(path))).await?;
        resp.json()
            .await
            .context("the server's answer was not the expected JSON")
    }

    /// GET text, with the response headers.
    pub async fn get_text(
        &self,
        path: &str,
    ) -> anyhow::Result<(String, reqwest::header::HeaderMap)> {
        let resp = self.send(self.http.get(self.url(path))).await?;
        let headers = resp.headers().clone();
        Ok((
            resp.text()
                .await
                .context("could not read the server's answer")?,
            headers,
        ))
    }

    /// GET a binary body, whole.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self.send(self.http.get(self.url(path))).await?;
        let body = resp
            .bytes()
            .await
            .context("could not read the server's answer")?;
        Ok(body.to_vec())
    }

    /// POST JSON, read JSON.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let resp = self.send(self.http.post(self.url(path)).json(body)).await?;
        resp.json()
            .await
            .context("the server's answer was not the expected JSON")
    }

    /// PUT JSON, read JSON.
    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let resp = self.send(self.http.put(self.url(path)).json(body)).await?;
        resp.json()
            .await
            .context("the server's answer was not the expected JSON")
    }

    /// POST JSON; the answer's body is not read.
    pub async fn post_unread<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<()> {
        self.send(self.http.post(self.url(path)).json(body)).await?;
        Ok(())
    }

    /// DELETE; the answer's body is not read.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.http.delete(self.url(path))).await?;
        Ok(())
    }

    /// Sends a raw body (`method` POST or PUT) with `content_type`, reads JSON.
    pub async fn send_body<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<T> {
        let req = self
            .http
            .request(method, self.url(path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        let resp = self.send(req).await?;
        resp.json()
            .await
            .context("the server's answer was not the expected JSON")
    }
}
