//! Pure predicates over Kubernetes objects: which pods belong to a workload, which are Ready,
//! which one to kill, and when a workload has recovered. No API calls here (see `cluster`), so
//! all of it is tested with objects built in code.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use rand::Rng;

pub type Labels = BTreeMap<String, String>;

pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// The chart's `jetmart.selectorLabels` of one component (`_helpers.tpl`): the labels on the
/// Deployment/StatefulSet objects and in their `spec.selector.matchLabels`. `chart_name` is the
/// chart name, or `nameOverride` when the release sets one.
pub fn selector_labels(chart_name: &str, release: &str, component: &str) -> Labels {
    Labels::from([
        (NAME_LABEL.to_owned(), chart_name.to_owned()),
        (INSTANCE_LABEL.to_owned(), release.to_owned()),
        (COMPONENT_LABEL.to_owned(), component.to_owned()),
    ])
}

/// `k=v,k=v` for a list call's label selector (sorted, so stable).
pub fn label_selector(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// True when the object's labels carry every selector label. An empty selector matches
/// nothing: it would otherwise select every pod of the namespace.
pub fn labels_match(selector: &Labels, labels: Option<&Labels>) -> bool {
    !selector.is_empty()
        && labels.is_some_and(|l| selector.iter().all(|(k, v)| l.get(k) == Some(v)))
}

pub fn pod_matches(selector: &Labels, pod: &Pod) -> bool {
    labels_match(selector, pod.metadata.labels.as_ref())
}

pub fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

pub fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

/// Deletion requested (deletionTimestamp set): the pod is on its way out and is neither a
/// victim nor a replica that counts.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Running, not terminating, and its Ready condition True.
pub fn is_pod_ready(pod: &Pod) -> bool {
    if is_terminating(pod) {
        return false;
    }
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .as_ref()
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A random pod of the workload selected by `selector`: pods of other releases or components
/// and terminating pods are never picked; with `exclude_not_ready`, neither are pods that are
/// not Ready (killing a pod that is still starting proves little). Candidates are ordered by
/// name first, so the same pods and the same rng state give the same victim.
pub fn pick_victim<'a, R: Rng + ?Sized>(
    pods: &'a [Pod],
    selector: &Labels,
    rng: &mut R,
    exclude_not_ready: bool,
) -> Option<&'a Pod> {
    let mut candidates: Vec<&Pod> = pods
        .iter()
        .filter(|p| pod_matches(selector, p) && !is_terminating(p))
        .filter(|p| !exclude_not_ready || is_pod_ready(p))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    candidates.sort_by(|a, b| pod_name(a).cmp(pod_name(b)));
    Some(candidates[rng.random_range(0..candidates.len())])
}

/// Live (not terminating) pods of the selector: exactly `desired` of them and every one Ready.
fn pods_settled(selector: &Labels, desired: i32, pods: &[Pod]) -> bool {
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| pod_matches(selector, p) && !is_terminating(p))
        .collect();
    live.len() as i64 == i64::from(desired) && live.iter().all(|p| is_pod_ready(p))
}

/// The controller has seen the latest spec (status is not stale).
fn observed(generation: Option<i64>, observed: Option<i64>) -> bool {
    match (generation, observed) {
        (Some(g), Some(o)) => o >= g,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// A Deployment is settled when its controller reports every desired replica ready and updated
/// (and no surplus), and the pods themselves agree: exactly `spec.replicas` live pods matching
/// its selector, all Ready. Both are needed: the status lags a deletion, the pod list lags
/// nothing but says nothing about rollouts.
pub fn deployment_settled(deployment: &Deployment, pods: &[Pod]) -> bool {
    let Some(selector) = deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
    else {
        return false;
    };
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let Some(status) = &deployment.status else {
        return false;
    };
    observed(deployment.metadata.generation, status.observed_generation)
        && status.replicas.unwrap_or(0) == desired
        && status.ready_replicas.unwrap_or(0) == desired
        && status.updated_replicas.unwrap_or(0) == desired
        && status.unavailable_replicas.unwrap_or(0) == 0
        && pods_settled(&selector, desired, pods)
}

/// The StatefulSet counterpart of [`deployment_settled`]; also requires no rollout in progress
/// (current revision = update revision).
pub fn statefulset_settled(set: &StatefulSet, pods: &[Pod]) -> bool {
    let Some(selector) = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
    else {
        return false;
    };
    let desired = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = &set.status else {
        return false;
    };
    let same_revision = match (&status.current_revision, &status.update_revision) {
        (Some(c), Some(u)) => c == u,
        _ => true,
    };
    observed(set.metadata.generation, status.observed_generation)
        && status.replicas == desired
        && status.ready_replicas.unwrap_or(0) == desired
        && same_revision
        && pods_settled(&selector, desired, pods)
}

/// A workload the run kills pods of.
#[derive(Debug, Clone)]
pub enum Workload {
    Deployment(Deployment),
    StatefulSet(StatefulSet),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("{0} has no spec.selector.matchLabels")]
    NoMatchLabels(String),
    #[error("{0} selects with matchExpressions, which this tool does not evaluate")]
    Expressions(String),
}

impl Workload {
    pub fn name(&self) -> &str {
        match self {
            Workload::Deployment(d) => d.metadata.name.as_deref().unwrap_or(""),
            Workload::StatefulSet(s) => s.metadata.name.as_deref().unwrap_or(""),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Workload::Deployment(_) => "Deployment",
            Workload::StatefulSet(_) => "StatefulSet",
        }
    }

    /// The pod selector, when it is plain `matchLabels` (the chart's always is).
    pub fn selector(&self) -> Result<Labels, SelectorError> {
        let sel = match self {
            Workload::Deployment(d) => d.spec.as_ref().map(|s| &s.selector),
            Workload::StatefulSet(s) => s.spec.as_ref().map(|s| &s.selector),
        };
        let what = format!("{} {}", self.kind(), self.name());
        let Some(sel) = sel else {
            return Err(SelectorError::NoMatchLabels(what));
        };
        if sel
            .match_expressions
            .as_ref()
            .is_some_and(|e| !e.is_empty())
        {
            return Err(SelectorError::Expressions(what));
        }
        match &sel.match_labels {
            Some(l) if !l.is_empty() => Ok(l.clone()),
            _ => Err(SelectorError::NoMatchLabels(what)),
        }
    }

    pub fn settled(&self, pods: &[Pod]) -> bool {
        match self {
            Workload::Deployment(d) => deployment_settled(d, pods),
            Workload::StatefulSet(s) => statefulset_settled(s, pods),
        }
    }
}

/// Recovered from the deletion of the pod with `victim_uid`: that pod is no longer live (gone,
/// or terminating) and the workload is settled again. Checking the victim matters right after
/// the delete call, when the controller status and even the pod list may not show it yet.
pub fn recovered(workload: &Workload, pods: &[Pod], victim_uid: &str) -> bool {
    !pods
        .iter()
        .any(|p| pod_uid(p) == victim_uid && !is_terminating(p))
        && workload.settled(pods)
}

/// One line on where a workload stands, for the error when it does not recover in time.
pub fn describe(workload: &Workload, pods: &[Pod]) -> String {
    let desired = match workload {
        Workload::Deployment(d) => d.spec.as_ref().and_then(|s| s.replicas),
        Workload::StatefulSet(s) => s.spec.as_ref().and_then(|s| s.replicas),
    }
    .unwrap_or(1);
    let Ok(selector) = workload.selector() else {
        return format!("desired {desired}, selector unusable");
    };
    let mine: Vec<&Pod> = pods.iter().filter(|p| pod_matches(&selector, p)).collect();
    let live = mine.iter().filter(|p| !is_terminating(p)).count();
    let ready = mine.iter().filter(|p| is_pod_ready(p)).count();
    let not_ready: Vec<&str> = mine
        .iter()
        .filter(|p| !is_terminating(p) && !is_pod_ready(p))
        .map(|p| pod_name(p))
        .collect();
    format!(
        "desired {desired}, live {live}, ready {ready}, terminating {}, not ready [{}]",
        mine.len() - live,
        not_ready.join(", ")
    )
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Pods and workloads as the API server would return them for the chart's objects.

    use k8s_openapi::api::apps::v1::{
        Deployment, DeploymentSpec, DeploymentStatus, StatefulSet, StatefulSetSpec,
        StatefulSetStatus,
    };
    use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

    use super::*;

    pub fn pod(release: &str, component: &str, name: &str, ready: bool) -> Pod {
        let mut labels = selector_labels("jetmart", release, component);
        // The chart's pod template adds these next to the selector labels.
        labels.insert("jetmart.io/service".into(), "true".into());
        labels.insert("pod-template-hash".into(), "7d9f8c6b5".into());
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("jetmart".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(labels),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some(if ready { "Running" } else { "Pending" }.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn terminating(mut p: Pod) -> Pod {
        p.metadata.deletion_timestamp = Some(Time(Default::default()));
        p
    }

    pub fn deployment(release: &str, component: &str, desired: i32, ready: i32) -> Deployment {
        let labels = selector_labels("jetmart", release, component);
        Deployment {
            metadata: ObjectMeta {
                name: Some(format!("{release}-{component}")),
                generation: Some(3),
                labels: Some(labels.clone()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(desired),
                selector: LabelSelector {
                    match_labels: Some(labels),
                    match_expressions: None,
                },
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(3),
                replicas: Some(desired),
                ready_replicas: Some(ready),
                updated_replicas: Some(desired),
                available_replicas: Some(ready),
                unavailable_replicas: (ready < desired).then_some(desired - ready),
                ..Default::default()
            }),
        }
    }

    pub fn statefulset(release: &str, desired: i32, ready: i32) -> StatefulSet {
        let labels = selector_labels("jetmart", release, "nats");
        StatefulSet {
            metadata: ObjectMeta {
                name: Some(format!("{release}-nats")),
                generation: Some(1),
                labels: Some(labels.clone()),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(desired),
                selector: LabelSelector {
                    match_labels: Some(labels),
                    match_expressions: None,
                },
                service_name: Some(format!("{release}-nats-headless")),
                ..Default::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(1),
                replicas: desired,
                ready_replicas: Some(ready),
                current_replicas: Some(desired),
                updated_replicas: Some(desired),
                current_revision: Some(format!("{release}-nats-5f7c")),
                update_revision: Some(format!("{release}-nats-5f7c")),
                ..Default::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::fixtures::*;
    use super::*;

    fn order_selector() -> Labels {
        selector_labels("jetmart", "jetmart", "order")
    }

    #[test]
    fn selector_is_the_charts_selector_labels() {
        let s = order_selector();
        assert_eq!(
            label_selector(&s),
            "app.kubernetes.io/component=order,app.kubernetes.io/instance=jetmart,app.kubernetes.io/name=jetmart"
        );
        assert!(labels_match(&s, Some(&s)));
        assert!(!labels_match(&Labels::new(), Some(&s)), "empty selector");
        assert!(!labels_match(&s, None));
    }

    #[test]
    fn readiness_needs_running_ready_and_not_terminating() {
        assert!(is_pod_ready(&pod("jetmart", "order", "a", true)));
        assert!(!is_pod_ready(&pod("jetmart", "order", "a", false)));
        let gone = terminating(pod("jetmart", "order", "a", true));
        assert!(is_terminating(&gone));
        assert!(
            !is_pod_ready(&gone),
            "terminating pods are not counted ready"
        );
        let mut no_status = pod("jetmart", "order", "a", true);
        no_status.status = None;
        assert!(!is_pod_ready(&no_status));
        // Running, but the readiness probe has not passed yet.
        let mut probing = pod("jetmart", "order", "a", true);
        probing
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .status = "False".into();
        assert!(!is_pod_ready(&probing));
    }

    #[test]
    fn victims_are_only_live_ready_pods_of_the_release_and_component() {
        let pods = vec![
            pod("jetmart", "order", "jetmart-order-a", true),
            terminating(pod("jetmart", "order", "jetmart-order-b", true)),
            pod("jetmart", "order", "jetmart-order-c", false),
            pod("other", "order", "other-jetmart-order-d", true),
            pod("jetmart", "payment", "jetmart-payment-e", true),
        ];
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let v = pick_victim(&pods, &order_selector(), &mut rng, true).unwrap();
            assert_eq!(pod_name(v), "jetmart-order-a");
        }
        // Not-ready pods are candidates when allowed; terminating and foreign pods never are.
        let picked: BTreeSet<&str> = (0..200)
            .map(|_| pod_name(pick_victim(&pods, &order_selector(), &mut rng, false).unwrap()))
            .collect();
        assert_eq!(
            picked,
            BTreeSet::from(["jetmart-order-a", "jetmart-order-c"])
        );
    }

    #[test]
    fn no_candidate_no_victim() {
        let pods = vec![
            terminating(pod("jetmart", "order", "a", true)),
            pod("other", "order", "b", true),
        ];
        let mut rng = StdRng::seed_from_u64(1);
        assert!(pick_victim(&pods, &order_selector(), &mut rng, false).is_none());
        assert!(pick_victim(&[], &order_selector(), &mut rng, false).is_none());
        assert!(pick_victim(&pods, &Labels::new(), &mut rng, false).is_none());
    }

    #[test]
    fn the_victim_does_not_depend_on_list_order() {
        let mut pods: Vec<Pod> = (0..5)
            .map(|i| pod("jetmart", "order", &format!("jetmart-order-{i}"), true))
            .collect();
        let a = pod_name(
            pick_victim(
                &pods,
                &order_selector(),
                &mut StdRng::seed_from_u64(9),
                true,
            )
            .unwrap(),
        )
        .to_owned();
        pods.reverse();
        let b = pick_victim(
            &pods,
            &order_selector(),
            &mut StdRng::seed_from_u64(9),
            true,
        )
        .unwrap();
        assert_eq!(a, pod_name(b));
    }

    #[test]
    fn deployment_settles_only_with_every_replica_ready() {
        let d = deployment("jetmart", "order", 2, 2);
        let two = vec![
            pod("jetmart", "order", "a", true),
            pod("jetmart", "order", "b", true),
        ];
        assert!(deployment_settled(&d, &two));
        // Replacement created but not Ready yet.
        let starting = vec![
            pod("jetmart", "order", "a", true),
            pod("jetmart", "order", "c", false),
        ];
        assert!(!deployment_settled(&d, &starting));
        // Replacement not created yet; a terminating pod does not stand in for it.
        let one = vec![
            pod("jetmart", "order", "a", true),
            terminating(pod("jetmart", "order", "b", true)),
        ];
        assert!(!deployment_settled(&d, &one));
        // A leftover terminating pod next to two ready replicas is fine.
        let mut three = two.clone();
        three.push(terminating(pod("jetmart", "order", "old", true)));
        assert!(deployment_settled(&d, &three));
        // Pods of another release do not count as replicas.
        let foreign = vec![
            pod("jetmart", "order", "a", true),
            pod("other", "order", "b", true),
        ];
        assert!(!deployment_settled(&d, &foreign));
    }

    #[test]
    fn deployment_status_must_agree() {
        let two = vec![
            pod("jetmart", "order", "a", true),
            pod("jetmart", "order", "b", true),
        ];
        assert!(!deployment_settled(
            &deployment("jetmart", "order", 2, 1),
            &two
        ));
        let mut stale = deployment("jetmart", "order", 2, 2);
        stale.status.as_mut().unwrap().observed_generation = Some(2);
        assert!(!deployment_settled(&stale, &two), "status of an older spec");
        let mut rolling = deployment("jetmart", "order", 2, 2);
        rolling.status.as_mut().unwrap().updated_replicas = Some(1);
        assert!(!deployment_settled(&rolling, &two), "rollout in progress");
        let mut surplus = deployment("jetmart", "order", 2, 2);
        surplus.status.as_mut().unwrap().replicas = Some(3);
        assert!(!deployment_settled(&surplus, &two));
        let mut no_status = deployment("jetmart", "order", 2, 2);
        no_status.status = None;
        assert!(!deployment_settled(&no_status, &two));
        // Scaled to zero: settled with no pods.
        assert!(deployment_settled(
            &deployment("jetmart", "order", 0, 0),
            &[]
        ));
    }

    #[test]
    fn statefulset_settles_like_a_deployment() {
        let nats: Vec<Pod> = (0..3)
            .map(|i| pod("jetmart", "nats", &format!("jetmart-nats-{i}"), true))
            .collect();
        let s = statefulset("jetmart", 3, 3);
        assert!(statefulset_settled(&s, &nats));
        // nats-1 came back under the same name but is not Ready yet (JetStream catching up).
        let mut back = nats.clone();
        back[1] = pod("jetmart", "nats", "jetmart-nats-1", false);
        assert!(!statefulset_settled(&s, &back));
        assert!(!statefulset_settled(&statefulset("jetmart", 3, 2), &nats));
        let mut rolling = statefulset("jetmart", 3, 3);
        rolling.status.as_mut().unwrap().update_revision = Some("jetmart-nats-new".into());
        assert!(!statefulset_settled(&rolling, &nats));
    }

    #[test]
    fn recovery_needs_the_victim_gone_and_the_workload_settled() {
        let w = Workload::StatefulSet(statefulset("jetmart", 3, 3));
        let nats: Vec<Pod> = (0..3)
            .map(|i| pod("jetmart", "nats", &format!("jetmart-nats-{i}"), true))
            .collect();
        // Right after the delete call the old pod may still be listed: not recovered.
        assert!(!recovered(&w, &nats, "uid-jetmart-nats-1"));
        // Same name, new uid (a StatefulSet replacement), Ready: recovered.
        let mut replaced = nats.clone();
        replaced[1].metadata.uid = Some("uid-new".into());
        assert!(recovered(&w, &replaced, "uid-jetmart-nats-1"));
        // The victim lingering as terminating next to a Ready replacement: recovered.
        let mut lingering = replaced.clone();
        lingering.push(terminating(nats[1].clone()));
        assert!(recovered(&w, &lingering, "uid-jetmart-nats-1"));
    }

    #[test]
    fn describe_says_what_is_missing() {
        let w = Workload::Deployment(deployment("jetmart", "order", 2, 1));
        let pods = vec![
            pod("jetmart", "order", "jetmart-order-a", true),
            pod("jetmart", "order", "jetmart-order-c", false),
            terminating(pod("jetmart", "order", "jetmart-order-b", true)),
            pod("other", "order", "other-order-x", false),
        ];
        assert_eq!(
            describe(&w, &pods),
            "desired 2, live 2, ready 1, terminating 1, not ready [jetmart-order-c]"
        );
    }

    #[test]
    fn workload_selectors() {
        let d = Workload::Deployment(deployment("jetmart", "order", 2, 2));
        assert_eq!(d.selector().unwrap(), order_selector());
        assert_eq!((d.kind(), d.name()), ("Deployment", "jetmart-order"));
        let mut expr = deployment("jetmart", "order", 2, 2);
        expr.spec.as_mut().unwrap().selector.match_expressions =
            Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["a".into()]),
            }]);
        assert!(matches!(
            Workload::Deployment(expr).selector(),
            Err(SelectorError::Expressions(_))
        ));
        let mut none = deployment("jetmart", "order", 2, 2);
        none.spec.as_mut().unwrap().selector.match_labels = Some(Labels::new());
        assert!(matches!(
            Workload::Deployment(none).selector(),
            Err(SelectorError::NoMatchLabels(_))
        ));
        let s = Workload::StatefulSet(statefulset("jetmart", 3, 3));
        assert_eq!(
            s.selector().unwrap(),
            selector_labels("jetmart", "jetmart", "nats")
        );
    }
}
