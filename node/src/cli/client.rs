//! `raftkv put|get|del|member|status`: a small etcdctl for raftkv clusters.
//!
//! They speak the etcd v3 API, so they work against etcd too (except `status`,
//! which adds raftkv's Admin service for commit and snapshot indexes). Output
//! follows etcdctl's simple format where one exists.

use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use std::path::PathBuf;

use tonic::transport::Certificate;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;
use tonic::transport::Identity;

use crate::proto::etcdserverpb::cluster_client::ClusterClient;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::*;
use crate::proto::raftkvpb::admin::admin_client::AdminClient;
use crate::proto::raftkvpb::admin::InitializeRequest;
use crate::proto::raftkvpb::admin::MemberStatusRequest;
use crate::store::mvcc::prefix_end;

/// Where the members are, and the TLS files to reach them with.
#[derive(clap::Args, Debug, Clone)]
pub struct Endpoints {
    /// Comma-separated client endpoints (host:port, http://host:port or
    /// https://host:port; host:port means https:// when a TLS flag is given).
    #[arg(
        long,
        env = "RAFTKV_ENDPOINTS",
        default_value = "127.0.0.1:2379",
        global = true
    )]
    pub endpoints: String,
    #[command(flatten)]
    pub tls: ClientTlsFiles,
}

/// etcdctl's TLS flags: `--cacert`, `--cert`, `--key`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientTlsFiles {
    /// Verify the members' certificates with this CA (PEM).
    #[arg(
        long = "cacert",
        id = "tls_cacert",
        value_name = "FILE",
        env = "RAFTKV_CACERT",
        global = true
    )]
    pub cacert: Option<PathBuf>,
    /// Present this client certificate (PEM), for members run with
    /// --client-cert-auth; its common name is the user.
    #[arg(
        long = "cert",
        id = "tls_cert",
        value_name = "FILE",
        env = "RAFTKV_CERT",
        global = true
    )]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    // Named apart from `put KEY`'s argument.
    #[arg(
        long = "key",
        id = "tls_key",
        value_name = "FILE",
        env = "RAFTKV_KEY",
        global = true
    )]
    pub key: Option<PathBuf>,
}

impl ClientTlsFiles {
    /// tonic's TLS settings for these files (`None` when no flag is given).
    pub fn config(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                ClientTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?))
            }
            (None, None) if self.cacert.is_none() => return Ok(None),
            (None, None) => ClientTlsConfig::new(),
            _ => bail!("--cert and --key go together"),
        };
        if let Some(ca) = &self.cacert {
            config = config.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        Ok(Some(config))
    }
}

impl Endpoints {
    fn tls(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        self.tls.config()
    }

    /// A channel to the first endpoint that accepts a connection.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let tls = self.tls()?;
        let mut last_err = None;
        for url in endpoint_urls(&self.endpoints, tls.is_some()) {
            match connect(&url, tls.clone()).await {
                Ok(ch) => return Ok(ch),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("--endpoints is empty")))
    }
}

pub async fn connect(url: &str, tls: Option<ClientTlsConfig>) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("bad endpoint {url}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10));
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .with_context(|| format!("TLS for {url}"))?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

pub fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

fn print_kv(k: &[u8], v: &[u8]) {
    println!(
        "{}\n{}",
        String::from_utf8_lossy(k),
        String::from_utf8_lossy(v)
    );
}

/// A lease id as `lease grant` prints it (hexadecimal, `0x` optional).
pub fn parse_lease_id(s: &str) -> anyhow::Result<i64> {
    i64::from_str_radix(s.trim_start_matches("0x"), 16)
        .with_context(|| format!("lease id {s:?} is not hexadecimal (as `lease grant` prints it)"))
}

pub async fn put(
    ep: &Endpoints,
    key: String,
    value: String,
    lease: Option<String>,
) -> anyhow::Result<()> {
    let lease = lease
        .as_deref()
        .map(parse_lease_id)
        .transpose()?
        .unwrap_or(0);
    let mut kv = KvClient::new(ep.connect().await?);
    kv.put(PutRequest {
        key: key.into_bytes(),
        value: value.into_bytes(),
        lease,
        ..Default::default()
    })
    .await
    .map_err(status_err)?;
    println!("OK");
    Ok(())
}

pub async fn get(ep: &Endpoints, key: String, prefix: bool, rev: i64) -> anyhow::Result<()> {
    let mut kv = KvClient::new(ep.connect().await?);
    let key = key.into_bytes();
    let range_end = if prefix {
        prefix_end(&key).unwrap_or_else(|| vec![0])
    } else {
        Vec::new()
    };
    let resp = kv
        .range(RangeRequest {
            key,
            range_end,
            revision: rev,
            ..Default::default()
        })
        .await
        .map_err(status_err)?
        .into_inner();
    for item in &resp.kvs {
        print_kv(&item.key, &item.value);
    }
    Ok(())
}

pub async fn del(ep: &Endpoints, key: String, prefix: bool) -> anyhow::Result<()> {
    let mut kv = KvClient::new(ep.connect().await?);
    let key = key.into_bytes();
    let range_end = if prefix {
        prefix_end(&key).unwrap_or_else(|| vec![0])
    } else {
        Vec::new()
    };
    let resp = kv
        .delete_range(DeleteRangeRequest {
            key,
            range_end,
            ..Default::default()
        })
        .await
        .map_err(status_err)?
        .into_inner();
    println!("{}", resp.deleted);
    Ok(())
}

/// Member ids are written in hex, as etcdctl prints and parses them.
pub fn parse_member_id(s: &str) -> anyhow::Result<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).with_context(|| {
        format!("member id {s:?} is not a hexadecimal number (as `member list` prints it)")
    })
}

pub async fn member_list(ep: &Endpoints) -> anyhow::Result<()> {
    let mut cluster = ClusterClient::new(ep.connect().await?);
    let resp = cluster
        .member_list(MemberListRequest { linearizable: true })
        .await
        .map_err(status_err)?
        .into_inner();
    println!(
        "{:<18} {:<12} {:<8} {:<28} CLIENT URLS",
        "ID", "NAME", "ROLE", "PEER URL"
    );
    for m in resp.members {
        println!(
            "{:<18x} {:<12} {:<8} {:<28} {}",
            m.id,
            if m.name.is_empty() {
                "(unstarted)"
            } else {
                &m.name
            },
            if m.is_learner { "learner" } else { "voter" },
            m.peer_ur_ls.join(","),
            m.client_ur_ls.join(",")
        );
    }
    Ok(())
}

pub async fn member_add(
    ep: &Endpoints,
    name: String,
    peer_url: String,
    learner: bool,
    id: Option<u64>,
) -> anyhow::Result<()> {
    let role = if learner { "learner" } else { "voter" };
    if let Some(id) = id {
        let mut admin = AdminClient::new(ep.connect().await?);
        admin
            .add_member(crate::proto::raftkvpb::admin::AddMemberRequest {
                id,
                peer_url: peer_url.clone(),
                is_learner: learner,
            })
            .await
            .map_err(status_err)?;
        println!("Member {id:x} added as a {role}");
        println!("Start it with: raftkv serve --join --id {id} --name {name} --initial-advertise-peer-urls {peer_url} ...");
        return Ok(());
    }
    let mut cluster = ClusterClient::new(ep.connect().await?);
    let resp = cluster
        .member_add(MemberAddRequest {
            peer_ur_ls: vec![peer_url.clone()],
            is_learner: learner,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    let id = resp.member.map(|m| m.id).unwrap_or_default();
    let cluster_id = resp.header.map(|h| h.cluster_id).unwrap_or_default();
    println!(
        "Member {id:x} added to cluster {cluster_id:x} as a {}",
        if learner { "learner" } else { "voter" }
    );
    println!("Start it with: raftkv serve --join --id {id} --name {name} --initial-advertise-peer-urls {peer_url} ...");
    Ok(())
}

pub async fn member_promote(ep: &Endpoints, id: &str) -> anyhow::Result<()> {
    let id = parse_member_id(id)?;
    let mut cluster = ClusterClient::new(ep.connect().await?);
    cluster
        .member_promote(MemberPromoteRequest { id })
        .await
        .map_err(status_err)?;
    println!("Member {id:x} promoted");
    Ok(())
}

pub async fn member_remove(ep: &Endpoints, id: &str) -> anyhow::Result<()> {
    let id = parse_member_id(id)?;
    let mut cluster = ClusterClient::new(ep.connect().await?);
    cluster
        .member_remove(MemberRemoveRequest { id })
        .await
        .map_err(status_err)?;
    println!("Member {id:x} removed");
    Ok(())
}

/// One row per member of the cluster the endpoints belong to.
pub async fn status(ep: &Endpoints) -> anyhow::Result<()> {
    let mut cluster = ClusterClient::new(ep.connect().await?);
    let members = cluster
        .member_list(MemberListRequest {
            linearizable: false,
        })
        .await
        .map_err(status_err)?
        .into_inner()
        .members;
    println!(
        "{:<18} {:<12} {:<9} {:>6} {:<18} {:>9} {:>9} {:>9} {:>9}  NOTE",
        "ID", "NAME", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST LOG", "SNAPSHOT"
    );
    let mut failures = 0;
    for m in members {
        let Some(url) = m.client_ur_ls.first() else {
            println!(
                "{:<18x} {:<12} (not started yet: no client URL published)",
                m.id, m.name
            );
            continue;
        };
        let row = async {
            let tls = ep.tls()?;
            let url = endpoint_urls(url, tls.is_some()).concat();
            let mut admin = AdminClient::new(connect(&url, tls).await?);
            anyhow::Ok(
                admin
                    .member_status(MemberStatusRequest {})
                    .await
                    .map_err(status_err)?
                    .into_inner(),
            )
        }
        .await;
        match row {
            Ok(s) => println!(
                "{:<18x} {:<12} {:<9} {:>6} {:<18x} {:>9} {:>9} {:>9} {:>9}  {}",
                s.id,
                s.name,
                s.role,
                s.term,
                s.leader,
                s.committed_index,
                s.applied_index,
                s.last_log_index,
                s.snapshot_index,
                s.not_ready_reason
            ),
            Err(e) => {
                failures += 1;
                println!("{:<18x} {:<12} unreachable at {url}: {e:#}", m.id, m.name);
            }
        }
    }
    if failures > 0 {
        bail!("{failures} member(s) did not answer");
    }
    Ok(())
}

/// Make a member started with `--join` the first member of a new cluster.
pub async fn initialize(
    ep: &Endpoints,
    cluster_token: String,
    restore_from_backup: Option<String>,
) -> anyhow::Result<()> {
    let mut admin = AdminClient::new(ep.connect().await?);
    let resp = admin
        .initialize(InitializeRequest {
            cluster_token,
            restore_from_backup: restore_from_backup.unwrap_or_default(),
        })
        .await
        .map_err(status_err)?
        .into_inner();
    if resp.initialized_now {
        println!("Initialized cluster {:x}", resp.cluster_id);
    } else {
        println!("Already initialized: cluster {:x}", resp.cluster_id);
    }
    Ok(())
}

/// The first endpoint's own view of itself (Admin.MemberStatus), one
/// `name: value` line each.
pub async fn member_status(ep: &Endpoints) -> anyhow::Result<()> {
    let mut admin = AdminClient::new(ep.connect().await?);
    let s = admin
        .member_status(MemberStatusRequest {})
        .await
        .map_err(status_err)?
        .into_inner();
    println!("id: {:x}", s.id);
    println!("name: {}", s.name);
    println!("role: {}", s.role);
    println!("term: {}", s.term);
    println!("leader: {:x}", s.leader);
    println!("cluster_id: {:x}", s.cluster_id);
    println!("epoch: {}", s.epoch);
    println!("committed_index: {}", s.committed_index);
    println!("applied_index: {}", s.applied_index);
    println!("last_log_index: {}", s.last_log_index);
    println!("snapshot_index: {}", s.snapshot_index);
    println!("purged_index: {}", s.purged_index);
    println!("revision: {}", s.revision);
    println!("millis_since_leader: {}", s.millis_since_leader);
    println!("not_ready_reason: {}", s.not_ready_reason);
    Ok(())
}

/// A comma-separated endpoint list as URLs: `host:port` gets `http://`, or
/// `https://` when the client uses TLS.
pub fn endpoint_urls(list: &str, tls: bool) -> Vec<String> {
    let scheme = if tls { "https" } else { "http" };
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            if e.contains("://") {
                e.to_string()
            } else {
                format!("{scheme}://{e}")
            }
        })
        .collect()
}
