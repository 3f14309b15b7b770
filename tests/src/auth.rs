//! The users and roles most auth tests start from, made through the etcd API
//! as an operator would with etcdctl.

use anyhow::Result;
use etcd_client::{Client, Permission};

/// `root` (password `rootpw`) with the root role; role `app`, read-write on
/// the `app/` prefix; user `alice` (password `alice_password`) with `app`;
/// then auth enabled.
pub async fn enable_with_root_and_alice(client: &mut Client, alice_password: &str) -> Result<()> {
    client.user_add("root", "rootpw", None).await?;
    client.user_grant_role("root", "root").await?;
    client.role_add("app").await?;
    client
        .role_grant_permission("app", Permission::read_write("app/").with_prefix())
        .await?;
    client.user_add("alice", alice_password, None).await?;
    client.user_grant_role("alice", "app").await?;
    client.auth_enable().await?;
    Ok(())
}
