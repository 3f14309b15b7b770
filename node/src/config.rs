//! `raftkv serve` flags and environment, validated into a [`ServeConfig`].
//!
//! Flags use etcd's names where the meaning is the same; each can also be set
//! with `RAFTKV_<NAME>` in the environment (handy in a Kubernetes pod spec).
//! Everything is checked here, before anything is opened or bound, so a bad
//! setting is one clear line on stderr and a non-zero exit.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::net::ToSocketAddrs;
use std::path::PathBuf;

use anyhow::bail;
use anyhow::Context;

use crate::raft::member_id_for;
use crate::raft::NodeId;
pub use crate::tls::TlsFiles;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Human-readable member name, reported by MemberList.
    #[arg(long, env = "RAFTKV_NAME", default_value = "default")]
    pub name: String,
    /// Member id (also the etcd member ID); never 0. Optional with --join.
    #[arg(long, env = "RAFTKV_ID")]
    pub id: Option<NodeId>,
    #[arg(long, env = "RAFTKV_DATA_DIR", default_value = "raftkv.data")]
    pub data_dir: PathBuf,
    /// Where Admin.SaveBackup writes backups (default: `<data-dir>/backups`).
    #[arg(long, env = "RAFTKV_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    #[arg(
        long,
        env = "RAFTKV_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    pub listen_client_urls: String,
    #[arg(
        long,
        env = "RAFTKV_LISTEN_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    pub listen_peer_urls: String,
    #[arg(
        long,
        env = "RAFTKV_LISTEN_METRICS_URLS",
        default_value = "http://127.0.0.1:2381"
    )]
    pub listen_metrics_urls: String,
    /// Client URL other members and clients should use (default: the listen URL).
    #[arg(long, env = "RAFTKV_ADVERTISE_CLIENT_URLS")]
    pub advertise_client_urls: Option<String>,
    /// Peer URL the other members reach this one at (default: the listen URL).
    #[arg(long, env = "RAFTKV_INITIAL_ADVERTISE_PEER_URLS")]
    pub initial_advertise_peer_urls: Option<String>,
    /// `ID=PEER_URL,...`: every listed member initializes with this membership.
    #[arg(long, env = "RAFTKV_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Mixed into the cluster id, so two clusters with the same members differ.
    #[arg(
        long,
        env = "RAFTKV_INITIAL_CLUSTER_TOKEN",
        default_value = "raftkv-cluster"
    )]
    pub initial_cluster_token: String,
    /// Start empty and wait to be added to an existing cluster.
    #[arg(long, env = "RAFTKV_JOIN")]
    pub join: bool,
    /// Committed entries between two Raft snapshots (then the log is purged).
    /// 100000 as etcd 3.4/3.5: a snapshot serializes the whole store, history
    /// included, so at 10000 a busy member spent ~20 % of its CPU building them
    /// (BENCHMARKS.md).
    #[arg(long, env = "RAFTKV_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Largest client request accepted, in bytes.
    #[arg(long, env = "RAFTKV_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: usize,
    /// Seconds a simple auth token may go unused before it is refused (each
    /// use starts the time again), as etcd's flag.
    #[arg(long, env = "RAFTKV_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,
    /// Most data the store may hold before writes are refused (NOSPACE alarm);
    /// 0 means the default, 2 GiB, as etcd.
    #[arg(long, env = "RAFTKV_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: u64,
    /// Most operations in one txn branch.
    #[arg(long, env = "RAFTKV_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Leader heartbeat interval, in milliseconds.
    #[arg(long, env = "RAFTKV_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Election timeout, in milliseconds, as etcd means it: a member refuses
    /// votes this long after it last heard from its leader, and a follower
    /// campaigns after one to two of these without a word from it. Half of
    /// etcd's default, so a crashed leader is replaced in under a second
    /// (BENCHMARKS.md, failover); on links slower than a LAN raise it with
    /// the heartbeat, keeping it at least 5 heartbeats.
    #[arg(long, env = "RAFTKV_ELECTION_TIMEOUT", default_value_t = 500)]
    pub election_timeout: u64,
    /// Seconds between progress notifications to watchers that asked for them.
    #[arg(
        long,
        env = "RAFTKV_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value_t = 600
    )]
    pub watch_progress_notify_interval: u64,
    #[arg(long, env = "RAFTKV_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve the client port over TLS with this certificate (PEM; re-read
    /// when the file changes). The client URLs are then https://.
    #[arg(long, env = "RAFTKV_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// The private key of --cert-file (PEM).
    #[arg(long, env = "RAFTKV_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// The CA client certificates must chain to (PEM).
    #[arg(long, env = "RAFTKV_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate from --trusted-ca-file; a call
    /// without a token acts as the user the certificate's common name names.
    #[arg(long, env = "RAFTKV_CLIENT_CERT_AUTH")]
    pub client_cert_auth: bool,
    /// Serve the peer port over TLS with this certificate, and present it to
    /// the other members (PEM). The peer URLs are then https://.
    #[arg(long, env = "RAFTKV_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// The private key of --peer-cert-file (PEM).
    #[arg(long, env = "RAFTKV_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// The CA the other members' certificates must chain to (PEM).
    #[arg(long, env = "RAFTKV_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Refuse peers without a certificate from --peer-trusted-ca-file.
    #[arg(long, env = "RAFTKV_PEER_CLIENT_CERT_AUTH")]
    pub peer_client_cert_auth: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How this member comes to belong to a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Initialize with these voters unless already initialized.
    Initial(BTreeMap<NodeId, String>),
    /// Start empty; the leader adds this member.
    Join,
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub name: String,
    pub id: NodeId,
    pub data_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub listen_client: SocketAddr,
    pub listen_peer: SocketAddr,
    pub listen_metrics: SocketAddr,
    pub advertise_client_url: String,
    pub advertise_peer_url: String,
    pub bootstrap: Bootstrap,
    /// Derived from the token and the initial cluster; `None` for `--join`.
    pub cluster_id: Option<u64>,
    pub snapshot_count: u64,
    pub max_request_bytes: usize,
    pub auth_token_ttl: std::time::Duration,
    pub max_txn_ops: usize,
    pub quota_backend_bytes: u64,
    pub heartbeat_interval: u64,
    pub election_timeout: u64,
    pub watch_progress_notify_interval: u64,
    pub log_format: LogFormat,
    /// TLS on the client port (`--cert-file` and friends).
    pub client_tls: Option<TlsFiles>,
    /// TLS on the peer port and to the other members (`--peer-*`).
    pub peer_tls: Option<TlsFiles>,
}

/// One port's TLS flags, checked together: a certificate needs its key, and
/// client certificate authentication needs a CA and a certificate to serve.
fn tls_files(
    prefix: &str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    trusted_ca: Option<PathBuf>,
    client_cert_auth: bool,
) -> anyhow::Result<Option<TlsFiles>> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            if client_cert_auth && trusted_ca.is_none() {
                bail!("--{prefix}client-cert-auth needs --{prefix}trusted-ca-file");
            }
            Ok(Some(TlsFiles {
                cert,
                key,
                trusted_ca,
                client_cert_auth,
            }))
        }
        (None, None) if trusted_ca.is_none() && !client_cert_auth => Ok(None),
        (None, None) => bail!(
            "--{prefix}trusted-ca-file and --{prefix}client-cert-auth need --{prefix}cert-file and --{prefix}key-file"
        ),
        (Some(_), None) => bail!("--{prefix}cert-file needs --{prefix}key-file"),
        (None, Some(_)) => bail!("--{prefix}key-file needs --{prefix}cert-file"),
    }
}

/// A URL's scheme must say whether its port speaks TLS.
fn check_scheme(flag: &str, url: &str, tls: bool, files_flag: &str) -> anyhow::Result<()> {
    match (url.starts_with("https://"), tls) {
        (true, false) => bail!("--{flag}: {url:?} is https://, but no --{files_flag} is given"),
        (false, true) => {
            bail!("--{flag}: {url:?} is http://, but --{files_flag} turns TLS on: use https://")
        }
        _ => Ok(()),
    }
}

/// Parse `http://host:port` (or https://) into a socket address to listen on.
pub fn parse_listen_url(flag: &str, url: &str) -> anyhow::Result<SocketAddr> {
    if url.contains(',') {
        bail!("--{flag}: raftkv listens on exactly one URL, got {url:?}");
    }
    let hostport = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .with_context(|| format!("--{flag}: {url:?} is not an http:// or https:// URL"))?
        .trim_end_matches('/');
    let mut addrs = hostport
        .to_socket_addrs()
        .with_context(|| format!("--{flag}: {url:?} is not host:port"))?;
    addrs
        .next()
        .with_context(|| format!("--{flag}: {url:?} resolves to no address"))
}

fn check_url(flag: &str, url: &str) -> anyhow::Result<String> {
    let u = url.trim_end_matches('/');
    if !crate::raft::valid_peer_url(u) {
        bail!("--{flag}: {url:?} must be http://host:port or https://host:port");
    }
    Ok(u.to_string())
}

/// Parse `ID=URL,ID=URL`.
pub fn parse_initial_cluster(s: &str) -> anyhow::Result<BTreeMap<NodeId, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, url) = part
            .split_once('=')
            .with_context(|| format!("--initial-cluster: {part:?} is not ID=PEER_URL"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .with_context(|| format!("--initial-cluster: member id {id:?} is not a number"))?;
        if id == 0 {
            bail!("--initial-cluster: member id 0 is not allowed (0 means \"none\" in etcd's API)");
        }
        let url = check_url("initial-cluster", url.trim())?;
        if out.values().any(|u| *u == url) {
            bail!("--initial-cluster: peer URL {url} is listed twice");
        }
        if out.insert(id, url).is_some() {
            bail!("--initial-cluster: member id {id} is listed twice");
        }
    }
    if out.is_empty() {
        bail!("--initial-cluster is empty");
    }
    Ok(out)
}

/// The cluster id all initial members compute alike, without talking.
pub fn derive_cluster_id(token: &str, members: &BTreeMap<NodeId, String>) -> u64 {
    let mut text = token.to_string();
    for (id, url) in members {
        text.push_str(&format!(",{id}={url}"));
    }
    member_id_for(&text)
}

impl ServeConfig {
    pub fn from_args(a: ServeArgs) -> anyhow::Result<Self> {
        let listen_client = parse_listen_url("listen-client-urls", &a.listen_client_urls)?;
        let listen_peer = parse_listen_url("listen-peer-urls", &a.listen_peer_urls)?;
        let listen_metrics = parse_listen_url("listen-metrics-urls", &a.listen_metrics_urls)?;
        let advertise_client_url = match &a.advertise_client_urls {
            Some(u) => check_url("advertise-client-urls", u)?,
            None if listen_client.ip().is_unspecified() => {
                bail!("--advertise-client-urls is required when listening on {listen_client}")
            }
            None => check_url("listen-client-urls", &a.listen_client_urls)?,
        };
        let advertise_peer_url = match &a.initial_advertise_peer_urls {
            Some(u) => check_url("initial-advertise-peer-urls", u)?,
            None if listen_peer.ip().is_unspecified() => {
                bail!("--initial-advertise-peer-urls is required when listening on {listen_peer}")
            }
            None => check_url("listen-peer-urls", &a.listen_peer_urls)?,
        };
        let client_tls = tls_files(
            "",
            a.cert_file.clone(),
            a.key_file.clone(),
            a.trusted_ca_file.clone(),
            a.client_cert_auth,
        )?;
        let peer_tls = tls_files(
            "peer-",
            a.peer_cert_file.clone(),
            a.peer_key_file.clone(),
            a.peer_trusted_ca_file.clone(),
            a.peer_client_cert_auth,
        )?;
        let client_on = client_tls.is_some();
        check_scheme(
            "listen-client-urls",
            &a.listen_client_urls,
            client_on,
            "cert-file",
        )?;
        check_scheme(
            "advertise-client-urls",
            &advertise_client_url,
            client_on,
            "cert-file",
        )?;
        let peer_on = peer_tls.is_some();
        check_scheme(
            "listen-peer-urls",
            &a.listen_peer_urls,
            peer_on,
            "peer-cert-file",
        )?;
        check_scheme(
            "initial-advertise-peer-urls",
            &advertise_peer_url,
            peer_on,
            "peer-cert-file",
        )?;
        if a.join && a.initial_cluster.is_some() {
            bail!("--join and --initial-cluster exclude each other: a member either starts a cluster or joins one");
        }
        let id = match (a.id, a.join, &a.initial_cluster) {
            (Some(0), _, _) => bail!(
                "--id 0 is not allowed: member ids start at 1 (0 means \"none\" in etcd's API)"
            ),
            (Some(id), _, _) => id,
            (None, true, _) => member_id_for(&advertise_peer_url),
            (None, false, Some(_)) => bail!("--id is required with --initial-cluster"),
            (None, false, None) => 1,
        };
        let (bootstrap, cluster_id) = if a.join {
            (Bootstrap::Join, None)
        } else {
            let members = match &a.initial_cluster {
                Some(s) => parse_initial_cluster(s)?,
                None => BTreeMap::from([(id, advertise_peer_url.clone())]),
            };
            for url in members.values() {
                check_scheme("initial-cluster", url, peer_on, "peer-cert-file")?;
            }
            match members.get(&id) {
                None => bail!("--initial-cluster does not list this member's id {id}"),
                Some(url) if *url != advertise_peer_url => bail!(
                    "--initial-cluster lists member {id} at {url}, but it advertises {advertise_peer_url}"
                ),
                Some(_) => {}
            }
            let cid = derive_cluster_id(&a.initial_cluster_token, &members);
            (Bootstrap::Initial(members), Some(cid))
        };
        if a.snapshot_count == 0 {
            bail!("--snapshot-count must be at least 1");
        }
        if a.max_txn_ops == 0 || a.max_request_bytes == 0 {
            bail!("--max-txn-ops and --max-request-bytes must be positive");
        }
        if a.auth_token_ttl == 0 {
            bail!("--auth-token-ttl must be at least 1 (seconds)");
        }
        if a.heartbeat_interval == 0 || a.election_timeout < 5 * a.heartbeat_interval {
            bail!("--election-timeout must be at least 5 x --heartbeat-interval (etcd requires the same)");
        }
        Ok(ServeConfig {
            name: a.name,
            id,
            backup_dir: a
                .backup_dir
                .clone()
                .unwrap_or_else(|| a.data_dir.join("backups")),
            data_dir: a.data_dir,
            listen_client,
            listen_peer,
            listen_metrics,
            advertise_client_url,
            advertise_peer_url,
            bootstrap,
            cluster_id,
            snapshot_count: a.snapshot_count,
            max_request_bytes: a.max_request_bytes,
            auth_token_ttl: std::time::Duration::from_secs(a.auth_token_ttl),
            max_txn_ops: a.max_txn_ops,
            quota_backend_bytes: if a.quota_backend_bytes == 0 {
                2 << 30
            } else {
                a.quota_backend_bytes
            },
            heartbeat_interval: a.heartbeat_interval,
            election_timeout: a.election_timeout,
            watch_progress_notify_interval: a.watch_progress_notify_interval.max(1),
            log_format: a.log_format,
            client_tls,
            peer_tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser)]
    struct T {
        #[command(flatten)]
        a: ServeArgs,
    }

    fn cfg(args: &[&str]) -> anyhow::Result<ServeConfig> {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        ServeConfig::from_args(T::try_parse_from(v)?.a)
    }

    #[test]
    fn no_flags_is_a_single_member_cluster() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.id, 1);
        assert_eq!(c.listen_client.port(), 2379);
        assert_eq!(
            c.bootstrap,
            Bootstrap::Initial(BTreeMap::from([(1, "http://127.0.0.1:2380".into())]))
        );
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let err = |args: &[&str]| cfg(args).unwrap_err().to_string();
        assert!(err(&["--id", "0"]).contains("--id 0"));
        assert!(err(&["--listen-client-urls", "notaurl"]).contains("listen-client-urls"));
        assert!(
            err(&["--initial-cluster", "1=http://127.0.0.1:2380", "--join"]).contains("exclude")
        );
        assert!(
            err(&["--id", "2", "--initial-cluster", "1=http://127.0.0.1:2380"])
                .contains("does not list")
        );
        assert!(err(&[
            "--initial-cluster",
            "1=http://a:1,1=http://b:2",
            "--id",
            "1"
        ])
        .contains("twice"));
    }

    #[test]
    fn tls_flags_go_together_and_match_the_url_schemes() {
        let err = |args: &[&str]| cfg(args).unwrap_err().to_string();
        let https_client = ["--listen-client-urls", "https://127.0.0.1:2379"];
        assert!(err(&https_client).contains("no --cert-file"));
        assert!(err(&["--cert-file", "c.pem", "--key-file", "k.pem"]).contains("use https://"));
        assert!(err(&["--cert-file", "c.pem"]).contains("needs --key-file"));
        assert!(err(&["--peer-key-file", "k.pem"]).contains("needs --peer-cert-file"));
        assert!(err(&["--client-cert-auth"]).contains("need --cert-file"));
        let mut no_ca = vec!["--cert-file", "c.pem", "--key-file", "k.pem"];
        no_ca.extend(["--client-cert-auth"]);
        no_ca.extend(https_client);
        assert!(err(&no_ca).contains("needs --trusted-ca-file"));
        let peer_tls = [
            "--peer-cert-file",
            "c.pem",
            "--peer-key-file",
            "k.pem",
            "--listen-peer-urls",
            "https://127.0.0.1:2380",
        ];
        let mut plain_member = peer_tls.to_vec();
        plain_member.extend(["--id", "1", "--initial-cluster"]);
        plain_member.push("1=https://127.0.0.1:2380,2=http://127.0.0.1:3380");
        assert!(err(&plain_member).contains("--initial-cluster"));
        let c = cfg(&peer_tls).unwrap();
        assert_eq!(c.advertise_peer_url, "https://127.0.0.1:2380");
        assert!(c.peer_tls.is_some() && c.client_tls.is_none());
    }

    #[test]
    fn initial_members_agree_on_the_cluster_id() {
        let ic = "1=http://127.0.0.1:1001,2=http://127.0.0.1:1002";
        let a = cfg(&[
            "--id",
            "1",
            "--initial-cluster",
            ic,
            "--listen-peer-urls",
            "http://127.0.0.1:1001",
        ])
        .unwrap();
        let b = cfg(&[
            "--id",
            "2",
            "--initial-cluster",
            ic,
            "--listen-peer-urls",
            "http://127.0.0.1:1002",
        ])
        .unwrap();
        assert_eq!(a.cluster_id, b.cluster_id);
        assert!(a.cluster_id.is_some());
    }

    #[test]
    fn join_without_id_derives_it_from_the_peer_url() {
        let c = cfg(&["--join", "--listen-peer-urls", "http://127.0.0.1:4444"]).unwrap();
        assert_eq!(c.id, member_id_for("http://127.0.0.1:4444"));
        assert_eq!(c.bootstrap, Bootstrap::Join);
    }
}
