//! curl, as etcd's users reach a member's HTTP endpoints and JSON gateway.
//!
//! Debian's curl (installed by `.ci/setup` when missing) is the client here
//! on purpose: the point is that a tool from outside the project, speaking
//! HTTP/1.1 unless TLS offers it HTTP/2, gets etcd's answers.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::tls::ClientTls;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What came back from one request.
#[derive(Debug, Clone)]
pub struct CurlResponse {
    pub status: u16,
    pub body: String,
}

impl CurlResponse {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("HTTP {} body is not JSON: {:?}", self.status, self.body))
    }
}

/// curl against one member's client URL.
#[derive(Debug, Clone)]
pub struct Curl {
    /// `http://HOST:PORT` or `https://HOST:PORT`.
    base: String,
    tls: Option<ClientTls>,
    headers: Vec<String>,
}

impl Curl {
    pub fn new(base_url: &str) -> Curl {
        Curl {
            base: base_url.trim_end_matches('/').to_string(),
            tls: None,
            headers: Vec::new(),
        }
    }

    /// Trust this CA and present this client certificate (`--cacert --cert --key`).
    pub fn with_tls(mut self, tls: &ClientTls) -> Curl {
        self.tls = Some(tls.clone());
        self
    }

    /// Send `Name: value` with every request.
    pub fn with_header(mut self, header: &str) -> Curl {
        self.headers.push(header.to_string());
        self
    }

    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["--silent".into(), "--show-error".into()];
        if let Some(tls) = &self.tls {
            for (flag, path) in [
                ("--cacert", &tls.ca),
                ("--cert", &tls.cert),
                ("--key", &tls.key),
            ] {
                args.push(flag.into());
                args.push(path.display().to_string());
            }
        }
        for header in &self.headers {
            args.push("--header".into());
            args.push(header.clone());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<CurlResponse> {
        self.request(&[], path).await
    }

    /// `POST path` with `body` (JSON), as etcd's gateway is called.
    pub async fn post(&self, path: &str, body: &str) -> Result<CurlResponse> {
        self.request(&["--request", "POST", "--data-binary", body], path)
            .await
    }

    /// Run curl with `extra` flags on `path` and nothing more: its output,
    /// whether it succeeded or not (a refused handshake is a failed curl).
    pub async fn run(&self, extra: &[&str], path: &str) -> Result<crate::command::CmdOutput> {
        let url = format!("{}{path}", self.base);
        let mut args = self.args(extra);
        args.push(url);
        crate::command::run(Path::new("curl"), &args, &[], &[], None, REQUEST_TIMEOUT).await
    }

    async fn request(&self, extra: &[&str], path: &str) -> Result<CurlResponse> {
        let mut flags = extra.to_vec();
        // The status code on a line of its own after the body.
        flags.extend(["--write-out", "\n%{http_code}"]);
        let out = self.run(&flags, path).await?.ok()?;
        let Some((body, status)) = out.stdout.rsplit_once('\n') else {
            bail!("curl {path}: no status line in {:?}", out.stdout);
        };
        let status = status
            .trim()
            .parse()
            .with_context(|| format!("curl {path}: status {status:?}"))?;
        Ok(CurlResponse {
            status,
            body: body.to_string(),
        })
    }

    /// `POST path` with `body`, left running: a streaming call's answer, read
    /// a line at a time (`curl --no-buffer`). curl is killed when this is dropped.
    pub fn stream(&self, path: &str, body: &str) -> Result<CurlStream> {
        let url = format!("{}{path}", self.base);
        let mut args = self.args(&["--no-buffer", "--request", "POST", "--data-binary", body]);
        args.push(url.clone());
        let mut child = Command::new("curl")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning curl for {url}"))?;
        let stdout = child.stdout.take().context("curl's stdout was not piped")?;
        Ok(CurlStream {
            _child: child,
            lines: BufReader::new(stdout).lines(),
            url,
        })
    }
}

/// A streaming call's answer, as curl prints it.
pub struct CurlStream {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    url: String,
}

impl CurlStream {
    /// The next line, as JSON, waiting at most `limit`; `None` once the
    /// answer has ended.
    pub async fn next_json(&mut self, limit: Duration) -> Result<Option<serde_json::Value>> {
        let line = tokio::time::timeout(limit, self.lines.next_line())
            .await
            .with_context(|| format!("no line from {} within {limit:?}", self.url))??;
        line.map(|l| {
            serde_json::from_str(&l)
                .with_context(|| format!("{}: a line not JSON: {l:?}", self.url))
        })
        .transpose()
    }
}
