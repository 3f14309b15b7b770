//! HTTP on the client port, as etcd serves it (issue 21, item 1): curl on a
//! member's client URL gets etcd's `/health` and `/version` JSON, the
//! `/livez`, `/readyz` and `/metrics` of the metrics port, and etcd's JSON
//! gateway under `/v3/` (base64 bytes, 64-bit integers as strings, a
//! newline-delimited stream for watch), with auth as over gRPC; and etcd's
//! metric names (issue 21, item 2, part) on `/metrics`.

use anyhow::{ensure, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use raftkv_tests::auth::enable_with_root_and_alice;
use raftkv_tests::curl::Curl;
use raftkv_tests::wait::{self, LEADER_TIMEOUT};
use raftkv_tests::{ClusterOptions, Etcdctl};
use serde_json::{json, Value};
use std::time::Duration;

const LINE_TIMEOUT: Duration = Duration::from_secs(15);

fn b64(s: &str) -> String {
    BASE64.encode(s)
}

/// A JSON string field holding an integer, as etcd's gateway writes int64s.
fn int(v: &Value, pointer: &str) -> Result<i64> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no integer string at {pointer} in {v}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn etcds_http_endpoints_and_json_gateway_answer_on_the_client_port() -> Result<()> {
    let cluster = ClusterOptions::new().start(3).await?;
    let members: Vec<Curl> = cluster
        .members()
        .iter()
        .map(|m| Curl::new(&m.client_url()))
        .collect();

    for curl in &members {
        let health = curl.get("/health").await?;
        ensure!(
            health.status == 200 && health.json()? == json!({"health": "true", "reason": ""}),
            "/health: {health:?}"
        );
        let version = curl.get("/version").await?;
        ensure!(
            version.json()? == json!({"etcdserver": "3.5.0", "etcdcluster": "3.5.0"}),
            "/version: {version:?}"
        );
        for probe in ["/livez", "/readyz"] {
            let answer = curl.get(probe).await?;
            ensure!(answer.status == 200, "{probe}: {answer:?}");
        }
        let metrics = curl.get("/metrics").await?;
        ensure!(
            metrics.status == 200 && metrics.body.contains("raftkv_raft_term"),
            "/metrics on the client port: {metrics:?}"
        );
    }

    // A put through one member, read through another, in etcd's JSON.
    let put = members[0]
        .post(
            "/v3/kv/put",
            &json!({"key": b64("gw/k"), "value": b64("v1")}).to_string(),
        )
        .await?;
    ensure!(put.status == 200, "/v3/kv/put: {put:?}");
    let put_revision = int(&put.json()?, "/header/revision")?;
    let range = members[1]
        .post("/v3/kv/range", &json!({"key": b64("gw/k")}).to_string())
        .await?;
    let range = range.json()?;
    ensure!(
        range["kvs"][0]["value"] == b64("v1")
            && int(&range, "/kvs/0/mod_revision")? == put_revision
            && int(&range, "/count")? == 1,
        "/v3/kv/range: {range}"
    );
    // The same keyspace as gRPC's.
    let got = Etcdctl::new(&cluster.endpoints())?
        .run(&["get", "gw/k", "--print-value-only"])
        .await?
        .ok()?;
    ensure!(got.stdout == "v1\n", "etcdctl get printed {:?}", got.stdout);

    // etcd's metric names, and the gRPC calls counted as etcd counts them
    // (go-grpc-prometheus), the gateway's included.
    let metrics = members[0].get("/metrics").await?.body;
    for line in [
        "etcd_server_has_leader 1",
        r#"grpc_server_started_total{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1"#,
        r#"grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1"#,
    ] {
        ensure!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in /metrics: {}",
            metrics
                .lines()
                .filter(|l| l.starts_with("etcd_server") || l.starts_with("grpc_server_handled"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // A body that is not a request: grpc-gateway's 400 with code 3.
    let bad = members[2]
        .post("/v3/kv/range", r#"{"key": "gw/k", "limit": "many"}"#)
        .await?;
    ensure!(
        bad.status == 400 && bad.json()?["code"] == 3,
        "a malformed range: {bad:?}"
    );

    // A watch: curl sends one create request and reads on.
    let mut watch = members[2].stream(
        "/v3/watch",
        &json!({"create_request": {"key": b64("gw/w")}}).to_string(),
    )?;
    let created = watch
        .next_json(LINE_TIMEOUT)
        .await?
        .context("no created line")?;
    ensure!(
        created["result"]["created"] == true,
        "first watch line: {created}"
    );
    members[0]
        .post(
            "/v3/kv/put",
            &json!({"key": b64("gw/w"), "value": b64("seen")}).to_string(),
        )
        .await?;
    let event = watch
        .next_json(LINE_TIMEOUT)
        .await?
        .context("no event line")?;
    let kv = &event["result"]["events"][0]["kv"];
    ensure!(
        kv["key"] == b64("gw/w") && kv["value"] == b64("seen"),
        "watch event: {event}"
    );

    // A lease and its keep-alive (one answer, then the call ends with the body).
    let grant = members[1]
        .post("/v3/lease/grant", &json!({"TTL": "60"}).to_string())
        .await?
        .json()?;
    let lease = int(&grant, "/ID")?;
    let mut keep_alive = members[2].stream(
        "/v3/lease/keepalive",
        &json!({"ID": lease.to_string()}).to_string(),
    )?;
    let kept = keep_alive
        .next_json(LINE_TIMEOUT)
        .await?
        .context("no keep-alive line")?;
    ensure!(
        int(&kept, "/result/ID")? == lease && int(&kept, "/result/TTL")? == 60,
        "keep-alive: {kept}"
    );
    ensure!(
        keep_alive.next_json(LINE_TIMEOUT).await?.is_none(),
        "the keep-alive call went on after its body ended"
    );

    // A snapshot streams its blob in result lines.
    let mut snapshot = members[0].stream("/v3/maintenance/snapshot", "{}")?;
    let first = snapshot
        .next_json(LINE_TIMEOUT)
        .await?
        .context("no snapshot line")?;
    ensure!(
        first["result"]["blob"].is_string(),
        "first snapshot line: {}",
        first.to_string().chars().take(200).collect::<String>()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_gateway_needs_a_token_once_auth_is_on() -> Result<()> {
    let cluster = ClusterOptions::new().start(1).await?;
    let mut client = cluster.client().await?;
    enable_with_root_and_alice(&mut client, "alice-pw").await?;
    let curl = Curl::new(&cluster.members()[0].client_url());
    let put = json!({"key": b64("app/k"), "value": b64("v")}).to_string();

    let anonymous = curl.post("/v3/kv/put", &put).await?;
    ensure!(
        anonymous.status == 400 && anonymous.json()?["message"] == "etcdserver: user name is empty",
        "a put without a token: {anonymous:?}"
    );
    // The header the client port's layer sets for a certificate's user is
    // not the caller's to send.
    let forged = curl
        .clone()
        .with_header("raftkv-cert-user: root")
        .post("/v3/kv/put", &put)
        .await?;
    ensure!(
        forged.status == 400 && forged.json()?["message"] == "etcdserver: user name is empty",
        "a put claiming root in a header: {forged:?}"
    );

    let auth = curl
        .post(
            "/v3/auth/authenticate",
            &json!({"name": "alice", "password": "alice-pw"}).to_string(),
        )
        .await?;
    let token = auth.json()?["token"]
        .as_str()
        .with_context(|| format!("authenticate: {auth:?}"))?
        .to_string();
    let alice = curl.clone().with_header(&format!("Authorization: {token}"));
    let allowed = alice.post("/v3/kv/put", &put).await?;
    ensure!(allowed.status == 200, "alice's put under app/: {allowed:?}");
    let denied = alice
        .post(
            "/v3/kv/put",
            &json!({"key": b64("other/k"), "value": b64("v")}).to_string(),
        )
        .await?;
    ensure!(
        denied.status == 403 && denied.json()?["message"] == "etcdserver: permission denied",
        "alice's put outside app/: {denied:?}"
    );
    // Health asks nothing of the caller, as etcd's.
    let health = curl.get("/health").await?;
    ensure!(health.status == 200, "/health with auth on: {health:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn health_says_no_leader_when_the_quorum_is_gone() -> Result<()> {
    let mut cluster = ClusterOptions::new().start(3).await?;
    let survivor = cluster.members()[0].id;
    let curl = Curl::new(&cluster.member(survivor).client_url());
    for m in cluster
        .members_mut()
        .iter_mut()
        .filter(|m| m.id != survivor)
    {
        m.stop().await?;
    }
    // (A leader left alone first fails the read, "RANGE ERROR: ... quorum",
    // until it gives up vouching for itself one election timeout later.)
    let unhealthy = wait::until(LEADER_TIMEOUT, "/health to say there is no leader", || {
        let curl = curl.clone();
        async move {
            let health = curl.get("/health").await?;
            Ok(health.body.contains("NO LEADER").then_some(health))
        }
    })
    .await?;
    ensure!(
        unhealthy.json()? == json!({"health": "false", "reason": "RAFT NO LEADER"}),
        "/health without a quorum: {unhealthy:?}"
    );
    // A serializable check asks only this member's own store.
    let serializable = curl.get("/health?serializable=true").await?;
    ensure!(
        serializable.status == 200 && serializable.json()?["health"] == "true",
        "/health?serializable=true without a quorum: {serializable:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_with_client_certificates_reaches_http_over_tls() -> Result<()> {
    let cluster = ClusterOptions::new().tls().start(1).await?;
    let root = cluster.client_tls().context("a TLS cluster")?.clone();
    let url = cluster.members()[0].client_url();
    ensure!(url.starts_with("https://"), "client URL {url}");
    let curl = Curl::new(&url).with_tls(&root);
    // HTTP/1.1 and HTTP/2 both, as the handshake offers.
    for version in ["--http1.1", "--http2"] {
        let out = curl.run(&[version, "--fail"], "/health").await?.ok()?;
        ensure!(
            out.stdout.contains(r#""health":"true""#),
            "{version} /health: {out}"
        );
    }
    // The gateway, over the same handshake.
    let put = curl
        .post(
            "/v3/kv/put",
            &json!({"key": b64("tls/k"), "value": b64("v")}).to_string(),
        )
        .await?;
    ensure!(put.status == 200, "a put over TLS: {put:?}");
    // Without a client certificate the handshake is refused.
    let bare = Curl::new(&url);
    let refused = bare
        .run(&["--cacert", &root.ca.display().to_string()], "/health")
        .await?;
    ensure!(
        !refused.success(),
        "curl without a certificate got in: {refused}"
    );
    Ok(())
}
