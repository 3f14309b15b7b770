//! Phase 4e: a new image rolls out while a client writes and one member is
//! down (issue 18, item 1). Kubernetes' own rolling update would restart a
//! healthy member and take the quorum; the operator restarts the down one
//! first, then one pod at a time while every other voter serves, and the
//! leader last, after handing leadership over.
//!
//! The second version is the same build copied into the kubelet stand-in's
//! directory for the image `raftkv:0.2.0` (see `raftkv_tests::k8s::command`):
//! the image reference and the binary each member runs change, as they would
//! with two real images.

use super::user::{container_pid, events, jsonpath, member_pods, patch_cluster, NS};
use anyhow::{bail, ensure, Context, Result};
use raftkv_tests::binaries::raftkv_bin;
use raftkv_tests::control_plane::ControlPlane;
use raftkv_tests::k8s::command::image_dir;
use raftkv_tests::wait::until;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NEW_IMAGE: &str = "raftkv:0.2.0";

/// What the sampler saw of the member pods while the rollout ran.
#[derive(Default)]
struct Samples {
    /// The fewest pods that were Ready (and not being deleted) at once.
    fewest_ready: Option<usize>,
    /// Pod names in the order their new incarnation (uid) first appeared.
    restarted: Vec<String>,
    samples: usize,
}

/// One sample: each member pod's uid, and whether it serves.
async fn sample(plane: &ControlPlane, rc: &str) -> Result<BTreeMap<String, (String, bool)>> {
    let out = member_pods(plane, rc, "json").await?;
    let list: serde_json::Value = serde_json::from_str(&out)?;
    let mut pods = BTreeMap::new();
    for pod in list["items"].as_array().context("a pod list")? {
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let terminating = !pod["metadata"]["deletionTimestamp"].is_null();
        let ready = pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        pods.insert(name, (uid, ready && !terminating));
    }
    Ok(pods)
}

/// The second "image": the current build under the new image's directory.
fn install_new_image() -> Result<PathBuf> {
    let raftkv = raftkv_bin()?;
    let bin_dir = raftkv.parent().context("the raftkv binary's directory")?;
    let dir = image_dir(bin_dir, NEW_IMAGE);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let copy = dir.join("raftkv");
    let _ = std::fs::remove_file(&copy);
    std::fs::copy(&raftkv, &copy).with_context(|| format!("copying to {}", copy.display()))?;
    Ok(dir)
}

/// The binary the member process of `pod` runs.
async fn member_binary(plane: &ControlPlane, pod: &str) -> Result<PathBuf> {
    let pid = container_pid(plane, NS, pod).await?;
    std::fs::read_link(format!("/proc/{pid}/exe")).with_context(|| format!("/proc/{pid}/exe"))
}

pub async fn roll_out_a_new_image_with_a_member_down(
    plane: &ControlPlane,
    rc: &str,
    replicas: usize,
) -> Result<()> {
    let new_dir = install_new_image()?;
    let leader = jsonpath(plane, &format!("rkc/{rc}"), "{.status.leader}").await?;
    ensure!(!leader.is_empty(), "no leader before the rollout");
    let pods: Vec<String> = (0..replicas).map(|o| format!("{rc}-{o}")).collect();
    let down = pods
        .iter()
        .find(|p| **p != leader)
        .context("a follower")?
        .clone();
    let before = sample(plane, rc).await?;

    // One member down: its process hangs (SIGSTOP), its pod turns not Ready.
    let pid = container_pid(plane, NS, &down).await?;
    // SAFETY: kill(2) on the pid of a member process this test's node runs.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    until(
        Duration::from_secs(60),
        format!("pod {down} not Ready"),
        || async {
            let now = sample(plane, rc).await?;
            Ok(now
                .get(&down)
                .is_some_and(|(_, ready)| !ready)
                .then_some(()))
        },
    )
    .await?;

    // Sample the pods from now until every one runs the new image.
    let done = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Samples::default()));
    let sampler = {
        let (done, samples) = (done.clone(), samples.clone());
        let before = before.clone();
        let plane: &ControlPlane = plane;
        let rc = rc.to_string();
        async move {
            while !done.load(Ordering::SeqCst) {
                if let Ok(now) = sample(plane, &rc).await {
                    let mut s = samples.lock().unwrap();
                    let ready = now.values().filter(|(_, ready)| *ready).count();
                    s.fewest_ready = Some(s.fewest_ready.map_or(ready, |f| f.min(ready)));
                    s.samples += 1;
                    for (name, (uid, _)) in &now {
                        let new = before.get(name).is_none_or(|(old, _)| old != uid);
                        if new && !s.restarted.contains(name) {
                            s.restarted.push(name.clone());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let rollout = async {
        patch_cluster(
            plane,
            rc,
            "merge",
            &format!(r#"{{"spec":{{"image":"{NEW_IMAGE}"}}}}"#),
        )
        .await?;
        until(
            Duration::from_secs(600),
            "every member pod on the new image, Ready",
            || async {
                let images = jsonpath(
                    plane,
                    "pods",
                    &format!(
                        "{{range .items[?(@.metadata.labels.app\\.kubernetes\\.io/instance==\"{rc}\")]}}{{.spec.containers[0].image}}/{{.status.conditions[?(@.type==\"Ready\")].status}} {{end}}"
                    ),
                )
                .await?;
                let all = images.split_whitespace().collect::<Vec<_>>();
                let want = format!("{NEW_IMAGE}/True");
                if all.len() == replicas && all.iter().all(|i| *i == want) {
                    Ok(Some(()))
                } else {
                    bail!("pods (image/Ready): {images}")
                }
            },
        )
        .await
    };
    let (result, ()) = tokio::join!(
        async {
            let r = rollout.await;
            done.store(true, Ordering::SeqCst);
            r
        },
        sampler
    );
    result?;

    let s = std::mem::take(&mut *samples.lock().unwrap());
    let majority = replicas / 2 + 1;
    ensure!(s.samples > 10, "only {} samples taken", s.samples);
    ensure!(
        s.fewest_ready.is_some_and(|f| f >= majority),
        "at some sampled moment only {:?} of {replicas} member pods were Ready",
        s.fewest_ready
    );
    ensure!(
        s.restarted.len() == replicas,
        "not every pod restarted: {:?}",
        s.restarted
    );
    ensure!(
        s.restarted.first() == Some(&down),
        "the down member {down} was not restarted first: {:?}",
        s.restarted
    );
    ensure!(
        s.restarted.last() == Some(&leader),
        "the leader {leader} was not restarted last: {:?}",
        s.restarted
    );
    for pod in &pods {
        let exe = member_binary(plane, pod).await?;
        ensure!(
            exe.starts_with(&new_dir),
            "pod {pod} runs {} after the rollout, not the new image's binary",
            exe.display()
        );
    }
    let story = events(plane, rc).await?;
    for reason in ["RestartingMember", "MovingLeader"] {
        ensure!(
            story.contains(reason),
            "no {reason} event on rkc/{rc}:\n{story}"
        );
    }
    let condition = jsonpath(
        plane,
        &format!("rkc/{rc}"),
        "{.status.conditions[?(@.type==\"PodsUpToDate\")].status}",
    )
    .await?;
    ensure!(
        condition == "True",
        "PodsUpToDate is {condition:?} after the rollout"
    );
    Ok(())
}
