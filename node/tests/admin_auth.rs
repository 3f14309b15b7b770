//! raftkv's Admin service under auth (issue 16, item 1): once auth is on,
//! Initialize, AddMember, SnapshotNow and the backup calls need the root role,
//! as etcd's MemberAdd and Snapshot do; MemberStatus stays readable, as etcd's
//! Maintenance.Status. Before, anyone reaching the client port could add a
//! member, write backups or delete them.

use anyhow::{bail, Context, Result};
use raftkv_node::proto::etcdserverpb::auth_client::AuthClient;
use raftkv_node::proto::etcdserverpb::AuthenticateRequest;
use raftkv_node::proto::raftkvpb::admin::admin_client::AdminClient;
use raftkv_node::proto::raftkvpb::admin::*;
use raftkv_tests::ClusterOptions;
use tonic::transport::Channel;
use tonic::Request;

async fn token(endpoint: &str, name: &str, password: &str) -> Result<String> {
    let mut auth = AuthClient::connect(endpoint.to_string()).await?;
    let resp = auth
        .authenticate(AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await?;
    Ok(resp.into_inner().token)
}

fn with_token<T>(msg: T, token: Option<&str>) -> Result<Request<T>> {
    let mut req = Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut().insert("token", t.parse()?);
    }
    Ok(req)
}

fn code<T>(answer: Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
    match answer {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

/// Every root-only Admin call, as `token` (None: no token), each answer's
/// status code (Ok for success).
async fn root_only_calls(
    admin: &mut AdminClient<Channel>,
    token: Option<&str>,
) -> Result<Vec<(&'static str, tonic::Code)>> {
    let save = SaveBackupRequest {
        file_name: "b1.db".into(),
    };
    let add = AddMemberRequest {
        id: 7,
        peer_url: "http://127.0.0.1:1".into(),
        is_learner: true,
    };
    let init = InitializeRequest {
        cluster_token: "raftkv-tests".into(),
        ..Default::default()
    };
    Ok(vec![
        (
            "SaveBackup",
            code(admin.save_backup(with_token(save, token)?).await),
        ),
        (
            "ListBackups",
            code(
                admin
                    .list_backups(with_token(ListBackupsRequest {}, token)?)
                    .await,
            ),
        ),
        (
            "SnapshotNow",
            code(
                admin
                    .snapshot_now(with_token(SnapshotNowRequest {}, token)?)
                    .await,
            ),
        ),
        (
            "Initialize",
            code(admin.initialize(with_token(init, token)?).await),
        ),
        (
            "AddMember",
            code(admin.add_member(with_token(add, token)?).await),
        ),
        (
            "DeleteBackup",
            code(
                admin
                    .delete_backup(with_token(
                        DeleteBackupRequest {
                            file_name: "b1.db".into(),
                        },
                        token,
                    )?)
                    .await,
            ),
        ),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_calls_need_root_once_auth_is_on() -> Result<()> {
    let cluster = ClusterOptions::new().start(1).await?;
    let endpoint = cluster.members()[0].client_url();
    let mut setup = cluster.client().await?;
    raftkv_tests::auth::enable_with_root_and_alice(&mut setup, "alicepw").await?;
    let mut admin = AdminClient::connect(endpoint.clone()).await?;

    for (call, code) in root_only_calls(&mut admin, None).await? {
        if code != tonic::Code::InvalidArgument {
            bail!("{call} without a token answered {code:?}, not etcd's 'user name is empty'");
        }
    }
    let alice = token(&endpoint, "alice", "alicepw").await?;
    for (call, code) in root_only_calls(&mut admin, Some(&alice)).await? {
        if code != tonic::Code::PermissionDenied {
            bail!("{call} as alice answered {code:?}, not PermissionDenied");
        }
    }
    let root = token(&endpoint, "root", "rootpw").await?;
    let answers = root_only_calls(&mut admin, Some(&root)).await?;
    let root_codes: Vec<_> = answers.iter().map(|(c, code)| (*c, *code)).collect();
    // As root each call gets past the check; AddMember of an unreachable
    // learner is accepted too (it is added as a learner that never starts).
    for (call, code) in &root_codes {
        if matches!(
            code,
            tonic::Code::PermissionDenied | tonic::Code::InvalidArgument
        ) {
            bail!("{call} as root was refused: {root_codes:?}");
        }
    }
    let status = admin
        .member_status(MemberStatusRequest {})
        .await
        .context("MemberStatus without a token")?;
    anyhow::ensure!(status.into_inner().id != 0, "MemberStatus named no member");
    Ok(())
}
