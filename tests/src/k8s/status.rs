//! Pod status as the kubelet reports it (stand-in), built by a pure function
//! from what the stand-in knows about the pod's processes.
//!
//! Written to `pods/status`: phase, podIP(s), hostIP(s), startTime, the
//! PodScheduled / Initialized / ContainersReady / Ready conditions (a
//! condition's lastTransitionTime changes only when its status does), and a
//! status per container and init container (waiting / running / terminated,
//! lastState, ready, started, restartCount, imageID, containerID
//! `process://PID`). Not reported: QoS class, resource usage, ephemeral containers.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The state of one container's process.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        pid: u32,
        started_at: Timestamp,
    },
    Terminated {
        pid: Option<u32>,
        exit_code: i32,
        signal: Option<i32>,
        reason: String,
        message: Option<String>,
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
    },
}

impl ProcState {
    pub fn waiting(reason: &str, message: Option<String>) -> ProcState {
        ProcState::Waiting {
            reason: reason.to_string(),
            message,
        }
    }

    fn to_api(&self) -> ContainerState {
        match self {
            ProcState::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..ContainerState::default()
            },
            ProcState::Running { started_at, .. } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started_at)),
                }),
                ..ContainerState::default()
            },
            ProcState::Terminated {
                pid,
                exit_code,
                signal,
                reason,
                message,
                started_at,
                finished_at,
            } => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    container_id: pid.map(|p| format!("process://{p}")),
                    exit_code: *exit_code,
                    signal: *signal,
                    reason: Some(reason.clone()),
                    message: message.clone(),
                    started_at: started_at.map(Time),
                    finished_at: Some(Time(*finished_at)),
                }),
                ..ContainerState::default()
            },
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            ProcState::Running { pid, .. } => Some(*pid),
            ProcState::Terminated { pid, .. } => *pid,
            ProcState::Waiting { .. } => None,
        }
    }
}

/// What the stand-in knows about one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRuntime {
    pub name: String,
    pub image: String,
    pub state: ProcState,
    pub last_state: Option<ProcState>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
}

impl ContainerRuntime {
    pub fn new(name: &str, image: &str) -> ContainerRuntime {
        ContainerRuntime {
            name: name.to_string(),
            image: image.to_string(),
            state: ProcState::waiting("ContainerCreating", None),
            last_state: None,
            restart_count: 0,
            ready: false,
            started: false,
        }
    }

    fn exited_ok(&self) -> bool {
        matches!(self.state, ProcState::Terminated { exit_code: 0, .. })
    }

    fn exited(&self) -> bool {
        matches!(self.state, ProcState::Terminated { .. })
    }

    fn to_api(&self) -> ContainerStatus {
        let pid = self
            .state
            .pid()
            .or_else(|| self.last_state.as_ref().and_then(ProcState::pid));
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: format!("raftkv-kubelet://{}", self.image),
            container_id: pid.map(|p| format!("process://{p}")),
            ready: self.ready,
            started: Some(self.started),
            restart_count: self.restart_count,
            state: Some(self.state.to_api()),
            last_state: Some(
                self.last_state
                    .as_ref()
                    .map(ProcState::to_api)
                    .unwrap_or_default(),
            ),
            ..ContainerStatus::default()
        }
    }
}

/// What the stand-in knows about a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRuntime {
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: Timestamp,
    pub restart_policy: String,
    pub init_containers: Vec<ContainerRuntime>,
    pub containers: Vec<ContainerRuntime>,
    /// Set when the pod cannot run at all (e.g. a volume it needs is unsupported).
    pub pod_message: Option<(String, String)>,
}

/// Pending / Running / Succeeded / Failed, by the kubelet's rules.
pub fn phase(rt: &PodRuntime) -> &'static str {
    let inits_done = rt.init_containers.iter().all(ContainerRuntime::exited_ok);
    if !inits_done {
        let init_failed_for_good = rt.restart_policy == "Never"
            && rt
                .init_containers
                .iter()
                .any(|c| c.exited() && !c.exited_ok());
        return if init_failed_for_good {
            "Failed"
        } else {
            "Pending"
        };
    }
    let running = rt
        .containers
        .iter()
        .filter(|c| matches!(c.state, ProcState::Running { .. }))
        .count();
    let exited = rt.containers.iter().filter(|c| c.exited()).count();
    let all_ok = rt.containers.iter().all(ContainerRuntime::exited_ok);
    if rt.containers.is_empty() {
        return "Pending";
    }
    if exited == rt.containers.len() {
        return match rt.restart_policy.as_str() {
            "Always" => "Running",
            _ if all_ok => "Succeeded",
            "OnFailure" => "Running",
            _ => "Failed",
        };
    }
    if running > 0
        || rt
            .containers
            .iter()
            .any(|c| c.restart_count > 0 || c.exited())
    {
        "Running"
    } else {
        "Pending"
    }
}

/// Carry a condition's lastTransitionTime over when its status did not change.
fn condition(
    previous: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    now: Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        last_transition_time: Some(since),
        reason: if ok { None } else { reason.map(str::to_string) },
        ..PodCondition::default()
    }
}

/// The status to write for `rt`, given the conditions the API object has now.
pub fn build_status(rt: &PodRuntime, previous: &[PodCondition], now: Timestamp) -> PodStatus {
    let phase = phase(rt);
    let initialized = rt.init_containers.iter().all(ContainerRuntime::exited_ok);
    let terminal = phase == "Succeeded" || phase == "Failed";
    let containers_ready = !terminal && rt.containers.iter().all(|c| c.ready);
    let not_ready_reason = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let conditions = vec![
        condition(previous, "PodScheduled", true, None, now),
        condition(
            previous,
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            now,
        ),
        condition(
            previous,
            "ContainersReady",
            containers_ready,
            Some(not_ready_reason),
            now,
        ),
        condition(
            previous,
            "Ready",
            containers_ready,
            Some(not_ready_reason),
            now,
        ),
    ];
    let (reason, message) = match &rt.pod_message {
        Some((r, m)) => (Some(r.clone()), Some(m.clone())),
        None => (None, None),
    };
    PodStatus {
        phase: Some(phase.to_string()),
        pod_ip: rt.pod_ip.clone(),
        pod_ips: rt.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        host_ip: Some(rt.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: rt.host_ip.clone(),
        }]),
        start_time: Some(Time(rt.start_time)),
        conditions: Some(conditions),
        container_statuses: Some(rt.containers.iter().map(ContainerRuntime::to_api).collect()),
        init_container_statuses: if rt.init_containers.is_empty() {
            None
        } else {
            Some(
                rt.init_containers
                    .iter()
                    .map(ContainerRuntime::to_api)
                    .collect(),
            )
        },
        reason,
        message,
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn running(name: &str, ready: bool) -> ContainerRuntime {
        ContainerRuntime {
            state: ProcState::Running {
                pid: 42,
                started_at: ts(1),
            },
            ready,
            started: true,
            ..ContainerRuntime::new(name, "raftkv:1")
        }
    }

    fn exited(name: &str, code: i32) -> ContainerRuntime {
        ContainerRuntime {
            state: ProcState::Terminated {
                pid: Some(7),
                exit_code: code,
                signal: None,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: None,
                started_at: Some(ts(1)),
                finished_at: ts(2),
            },
            ..ContainerRuntime::new(name, "raftkv:1")
        }
    }

    fn pod(policy: &str, init: Vec<ContainerRuntime>, c: Vec<ContainerRuntime>) -> PodRuntime {
        PodRuntime {
            pod_ip: Some("10.213.0.5".into()),
            host_ip: "10.213.0.1".into(),
            start_time: ts(0),
            restart_policy: policy.into(),
            init_containers: init,
            containers: c,
            pod_message: None,
        }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let new = || ContainerRuntime::new("c", "i");
        assert_eq!(phase(&pod("Always", vec![], vec![new()])), "Pending");
        assert_eq!(phase(&pod("Always", vec![new()], vec![new()])), "Pending");
        assert_eq!(
            phase(&pod("Never", vec![exited("i", 1)], vec![new()])),
            "Failed"
        );
        assert_eq!(
            phase(&pod(
                "Always",
                vec![exited("i", 0)],
                vec![running("c", false)]
            )),
            "Running"
        );
        assert_eq!(
            phase(&pod("Never", vec![], vec![exited("c", 0)])),
            "Succeeded"
        );
        assert_eq!(phase(&pod("Never", vec![], vec![exited("c", 2)])), "Failed");
        assert_eq!(
            phase(&pod("OnFailure", vec![], vec![exited("c", 2)])),
            "Running"
        );
        assert_eq!(
            phase(&pod("OnFailure", vec![], vec![exited("c", 0)])),
            "Succeeded"
        );
        assert_eq!(
            phase(&pod("Always", vec![], vec![exited("c", 0)])),
            "Running"
        );
    }

    #[test]
    fn conditions_and_container_statuses() {
        let rt = pod(
            "Always",
            vec![exited("init", 0)],
            vec![running("a", true), running("b", false)],
        );
        let s = build_status(&rt, &[], ts(10));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.213.0.5"));
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "Ready").reason.as_deref(),
            Some("ContainersNotReady")
        );
        let cs = s.container_statuses.as_ref().unwrap();
        assert_eq!(cs[0].container_id.as_deref(), Some("process://42"));
        assert!(cs[0].ready && !cs[1].ready);
        assert!(cs[0].state.as_ref().unwrap().running.is_some());
        assert_eq!(
            s.init_container_statuses.as_ref().unwrap()[0]
                .state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            0
        );

        // Ready flips: its transition time moves, PodScheduled's does not.
        let later = pod(
            "Always",
            vec![exited("init", 0)],
            vec![running("a", true), running("b", true)],
        );
        let s2 = build_status(&later, s.conditions.as_ref().unwrap(), ts(20));
        assert_eq!(cond(&s2, "Ready").status, "True");
        assert_eq!(cond(&s2, "Ready").last_transition_time, Some(Time(ts(20))));
        assert_eq!(
            cond(&s2, "PodScheduled").last_transition_time,
            Some(Time(ts(10)))
        );
    }

    #[test]
    fn restarts_keep_the_last_state() {
        let mut c = running("a", false);
        c.restart_count = 2;
        c.last_state = Some(exited("a", 137).state);
        let s = build_status(&pod("Always", vec![], vec![c]), &[], ts(3));
        let cs = &s.container_statuses.unwrap()[0];
        assert_eq!(cs.restart_count, 2);
        assert_eq!(
            cs.last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            137
        );
        let done = build_status(&pod("Never", vec![], vec![exited("a", 0)]), &[], ts(3));
        assert_eq!(cond(&done, "Ready").reason.as_deref(), Some("PodCompleted"));
    }
}
