//! The rendered chart (`helm template` output) as typed Kubernetes objects: what runs (workloads
//! with their pod templates and Helm hook phase) and what they reference (Secrets, ConfigMaps,
//! Services, HPAs).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodSpec, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// When Helm creates an object: hooks run in their phase, in hook-weight order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    PreInstall,
    Install,
    PostInstall,
    Test,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Deployment,
    StatefulSet,
    Job,
    Pod,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
            Kind::Job => "job",
            Kind::Pod => "pod",
        })
    }
}

/// One object that makes pods.
#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: Kind,
    pub name: String,
    /// Pods to run: Deployment/StatefulSet replicas (an HPA's minReplicas when the chart leaves
    /// `replicas` to the autoscaler), 1 for a Job or a Pod.
    pub replicas: i32,
    /// Metadata of the pod template (labels, annotations).
    pub pod_meta: ObjectMeta,
    pub spec: PodSpec,
    pub phase: Phase,
    pub weight: i32,
    /// StatefulSet: the governing (headless) Service, for the pods' DNS names.
    pub service_name: Option<String>,
    /// StatefulSet: podManagementPolicy Parallel (else OrderedReady).
    pub parallel: bool,
    /// Job: retries before the Job fails.
    pub backoff_limit: i32,
    /// StatefulSet: names of the volumeClaimTemplates (each pod gets its own volume).
    pub volume_claims: Vec<String>,
}

impl Workload {
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// Serving workloads stay up; the others run to completion.
    pub fn serves(&self) -> bool {
        match self.kind {
            Kind::Deployment | Kind::StatefulSet => true,
            Kind::Job => false,
            Kind::Pod => self.spec.restart_policy.as_deref().unwrap_or("Always") == "Always",
        }
    }
}

/// Everything the run needs from the rendering.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    pub namespace: String,
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub services: Vec<Service>,
    pub workloads: Vec<Workload>,
    /// Objects that have no container counterpart (kind -> count), reported, not run.
    pub not_run: BTreeMap<String, usize>,
    /// Hooks of phases an install never runs (pre-upgrade, pre-delete, ...), by id.
    pub skipped_hooks: Vec<String>,
}

fn name_of(meta: &ObjectMeta, kind: &str) -> Result<String> {
    meta.name
        .clone()
        .with_context(|| format!("a {kind} without metadata.name"))
}

/// The hook phase of an object from its `helm.sh/hook` annotation (None: not for an install).
fn hook_phase(meta: &ObjectMeta) -> Option<(Phase, i32)> {
    let annotations = meta.annotations.as_ref();
    let weight = annotations
        .and_then(|a| a.get("helm.sh/hook-weight"))
        .and_then(|w| w.trim().parse().ok())
        .unwrap_or(0);
    let Some(hooks) = annotations.and_then(|a| a.get("helm.sh/hook")) else {
        return Some((Phase::Install, 0));
    };
    let events: Vec<&str> = hooks.split(',').map(str::trim).collect();
    let phase = if events.iter().any(|e| *e == "test" || *e == "test-success") {
        Phase::Test
    } else if events.contains(&"pre-install") {
        Phase::PreInstall
    } else if events.contains(&"post-install") {
        Phase::PostInstall
    } else {
        return None;
    };
    Some((phase, weight))
}

impl Manifests {
    /// Parses a multi-document YAML rendering. Objects without a namespace get `namespace`.
    pub fn parse(yaml: &str, namespace: &str) -> Result<Self> {
        // Helm and the API server read YAML 1.1: `defaultMode: 0440` is octal.
        let options = serde_saphyr::options! { legacy_octal_numbers: true };
        let docs: Vec<Option<serde_json::Value>> =
            serde_saphyr::from_multiple_with_options(yaml, options)
                .context("the rendering is not valid YAML")?;
        let mut m = Manifests {
            namespace: namespace.to_owned(),
            ..Manifests::default()
        };
        let mut hpa_min: BTreeMap<String, i32> = BTreeMap::new();
        for doc in docs.into_iter().flatten() {
            if doc.is_null() {
                continue;
            }
            let kind = doc
                .get("kind")
                .and_then(|k| k.as_str())
                .context("an object without kind")?
                .to_owned();
            let what = || format!("{kind} {}", doc["metadata"]["name"]);
            match kind.as_str() {
                "Secret" => {
                    let s: Secret = serde_json::from_value(doc.clone()).with_context(what)?;
                    let mut data: BTreeMap<String, Vec<u8>> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    for (k, v) in s.string_data.unwrap_or_default() {
                        data.insert(k, v.into_bytes());
                    }
                    m.secrets.insert(name_of(&s.metadata, "Secret")?, data);
                }
                "ConfigMap" => {
                    let c: ConfigMap = serde_json::from_value(doc.clone()).with_context(what)?;
                    let mut data: BTreeMap<String, Vec<u8>> = c
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    for (k, v) in c.binary_data.unwrap_or_default() {
                        data.insert(k, v.0);
                    }
                    m.config_maps
                        .insert(name_of(&c.metadata, "ConfigMap")?, data);
                }
                "Service" => {
                    m.services
                        .push(serde_json::from_value(doc.clone()).with_context(what)?);
                }
                "HorizontalPodAutoscaler" => {
                    let h: HorizontalPodAutoscaler =
                        serde_json::from_value(doc.clone()).with_context(what)?;
                    if let Some(spec) = h.spec {
                        hpa_min.insert(spec.scale_target_ref.name, spec.min_replicas.unwrap_or(1));
                    }
                }
                "Deployment" => {
                    let d: Deployment = serde_json::from_value(doc.clone()).with_context(what)?;
                    let name = name_of(&d.metadata, "Deployment")?;
                    let spec = d
                        .spec
                        .with_context(|| format!("Deployment {name} has no spec"))?;
                    m.push(
                        Kind::Deployment,
                        name,
                        &d.metadata,
                        spec.replicas,
                        spec.template,
                        |w| w,
                    )?;
                }
                "StatefulSet" => {
                    let s: StatefulSet = serde_json::from_value(doc.clone()).with_context(what)?;
                    let name = name_of(&s.metadata, "StatefulSet")?;
                    let spec = s
                        .spec
                        .with_context(|| format!("StatefulSet {name} has no spec"))?;
                    let claims = spec
                        .volume_claim_templates
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|c| c.metadata.name)
                        .collect();
                    let service_name = spec.service_name.clone();
                    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
                    m.push(
                        Kind::StatefulSet,
                        name,
                        &s.metadata,
                        Some(spec.replicas.unwrap_or(1)),
                        spec.template,
                        |mut w| {
                            w.service_name = service_name;
                            w.parallel = parallel;
                            w.volume_claims = claims;
                            w
                        },
                    )?;
                }
                "Job" => {
                    let j: Job = serde_json::from_value(doc.clone()).with_context(what)?;
                    let name = name_of(&j.metadata, "Job")?;
                    let spec = j.spec.with_context(|| format!("Job {name} has no spec"))?;
                    let backoff = spec.backoff_limit.unwrap_or(6);
                    m.push(
                        Kind::Job,
                        name,
                        &j.metadata,
                        Some(1),
                        spec.template,
                        |mut w| {
                            w.backoff_limit = backoff;
                            w
                        },
                    )?;
                }
                "Pod" => {
                    let p: Pod = serde_json::from_value(doc.clone()).with_context(what)?;
                    let name = name_of(&p.metadata, "Pod")?;
                    let spec = p.spec.with_context(|| format!("Pod {name} has no spec"))?;
                    let template = k8s_openapi::api::core::v1::PodTemplateSpec {
                        metadata: Some(p.metadata.clone()),
                        spec: Some(spec),
                    };
                    m.push(Kind::Pod, name, &p.metadata, Some(1), template, |w| w)?;
                }
                other => *m.not_run.entry(other.to_owned()).or_default() += 1,
            }
        }
        // The chart omits `replicas` when an HPA owns the Deployment: the HPA sets minReplicas.
        for w in &mut m.workloads {
            if w.kind == Kind::Deployment && w.replicas < 0 {
                w.replicas = hpa_min.get(&w.name).copied().unwrap_or(1);
            }
        }
        if m.workloads.is_empty() {
            bail!("the rendering has no Deployment, StatefulSet, Job or Pod");
        }
        Ok(m)
    }

    fn push(
        &mut self,
        kind: Kind,
        name: String,
        meta: &ObjectMeta,
        replicas: Option<i32>,
        template: k8s_openapi::api::core::v1::PodTemplateSpec,
        finish: impl FnOnce(Workload) -> Workload,
    ) -> Result<()> {
        let id = format!("{kind}/{name}");
        let Some((phase, weight)) = hook_phase(meta) else {
            self.skipped_hooks.push(id);
            return Ok(());
        };
        let spec = template
            .spec
            .with_context(|| format!("{id} has no pod template spec"))?;
        let w = Workload {
            kind,
            name,
            // -1: not set, resolved against the HPAs once every object is read.
            replicas: replicas.unwrap_or(-1),
            pod_meta: template.metadata.unwrap_or_default(),
            spec,
            phase,
            weight,
            service_name: None,
            parallel: false,
            backoff_limit: 0,
            volume_claims: Vec::new(),
        };
        self.workloads.push(finish(w));
        Ok(())
    }

    /// Workloads of one phase in Helm's order: hook weight, then name.
    pub fn phase(&self, phase: Phase) -> Vec<&Workload> {
        let mut v: Vec<&Workload> = self.workloads.iter().filter(|w| w.phase == phase).collect();
        v.sort_by(|a, b| a.weight.cmp(&b.weight).then_with(|| a.name.cmp(&b.name)));
        v
    }
}
