//! `jetmart-podrun`: runs a rendered Helm chart's pods as Docker containers, exactly as the
//! manifests say (command, args, env resolved from the rendered Secrets and ConfigMaps, volumes,
//! securityContext, resource limits, probes, Service names as network aliases), then the chart's
//! `helm test` pods. It proves that the chart's values fit the image and the binaries; it does not
//! prove what only a cluster does (scheduling, admission, NetworkPolicy, PDB, HPA controller).

pub mod docker;
pub mod manifest;
pub mod plan;
pub mod probe;
pub mod quantity;
pub mod run;
