//! `raftkv snapshot save|status|restore|now`: backups of a cluster's data, as
//! `etcdctl snapshot` makes them (the files are interchangeable), and Raft
//! snapshots on demand.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use anyhow::bail;
use anyhow::Context;
use futures::StreamExt;

use super::client::status_err;
use super::client::Endpoints;
use crate::backup;
use crate::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::proto::etcdserverpb::SnapshotRequest;
use crate::proto::raftkvpb::admin::admin_client::AdminClient;
use crate::proto::raftkvpb::admin::SnapshotNowRequest;

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Stream a consistent backup from a member into FILE (etcd's format).
    Save {
        file: PathBuf,
        #[command(flatten)]
        ep: Endpoints,
    },
    /// Check FILE and print its revision, key count, size and checksum.
    Status { file: PathBuf },
    /// Build a new member's data dir from FILE, as a new cluster.
    Restore(RestoreArgs),
    /// Take a Raft snapshot on a member now, then purge the log it covers.
    Now {
        #[command(flatten)]
        ep: Endpoints,
    },
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    file: PathBuf,
    /// The data dir to create (must not exist, or be empty).
    #[arg(long)]
    data_dir: PathBuf,
    /// The member's name (it is published when the member starts with it).
    #[arg(long, default_value = "default")]
    name: String,
    /// The member's id (decimal), as it will run with `--id`.
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// `ID=PEER_URL,...` of the new cluster; every member restores the same
    /// file with the same list. Default: this member alone.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// This member's peer URL when --initial-cluster is not given.
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    initial_advertise_peer_urls: String,
    /// Mixed into the new cluster id (with the backup's checksum).
    #[arg(long, default_value = "raftkv-cluster")]
    initial_cluster_token: String,
}

pub async fn run(cmd: SnapshotCmd) -> anyhow::Result<()> {
    match cmd {
        SnapshotCmd::Save { file, ep } => save(&ep, &file).await,
        SnapshotCmd::Status { file } => {
            let s = check_with_progress(&file, "checking")?;
            print_summary(&file, &s);
            Ok(())
        }
        SnapshotCmd::Restore(args) => tokio::task::spawn_blocking(move || restore(args)).await?,
        SnapshotCmd::Now { ep } => {
            let mut admin = AdminClient::new(ep.connect().await?);
            let r = admin
                .snapshot_now(SnapshotNowRequest {})
                .await
                .map_err(status_err)?
                .into_inner();
            println!(
                "snapshot at log index {}, log purged up to index {}",
                r.snapshot_index, r.purged_index
            );
            Ok(())
        }
    }
}

fn print_summary(file: &Path, s: &backup::Summary) {
    println!("file: {}", file.display());
    println!("revision: {}", s.revision);
    println!("keys: {}", s.key_count);
    println!("size: {} bytes", s.size_bytes);
    println!("sha256: {}", s.sha256);
    println!("raft index: {}", s.meta.last_log_id.map_or(0, |l| l.index));
}

/// A percentage on stderr while `total` bytes are worked through, only when
/// stderr is a terminal (so logs and tests see one clean line).
fn progress(label: &'static str, total: u64) -> impl FnMut(u64) {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last = u64::MAX;
    move |done| {
        if !tty || total == 0 {
            return;
        }
        let pct = (done.min(total) * 100) / total;
        if pct != last {
            last = pct;
            eprint!("\r{label}: {pct:3}%");
            if pct == 100 {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        }
    }
}

fn check_with_progress(file: &Path, label: &'static str) -> anyhow::Result<backup::Summary> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    backup::check(file, &mut progress(label, 2 * size.saturating_sub(32)))
        .with_context(|| format!("{} is refused", file.display()))
}

async fn save(ep: &Endpoints, file: &Path) -> anyhow::Result<()> {
    if file.exists() {
        bail!("{} already exists", file.display());
    }
    let part = file.with_extension("part");
    let mut client = MaintenanceClient::new(ep.connect().await?);
    let mut stream = client
        .snapshot(SnapshotRequest {})
        .await
        .map_err(status_err)?
        .into_inner();
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&part)
            .with_context(|| format!("cannot create {}", part.display()))?,
    );
    let received = async {
        while let Some(msg) = stream.next().await {
            out.write_all(&msg.map_err(status_err)?.blob)?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        anyhow::Ok(())
    }
    .await;
    let checked = received.and_then(|_| check_with_progress(&part, "checking"));
    let summary = match checked {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, file)?;
    println!(
        "Snapshot saved at {} (revision {}, {} keys, {} bytes, sha256 {})",
        file.display(),
        summary.revision,
        summary.key_count,
        summary.size_bytes,
        summary.sha256
    );
    Ok(())
}

fn restore(a: RestoreArgs) -> anyhow::Result<()> {
    if a.id == 0 {
        bail!("--id 0 is not allowed: member ids start at 1");
    }
    let members: BTreeMap<u64, String> = match &a.initial_cluster {
        Some(s) => crate::config::parse_initial_cluster(s)?,
        None => BTreeMap::from([(
            a.id,
            a.initial_advertise_peer_urls
                .trim_end_matches('/')
                .to_string(),
        )]),
    };
    if !members.contains_key(&a.id) {
        bail!("--initial-cluster does not list this member's id {}", a.id);
    }
    if a.data_dir.exists()
        && std::fs::read_dir(&a.data_dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "data dir {} already exists and is not empty: restore creates a new one",
            a.data_dir.display()
        );
    }
    // The whole file is checked before the data dir is created.
    let summary = check_with_progress(&a.file, "checking")?;
    let token = format!("{}/restored-{}", a.initial_cluster_token, summary.sha256);
    let cluster_id = crate::config::derive_cluster_id(&token, &members);
    let existed = a.data_dir.exists();
    let built = (|| -> anyhow::Result<()> {
        std::fs::create_dir_all(&a.data_dir)
            .with_context(|| format!("cannot create {}", a.data_dir.display()))?;
        let db = crate::store::open_db(&a.data_dir)?;
        let mut bar = progress("restoring", 2 * summary.size_bytes.saturating_sub(32));
        backup::load_into(&db, &a.file, &mut |done| bar(done))?;
        crate::recovery::record_restored_state(&db, a.id, &members, cluster_id)?;
        db.flush_wal(true)?;
        Ok(())
    })();
    if let Err(e) = built {
        if existed {
            let _ = std::fs::remove_dir_all(a.data_dir.join("db"));
        } else {
            let _ = std::fs::remove_dir_all(&a.data_dir);
        }
        return Err(e);
    }
    println!(
        "restored {} into {}: revision {}, {} keys; new cluster {cluster_id:x} with members {}; start it with `raftkv serve --data-dir {} --id {} --name {}`",
        a.file.display(),
        a.data_dir.display(),
        summary.revision,
        summary.key_count,
        members
            .iter()
            .map(|(id, url)| format!("{id}={url}"))
            .collect::<Vec<_>>()
            .join(","),
        a.data_dir.display(),
        a.id,
        a.name,
    );
    Ok(())
}
