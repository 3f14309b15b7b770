//! A stand-in for a StatefulSet, for driving the operator's executor against
//! real `raftkv` processes: "pods" by ordinal, each `raftkv serve --join --id
//! <ordinal+1>` on its own ports, with a data dir that plays the pod's volume.
//!
//! Like a StatefulSet, an ordinal keeps its name and addresses across
//! re-creation (the ports are allocated once per ordinal, as DNS names are), and
//! scaling down stops the highest pods but leaves their volumes behind.

use crate::binaries::raftkv_bin;
use crate::member::{Launch, Member};
use crate::ports::Ports;
use anyhow::{Context, Result};
use raftkv_operator::membership::executor::MemberAddresses;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// Up to `capacity` pods on 127.0.0.1; see the module docs.
pub struct PodSet {
    name: String,
    ports: Vec<Ports>,
    pods: BTreeMap<u32, Member>,
    replicas: u32,
    bin: PathBuf,
    dir: TempDir,
    /// `--backup-dir` of every pod (a shared backup volume); `None`: the node's
    /// default, inside each pod's own data dir.
    backup_dir: Option<PathBuf>,
}

impl PodSet {
    /// No pods yet; ports for ordinals `0..capacity` reserved.
    pub fn new(name: &str, capacity: u32) -> Result<PodSet> {
        let dir = tempfile::Builder::new()
            .prefix("raftkv-podset-")
            .tempdir()
            .context("creating the pod set's temporary dir")?;
        Ok(PodSet {
            name: name.to_string(),
            ports: (0..capacity)
                .map(|_| Ports::allocate())
                .collect::<Result<_>>()?,
            pods: BTreeMap::new(),
            replicas: 0,
            bin: raftkv_bin()?,
            dir,
            backup_dir: None,
        })
    }

    /// Every pod started from now on writes backups to `dir` (a shared claim).
    pub fn with_backup_dir(mut self, dir: impl Into<PathBuf>) -> PodSet {
        self.backup_dir = Some(dir.into());
        self
    }

    /// The data dir (the volume's contents) of `ordinal`.
    pub fn data_dir(&self, ordinal: u32) -> PathBuf {
        Member::data_dir_of(&self.pod_dir(ordinal))
    }

    /// Where the pod of `ordinal` writes backups.
    pub fn backup_dir(&self, ordinal: u32) -> PathBuf {
        match &self.backup_dir {
            Some(dir) => dir.clone(),
            None => self.data_dir(ordinal).join("backups"),
        }
    }

    /// Whether the pod of `ordinal` runs.
    pub fn is_running(&self, ordinal: u32) -> bool {
        self.pods.contains_key(&ordinal)
    }

    /// A machine failure: the pod of `ordinal` is killed and not restarted (its
    /// volume stays) until [`PodSet::restart`].
    pub fn kill(&mut self, ordinal: u32) -> Result<()> {
        if let Some(mut pod) = self.pods.remove(&ordinal) {
            pod.kill9()?;
        }
        Ok(())
    }

    /// The pod of `ordinal` freezes (SIGSTOP): it answers nothing and holds
    /// its connections, like a machine cut off, until [`PodSet::resume`].
    pub fn pause(&mut self, ordinal: u32) -> Result<()> {
        self.running(ordinal)?.pause()
    }

    /// SIGCONT after [`PodSet::pause`].
    pub fn resume(&mut self, ordinal: u32) -> Result<()> {
        self.running(ordinal)?.resume()
    }

    fn running(&mut self, ordinal: u32) -> Result<&mut Member> {
        let name = self.pod_name(ordinal);
        self.pods
            .get_mut(&ordinal)
            .with_context(|| format!("{name} does not run"))
    }

    /// Start the pod of `ordinal` again on whatever its volume holds.
    pub fn restart(&mut self, ordinal: u32) -> Result<()> {
        anyhow::ensure!(
            !self.pods.contains_key(&ordinal),
            "{} runs already",
            self.pod_name(ordinal)
        );
        self.start(ordinal)
    }

    /// The volume of `ordinal` is lost (the pod must not run).
    pub fn lose_volume(&mut self, ordinal: u32) -> Result<()> {
        self.delete_volume(ordinal)
    }

    /// Where the operator's executor reaches each ordinal (what DNS would resolve).
    pub fn addresses(&self) -> PodAddresses {
        PodAddresses(self.ports.clone())
    }

    /// The ports of every ordinal (what DNS would resolve).
    pub fn ports(&self) -> &[Ports] {
        &self.ports
    }

    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    pub fn pod_name(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.name)
    }

    fn pod_dir(&self, ordinal: u32) -> PathBuf {
        self.dir.path().join(self.pod_name(ordinal))
    }

    /// Ordinals whose volume (data dir) exists, with or without a pod.
    pub fn volumes(&self) -> BTreeSet<u32> {
        (0..self.ports.len() as u32)
            .filter(|&o| Member::data_dir_of(&self.pod_dir(o)).exists())
            .collect()
    }

    /// Start or stop the highest pods so exactly `replicas` run.
    pub fn scale_to(&mut self, replicas: u32) -> Result<()> {
        for ordinal in self.replicas..replicas {
            self.start(ordinal)?;
        }
        for ordinal in (replicas..self.replicas).rev() {
            if let Some(mut pod) = self.pods.remove(&ordinal) {
                pod.kill9()?;
            }
        }
        self.replicas = replicas;
        Ok(())
    }

    fn start(&mut self, ordinal: u32) -> Result<()> {
        let ports = self.ports[ordinal as usize];
        let id = u64::from(ordinal) + 1;
        let name = self.pod_name(ordinal);
        let dir = self.pod_dir(ordinal);
        let data_dir = Member::data_dir_of(&dir);
        let args: Vec<String> = [
            "serve",
            "--join",
            "--id",
            &id.to_string(),
            "--name",
            &name,
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--listen-client-urls",
            &ports.client_url(),
            "--advertise-client-urls",
            &ports.client_url(),
            "--listen-peer-urls",
            &ports.peer_url(),
            "--initial-advertise-peer-urls",
            &ports.peer_url(),
            "--listen-metrics-urls",
            &ports.metrics_url(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut args = args;
        if let Some(backups) = &self.backup_dir {
            args.push("--backup-dir".to_string());
            args.push(backups.to_string_lossy().into_owned());
        }
        let pod = Member::start(
            &self.bin,
            id,
            &name,
            dir,
            ports,
            Launch {
                args,
                netns: None,
                env: Vec::new(),
            },
        )?;
        self.pods.insert(ordinal, pod);
        Ok(())
    }

    /// Delete the volume of an ordinal that has no pod.
    pub fn delete_volume(&mut self, ordinal: u32) -> Result<()> {
        anyhow::ensure!(
            !self.pods.contains_key(&ordinal),
            "volume of {} is in use by its pod",
            self.pod_name(ordinal)
        );
        remove_data(&self.pod_dir(ordinal))
    }

    /// Delete a pod and its volume; the "StatefulSet" re-creates it empty.
    pub fn reset(&mut self, ordinal: u32) -> Result<()> {
        if let Some(mut pod) = self.pods.remove(&ordinal) {
            pod.kill9()?;
        }
        remove_data(&self.pod_dir(ordinal))?;
        if ordinal < self.replicas {
            self.start(ordinal)?;
        }
        Ok(())
    }

    /// Log tails of every running pod, for a failure message.
    pub fn log_tails(&self, lines: usize) -> String {
        self.pods
            .values()
            .map(|m| format!("==== {} ====\n{}", m.name, m.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn remove_data(pod_dir: &Path) -> Result<()> {
    let data = Member::data_dir_of(pod_dir);
    if data.exists() {
        std::fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
    }
    Ok(())
}

/// The member of ordinal N at the N-th pod's ports on 127.0.0.1.
pub struct PodAddresses(Vec<Ports>);

impl MemberAddresses for PodAddresses {
    fn client_endpoint(&self, ordinal: u32) -> String {
        self.0[ordinal as usize].client_endpoint()
    }
    fn peer_url(&self, ordinal: u32) -> String {
        self.0[ordinal as usize].peer_url()
    }
}
