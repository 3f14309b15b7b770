//! Auth tokens end when their grounds do (issue 16, item 6), as in etcd: a
//! password change or deleting the user ends that user's tokens (a user
//! deleted and added again does not get its old tokens back), and turning
//! auth off ends every token. Before, a token outlived all three.

use anyhow::{bail, Result};
use raftkv_node::proto::etcdserverpb::auth_client::AuthClient;
use raftkv_node::proto::etcdserverpb::kv_client::KvClient;
use raftkv_node::proto::etcdserverpb::*;
use raftkv_tests::ClusterOptions;
use tonic::transport::Channel;
use tonic::Request;

fn as_user<T>(msg: T, token: &str) -> Result<Request<T>> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert("token", token.parse()?);
    Ok(req)
}

async fn token(auth: &mut AuthClient<Channel>, name: &str, password: &str) -> Result<String> {
    let req = AuthenticateRequest {
        name: name.into(),
        password: password.into(),
    };
    Ok(auth.authenticate(req).await?.into_inner().token)
}

/// Whether a read of app/x with `token` is let through (and the refusal if not).
async fn reads(kv: &mut KvClient<Channel>, token: &str) -> Result<Result<(), tonic::Status>> {
    let req = RangeRequest {
        key: b"app/x".to_vec(),
        ..Default::default()
    };
    Ok(kv.range(as_user(req, token)?).await.map(|_| ()))
}

async fn expect_ended(kv: &mut KvClient<Channel>, token: &str, after: &str) -> Result<()> {
    match reads(kv, token).await? {
        Err(s)
            if s.code() == tonic::Code::Unauthenticated
                && s.message() == "etcdserver: invalid auth token" => {}
        Err(s) => bail!("after {after}: the old token got {s:?}, not 'invalid auth token'"),
        Ok(()) => bail!("after {after}: the old token still reads"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_end_on_password_change_user_delete_and_auth_disable() -> Result<()> {
    let cluster = ClusterOptions::new().start(1).await?;
    let endpoint = cluster.members()[0].client_url();
    let mut setup = cluster.client().await?;
    raftkv_tests::auth::enable_with_root_and_alice(&mut setup, "pw1").await?;
    let mut auth = AuthClient::connect(endpoint.clone()).await?;
    let mut kv = KvClient::connect(endpoint.clone()).await?;
    let root = token(&mut auth, "root", "rootpw").await?;

    let first = token(&mut auth, "alice", "pw1").await?;
    reads(&mut kv, &first).await??;
    let change = AuthUserChangePasswordRequest {
        name: "alice".into(),
        password: "pw2".into(),
        ..Default::default()
    };
    auth.user_change_password(as_user(change, &root)?).await?;
    expect_ended(&mut kv, &first, "a password change").await?;

    let second = token(&mut auth, "alice", "pw2").await?;
    reads(&mut kv, &second).await??;
    let delete = AuthUserDeleteRequest {
        name: "alice".into(),
    };
    auth.user_delete(as_user(delete, &root)?).await?;
    let add = AuthUserAddRequest {
        name: "alice".into(),
        password: "pw2".into(),
        ..Default::default()
    };
    auth.user_add(as_user(add, &root)?).await?;
    let grant = AuthUserGrantRoleRequest {
        user: "alice".into(),
        role: "app".into(),
    };
    auth.user_grant_role(as_user(grant, &root)?).await?;
    expect_ended(&mut kv, &second, "deleting and adding the user again").await?;

    let third = token(&mut auth, "alice", "pw2").await?;
    reads(&mut kv, &third).await??;
    auth.auth_disable(as_user(AuthDisableRequest {}, &root)?)
        .await?;
    auth.auth_enable(AuthEnableRequest {}).await?;
    expect_ended(&mut kv, &third, "auth disable and enable").await?;
    // A new token works.
    let fourth = token(&mut auth, "alice", "pw2").await?;
    reads(&mut kv, &fourth).await??;
    Ok(())
}
