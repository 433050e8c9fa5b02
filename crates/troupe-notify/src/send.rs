//! POSTing to webhooks and Slack incoming webhooks.

use serde_json::{Value, json};
use troupe_core::notify::mask_url;

/// Why a POST did not succeed. Names the target by scheme and host only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The request could not be made or got no answer.
    #[error("{target}: {why}")]
    Request {
        /// The target's scheme and host.
        target: String,
        /// What went wrong (without the URL).
        why: String,
    },
    /// The answer's status was not a success.
    #[error("{target} answered {status}")]
    Status {
        /// The target's scheme and host.
        target: String,
        /// The status.
        status: u16,
    },
}

/// The HTTP client every notification and every flow `slack` step goes through.
#[derive(Debug, Clone)]
pub struct Sender {
    http: reqwest::Client,
}

impl Sender {
    /// A sender over `http` (from [`troupe_http::builder`], with the CAs troupe trusts and a
    /// timeout on every request).
    pub fn new(http: reqwest::Client) -> Sender {
        Sender { http }
    }

    /// The client, for requests of other shapes (a flow's `http` steps).
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// POSTs `body` as JSON to `url` with `headers`; the answer's status on a success (2xx).
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: &Value,
    ) -> Result<u16, SendError> {
        let target = mask_url(url);
        let mut req = self.http.post(url).json(body);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let response = req.send().await.map_err(|e| SendError::Request {
            target: target.clone(),
            why: troupe_http::describe(&e),
        })?;
        let status = response.status().as_u16();
        // Read the answer so the connection can be reused; its content does not matter.
        let _ = response.bytes().await;
        if (200..300).contains(&status) {
            Ok(status)
        } else {
            Err(SendError::Status { target, status })
        }
    }

    /// POSTs `{"text": text}` to a Slack incoming webhook.
    pub async fn slack(&self, url: &str, text: &str) -> Result<u16, SendError> {
        self.post_json(url, &[], &json!({ "text": text })).await
    }
}
