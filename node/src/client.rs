//! A blocking client for the local API of the node running on a data dir: what the CLI's
//! subcommands use.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::ApiErrorBody;
use crate::config::{self, ApiInfo};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no cryptchat node is running for data dir {0}: start one with `cryptchat run` \
         (or pass the --data-dir it uses)"
    )]
    NotRunning(PathBuf),
    #[error("cannot read {path}: {why}")]
    Files { path: PathBuf, why: String },
    #[error("{0}")]
    Api(String),
    #[error("the node did not answer: {0}")]
    Transport(String),
}

pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
    data_dir: PathBuf,
}

impl Client {
    /// Finds the running node of `data_dir` through the files it wrote there.
    pub fn for_data_dir(data_dir: &Path) -> Result<Client, ClientError> {
        let api_path = data_dir.join(config::API_FILE);
        let info = match std::fs::read_to_string(&api_path) {
            Ok(s) => serde_json::from_str::<ApiInfo>(&s).map_err(|e| ClientError::Files {
                path: api_path.clone(),
                why: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClientError::NotRunning(data_dir.to_path_buf()));
            }
            Err(e) => {
                return Err(ClientError::Files {
                    path: api_path,
                    why: e.to_string(),
                });
            }
        };
        let token_path = data_dir.join(config::TOKEN_FILE);
        let token = std::fs::read_to_string(&token_path)
            .map_err(|e| ClientError::Files {
                path: token_path,
                why: e.to_string(),
            })?
            .trim()
            .to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Ok(Client {
            base: format!("http://{}/v1", info.addr),
            token,
            agent,
            data_dir: data_dir.to_path_buf(),
        })
    }

    fn finish<T: DeserializeOwned>(
        &self,
        res: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut res = res.map_err(|e| match e {
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                ClientError::NotRunning(self.data_dir.clone())
            }
            other => ClientError::Transport(other.to_string()),
        })?;
        let ok = res.status().is_success();
        let text = res
            .body_mut()
            .read_to_string()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if !ok {
            let msg = serde_json::from_str::<ApiErrorBody>(&text)
                .map(|b| b.error)
                .unwrap_or(text);
            return Err(ClientError::Api(msg));
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Transport(e.to_string()))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let res = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        self.finish(res)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.post_with(&self.agent, path, body)
    }

    /// [`Client::post`] without the client's overall time limit, for requests that last as
    /// long as the work they ask for (sharing or fetching a file; the node gives up on its
    /// own when no peer can serve one).
    pub fn post_unbounded<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.post_with(&unbounded_agent(), path, body)
    }

    fn post_with<B: Serialize, T: DeserializeOwned>(
        &self,
        agent: &ureq::Agent,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let res = agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .send_json(body);
        self.finish(res)
    }

    /// The web page's address, carrying the token in the fragment (never sent to a server).
    pub fn web_url(&self) -> String {
        let root = self.base.trim_end_matches("/v1");
        format!("{root}/#token={}", self.token)
    }

    /// The node's events from now on (see [`crate::service::Event`]): once this returns,
    /// every later event is in the stream, so what is read next (a room's history, say)
    /// leaves no gap before them.
    pub fn subscribe(&self) -> Result<Events, ClientError> {
        use std::io::BufRead;
        let res = unbounded_agent()
            .get(format!("{}/events", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .map_err(|_| ClientError::NotRunning(self.data_dir.clone()))?;
        if !res.status().is_success() {
            return Err(ClientError::Api(format!("events: HTTP {}", res.status())));
        }
        let reader = std::io::BufReader::new(res.into_body().into_reader());
        Ok(Events {
            lines: reader.lines(),
        })
    }
}

/// A node's event stream: each item is one event's JSON. Ends when the node stops.
pub struct Events {
    lines: std::io::Lines<std::io::BufReader<ureq::BodyReader<'static>>>,
}

impl Iterator for Events {
    type Item = Result<String, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.lines.next()? {
                Ok(line) => {
                    if let Some(data) = line.strip_prefix("data:") {
                        return Some(Ok(data.trim().to_string()));
                    }
                }
                Err(e) => return Some(Err(ClientError::Transport(e.to_string()))),
            }
        }
    }
}

/// An agent with no overall time limit, for requests that last as long as their work.
fn unbounded_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}
