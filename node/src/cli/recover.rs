//! `raftkv recover --solo` and `raftkv reset`: operations on a stopped member's
//! data dir (see `crate::recovery`), which refuse a running member; and
//! `raftkv recover --solo --endpoints`, the same recovery of a running,
//! leaderless member through Admin.RecoverSolo.

use std::path::PathBuf;

use anyhow::bail;

#[derive(clap::Args, Debug)]
pub struct RecoverArgs {
    /// Make this member a one-member cluster (the only recovery there is).
    #[arg(long)]
    solo: bool,
    /// The stopped member's data dir (offline recovery). Without it, the
    /// running member at --endpoints is recovered through the Admin API.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Online: the member must have had no leader for at least this long.
    #[arg(long, default_value_t = 0)]
    min_leaderless_millis: u64,
    /// Online: the member to recover (its client endpoint).
    #[arg(long, env = "RAFTKV_ENDPOINTS")]
    endpoints: Option<String>,
    /// The member's id, if its data dir does not record it.
    #[arg(long)]
    id: Option<u64>,
    /// Online, with auth on: root's client certificate is how to ask without
    /// a quorum (a token is issued through the log).
    #[command(flatten)]
    tls: super::client::ClientTlsFiles,
}

#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    #[arg(long)]
    data_dir: PathBuf,
}

pub async fn recover(a: RecoverArgs) -> anyhow::Result<()> {
    if !a.solo {
        bail!("say --solo: solo recovery (this member alone, at a new epoch) is the only recovery");
    }
    let data_dir = match (a.data_dir, a.endpoints) {
        (Some(_), Some(_)) => {
            bail!("give --data-dir (stopped member) or --endpoints (running member), not both")
        }
        (None, None) => bail!("give --data-dir (stopped member) or --endpoints (running member)"),
        (None, Some(endpoints)) => {
            let ep = super::client::Endpoints {
                endpoints,
                tls: a.tls,
            };
            return online(ep, a.min_leaderless_millis).await;
        }
        (Some(d), None) => d,
    };
    let db = crate::recovery::open_offline(&data_dir)?;
    let id = crate::recovery::member_id(&db, a.id)?;
    let report = crate::recovery::recover_solo(&db, id)?;
    println!("{}", report.text());
    println!(
        "start the member as before (same --id {id} and --data-dir); it elects itself and serves alone."
    );
    Ok(())
}

pub fn reset(a: ResetArgs) -> anyhow::Result<()> {
    let removed = crate::recovery::reset(&a.data_dir)?;
    println!(
        "reset {}: removed {} (backups kept); start the member with --join and add it again",
        a.data_dir.display(),
        if removed.is_empty() {
            "nothing".to_string()
        } else {
            removed.join(", ")
        }
    );
    Ok(())
}

async fn online(ep: super::client::Endpoints, min_leaderless_millis: u64) -> anyhow::Result<()> {
    use crate::proto::raftkvpb::admin::admin_client::AdminClient;
    use crate::proto::raftkvpb::admin::RecoverSoloRequest;
    let mut admin = AdminClient::new(ep.connect().await?);
    let r = admin
        .recover_solo(RecoverSoloRequest {
            min_leaderless_millis,
        })
        .await
        .map_err(super::client::status_err)?
        .into_inner();
    println!("{}", r.report);
    println!("the member restarts by itself and serves alone.");
    Ok(())
}
