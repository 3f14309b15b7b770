//! Scheduled backups driven by the operator's backup planner and executor
//! against real raftkv processes, on a seconds-level schedule and the real
//! clock: backups appear at the scheduled instants, retention keeps the newest,
//! the recorded `lastSnapshot` is the newest file on the member that wrote it,
//! ticks missed while the "operator" is away give one backup, and a new
//! cluster restores from one of the files (`spec.restore.fromBackup`).

use anyhow::{bail, ensure, Context, Result};
use chrono::{Timelike, Utc};
use raftkv_operator::crd::{LastSnapshot, SnapshotSpec};
use raftkv_operator::membership::executor::{ExecError, Executor, Outcome};
use raftkv_operator::membership::{plan_next_step, Observed, Plan, Step};
use raftkv_operator::snapshots::schedule::is_scheduled_backup_of;
use raftkv_operator::snapshots::{last_snapshot, plan_backup, BackupInput, BackupPlan};
use raftkv_tests::kv::get_value;
use raftkv_tests::pod_set::{PodAddresses, PodSet};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

async fn observe(
    pods: &PodSet,
    executor: &Executor<PodAddresses>,
    desired: u32,
    initialized: bool,
    restore: Option<&str>,
) -> Observed {
    let mut observed = Observed {
        desired_replicas: desired,
        statefulset_replicas: Some(pods.replicas()),
        volumes: pods.volumes(),
        initialized,
        restore_from_backup: restore.map(str::to_string),
        ..Observed::default()
    };
    executor
        .observe(0..pods.replicas())
        .await
        .fill(&mut observed);
    observed
}

/// The membership part of the reconciler, until converged.
async fn converge(
    pods: &mut PodSet,
    executor: &Executor<PodAddresses>,
    desired: u32,
    restore: Option<&str>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut initialized = false;
    let mut last = String::new();
    while Instant::now() < deadline {
        let observed = observe(pods, executor, desired, initialized, restore).await;
        let plan = plan_next_step(&observed);
        match &plan {
            Plan::Converged => return Ok(()),
            Plan::Act(Step::ScaleStatefulSet { to, .. }) => pods.scale_to(*to)?,
            Plan::Act(Step::DeleteVolume { ordinal }) => pods.delete_volume(*ordinal)?,
            Plan::Act(Step::ResetMember { ordinal }) => pods.reset(*ordinal)?,
            Plan::Act(raft) => match executor.execute(raft, &observed).await {
                Ok(Outcome::Initialized { .. }) => initialized = true,
                Ok(_) => {}
                Err(err) => last = format!("{raft:?}: {err}"),
            },
            Plan::Wait(_) | Plan::Refuse(_) => {}
        }
        if !matches!(plan, Plan::Act(_)) {
            last = format!("{plan:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("not converged to {desired}: {last}\n{}", pods.log_tails(20))
}

/// One backup round of the reconciler with the real clock; returns the backup
/// taken, if one was due.
async fn backup_round(
    pods: &PodSet,
    executor: &Executor<PodAddresses>,
    spec: &SnapshotSpec,
    last: &mut Option<LastSnapshot>,
    created: chrono::DateTime<Utc>,
) -> Result<Option<LastSnapshot>> {
    let observed = observe(pods, executor, pods.replicas(), true, None).await;
    let now = Utc::now();
    let plan = plan_backup(&BackupInput {
        cluster: "demo",
        spec,
        last: last.as_ref(),
        created,
        now,
        reports: &observed.reports,
    });
    match plan {
        BackupPlan::Take(take) => {
            let done = executor
                .take_backup(&take, "demo", spec.retain, observed.reports.keys().copied())
                .await
                .with_context(|| format!("taking {take:?}"))?;
            ensure!(done.prune_errors.is_empty(), "{:?}", done.prune_errors);
            let taken = last_snapshot(&take, &done, pods.pod_name(take.ordinal), Utc::now());
            *last = Some(taken.clone());
            Ok(Some(taken))
        }
        BackupPlan::Idle { .. } => Ok(None),
        other => bail!("unexpected {other:?}"),
    }
}

/// This cluster's scheduled backups on every member: file -> ordinals holding it.
async fn listing(
    pods: &PodSet,
    executor: &Executor<PodAddresses>,
) -> Result<BTreeMap<String, Vec<u32>>> {
    let mut files: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for ordinal in 0..pods.replicas() {
        for b in executor.list_backups(ordinal).await? {
            if is_scheduled_backup_of("demo", &b.file_name) {
                files.entry(b.file_name).or_default().push(ordinal);
            }
        }
    }
    Ok(files)
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_backups_appear_on_time_are_pruned_and_restore() -> Result<()> {
    let mut pods = PodSet::new("demo", 3)?;
    let executor =
        Executor::new(pods.addresses(), "rc-uid-snapshots").with_timeout(Duration::from_secs(10));
    converge(&mut pods, &executor, 3, None).await?;
    if let Err(ExecError::Admin { status, .. }) = executor.list_backups(0).await {
        if status.code() == tonic::Code::Unimplemented {
            eprintln!("SKIPPED: this raftkv binary does not implement Admin.ListBackups yet");
            return Ok(());
        }
    }
    let mut client = raftkv_tests::grpc::connect(&[pods.ports()[0].client_endpoint()]).await?;

    let spec: SnapshotSpec =
        serde_json::from_value(serde_json::json!({"schedule": "*/2 * * * * *", "retain": 3}))?;
    let created = Utc::now();
    let mut last = None;
    let mut taken = Vec::new();
    let start = Instant::now();
    let mut i = 0u32;
    while start.elapsed() < Duration::from_secs(14) {
        client
            .put(format!("snap/{i:03}"), format!("v{i}"), None)
            .await?;
        i += 1;
        if let Some(b) = backup_round(&pods, &executor, &spec, &mut last, created).await? {
            taken.push(b);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "{} backups: {:?}",
        taken.len(),
        taken.iter().map(|b| &b.file).collect::<Vec<_>>()
    );
    ensure!(taken.len() >= 4, "only {} backups in 14 s", taken.len());
    for pair in taken.windows(2) {
        ensure!(pair[0].scheduled_time < pair[1].scheduled_time, "{pair:?}");
        ensure!(pair[0].revision <= pair[1].revision, "{pair:?}");
    }
    for b in &taken {
        let at = chrono::DateTime::parse_from_rfc3339(&b.scheduled_time)?;
        ensure!(at.second() % 2 == 0, "off schedule: {b:?}");
        ensure!(b.size_bytes > 0 && b.revision > 0, "{b:?}");
    }

    // Retention: the newest 3 names remain, wherever they were written.
    let files = listing(&pods, &executor).await?;
    let mut newest: Vec<String> = taken.iter().map(|b| b.file.clone()).collect();
    newest.sort();
    let newest: Vec<String> = newest.split_off(newest.len() - 3);
    ensure!(
        files.keys().cloned().collect::<Vec<_>>() == newest,
        "kept {files:?}, expected {newest:?}"
    );
    // lastSnapshot names the newest file, on the member that holds it.
    let last_taken = last.clone().context("lastSnapshot")?;
    ensure!(last_taken.file == *newest.last().unwrap());
    let holder: u32 = last_taken.member.trim_start_matches("demo-").parse()?;
    ensure!(files[&last_taken.file].contains(&holder), "{files:?}");

    // The operator is away for 5 s (two or three ticks): one round on return
    // takes one backup, for the latest instant, not one per missed tick.
    let away_from = last.clone().context("lastSnapshot")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let returned_at = Utc::now();
    let back = backup_round(&pods, &executor, &spec, &mut last, created)
        .await?
        .context("nothing taken after missed ticks")?;
    let at = chrono::DateTime::parse_from_rfc3339(&back.scheduled_time)?.with_timezone(&Utc);
    ensure!(
        returned_at - at < chrono::TimeDelta::seconds(2)
            && at > returned_at - chrono::TimeDelta::seconds(3),
        "backed up {at}, not the latest instant before {returned_at} (last before: {})",
        away_from.scheduled_time
    );
    let files = listing(&pods, &executor).await?;
    ensure!(
        files.len() == 3 && files.contains_key(&back.file),
        "{files:?}"
    );

    // A new cluster restored from the newest backup has the data.
    let newest = last.clone().context("lastSnapshot")?;
    let holder: u32 = newest.member.trim_start_matches("demo-").parse()?;
    let mut restored = PodSet::new("restored", 1)?.with_backup_dir(pods.backup_dir(holder));
    let restored_exec = Executor::new(restored.addresses(), "rc-uid-restored")
        .with_timeout(Duration::from_secs(10));
    converge(&mut restored, &restored_exec, 1, Some(&newest.file)).await?;
    let mut rclient = raftkv_tests::grpc::connect(&[restored.ports()[0].client_endpoint()]).await?;
    ensure!(get_value(&mut rclient, "snap/000").await?.as_deref() == Some("v0"));
    let resp = rclient
        .get(
            "snap/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await?;
    ensure!(resp.count() >= 4, "restored {} keys", resp.count());
    Ok(())
}
