//! The thin Kubernetes I/O layer: find the release's workloads, list their pods, delete one with
//! grace period 0, wait for the workload to recover. Every decision is made by the pure
//! functions of `pods`; this module only fetches objects and applies them.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::config::KubeConfigOptions;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

use crate::pods::{Labels, Workload, label_selector, pod_name, pod_uid, recovered};

/// How often the recovery wait re-reads the workload and its pods.
const POLL: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Cluster {
    client: Client,
    namespace: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A client from the kubeconfig (`KUBECONFIG` or `~/.kube/config`; `context` or its current
    /// context), or the in-cluster service account when there is no kubeconfig.
    pub async fn connect(context: Option<&str>, namespace: &str) -> anyhow::Result<Cluster> {
        let config = match context {
            Some(ctx) => Config::from_kubeconfig(&KubeConfigOptions {
                context: Some(ctx.to_owned()),
                ..Default::default()
            })
            .await
            .with_context(|| format!("kubeconfig context {ctx}"))?,
            None => Config::infer()
                .await
                .context("no kubeconfig and not in a cluster")?,
        };
        let client = Client::try_from(config).context("building the Kubernetes client")?;
        Ok(Cluster {
            client,
            namespace: namespace.to_owned(),
        })
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The one Deployment (or StatefulSet) carrying these labels, `None` when there is none.
    pub async fn find(&self, labels: &Labels, stateful: bool) -> anyhow::Result<Option<Workload>> {
        let lp = ListParams::default().labels(&label_selector(labels));
        let found: Vec<Workload> = if stateful {
            let api: Api<StatefulSet> = self.api();
            api.list(&lp)
                .await
                .with_context(|| format!("listing StatefulSets in {}", self.namespace))?
                .items
                .into_iter()
                .map(Workload::StatefulSet)
                .collect()
        } else {
            let api: Api<Deployment> = self.api();
            api.list(&lp)
                .await
                .with_context(|| format!("listing Deployments in {}", self.namespace))?
                .items
                .into_iter()
                .map(Workload::Deployment)
                .collect()
        };
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.into_iter().next()),
            _ => bail!(
                "{} workloads carry the labels {}: {}",
                found.len(),
                label_selector(labels),
                found
                    .iter()
                    .map(Workload::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The workload as it is now.
    pub async fn refresh(&self, w: &Workload) -> anyhow::Result<Workload> {
        Ok(match w {
            Workload::Deployment(_) => Workload::Deployment(
                self.api::<Deployment>()
                    .get(w.name())
                    .await
                    .with_context(|| format!("reading Deployment {}", w.name()))?,
            ),
            Workload::StatefulSet(_) => Workload::StatefulSet(
                self.api::<StatefulSet>()
                    .get(w.name())
                    .await
                    .with_context(|| format!("reading StatefulSet {}", w.name()))?,
            ),
        })
    }

    pub async fn pods(&self, selector: &Labels) -> anyhow::Result<Vec<Pod>> {
        Ok(self
            .api::<Pod>()
            .list(&ListParams::default().labels(&label_selector(selector)))
            .await
            .with_context(|| format!("listing pods {}", label_selector(selector)))?
            .items)
    }

    /// Deletes exactly this pod (uid precondition: never its same-named successor) with grace
    /// period 0, then waits until the API no longer has it.
    pub async fn kill(&self, pod: &Pod, timeout: Duration) -> anyhow::Result<()> {
        let (name, uid) = (pod_name(pod), pod_uid(pod));
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..Default::default()
        };
        let api = self.api::<Pod>();
        match api.delete(name, &params).await {
            Ok(_) => {}
            // Already gone (or replaced): someone else did the job.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("deleting pod {name}")),
        }
        tokio::time::timeout(
            timeout,
            await_condition(api, name, conditions::is_deleted(uid)),
        )
        .await
        .with_context(|| format!("pod {name} still exists {timeout:?} after its deletion"))?
        .with_context(|| format!("watching pod {name}"))?;
        Ok(())
    }

    /// Polls the workload and its pods until [`recovered`] holds for `victim_uid` (any uid, e.g.
    /// "", for a plain settle check). Returns how long it took.
    pub async fn wait_recovered(
        &self,
        w: &Workload,
        victim_uid: &str,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let selector = w.selector()?;
        loop {
            let now = self.refresh(w).await?;
            let pods = self.pods(&selector).await?;
            if recovered(&now, &pods, victim_uid) {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= timeout {
                bail!(
                    "{} {} not recovered within {:?}: {}",
                    w.kind(),
                    w.name(),
                    timeout,
                    crate::pods::describe(&now, &pods)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
