//! Translation of one pod of a workload into what Docker runs: containers with exactly the pod's
//! command, args, environment (Secret/ConfigMap/field references resolved from the rendering),
//! volumes, securityContext and resource limits, and the network names the pod answers to.
//! Pure: no Docker here, so every rule is unit-tested. Anything that cannot be resolved (a
//! missing Secret key, a probe on an undeclared port, ...) is an error naming the pod.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, KeyToPath, PodSecurityContext, Probe, SecurityContext, Service, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::manifest::{Kind, Manifests, Workload};
use crate::quantity;

/// A readiness/liveness/startup check, with the pod's timings.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbePlan {
    pub action: ProbeAction,
    pub initial_delay_secs: u64,
    pub period_secs: u64,
    pub timeout_secs: u64,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeAction {
    Http { path: String, port: u16 },
    Grpc { port: u16, service: String },
    Tcp { port: u16 },
    Exec { command: Vec<String> },
}

/// A volume's content on the host, bind-mounted into the containers that mount it.
#[derive(Debug, Clone, PartialEq)]
pub enum VolumePlan {
    /// Secret, ConfigMap or projected volume: files with their modes, owned by root:fsGroup.
    Files {
        files: Vec<FileEntry>,
        gid: Option<i64>,
    },
    /// A PersistentVolumeClaim (StatefulSet volumeClaimTemplate): an empty directory per pod,
    /// group-writable by fsGroup as the kubelet makes it.
    Claim { gid: Option<i64> },
    /// emptyDir: like the kubelet's, a directory on the node (here: the host) shared by the
    /// pod's containers, mode 0777 (2777 and group fsGroup with an fsGroup); with medium Memory a
    /// tmpfs in each container that mounts it. sizeLimit is not enforced (the kubelet enforces it
    /// by eviction).
    EmptyDir {
        size: Option<u64>,
        memory: bool,
        gid: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileEntry {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MountPlan {
    pub volume: String,
    pub target: String,
    pub sub_path: Option<String>,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    /// command[0] (Docker's --entrypoint) when the pod sets `command`.
    pub entrypoint: Option<String>,
    /// command[1..] + args, or args alone (the image's ENTRYPOINT stays), after $(VAR) expansion.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Names of the variables whose value comes from a Secret (masked when printed).
    pub secret_env: Vec<String>,
    /// uid[:gid] from runAsUser/runAsGroup (container over pod).
    pub user: Option<String>,
    pub run_as_non_root: bool,
    pub group_add: Vec<i64>,
    pub read_only: bool,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub no_new_privileges: bool,
    pub privileged: bool,
    pub seccomp_unconfined: bool,
    pub memory: Option<u64>,
    pub memory_reservation: Option<u64>,
    pub cpus: Option<f64>,
    pub cpu_shares: Option<u64>,
    pub mounts: Vec<MountPlan>,
    pub ports: BTreeMap<String, u16>,
    pub startup: Option<ProbePlan>,
    pub readiness: Option<ProbePlan>,
    pub liveness: Option<ProbePlan>,
    /// Seconds between SIGTERM and SIGKILL (terminationGracePeriodSeconds).
    pub stop_timeout: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodPlan {
    /// The workload it belongs to ("deployment/jetmart-order").
    pub owner: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// DNS names on the network: every Service selecting the pod (name, name.ns, name.ns.svc,
    /// name.ns.svc.cluster.local) and, under a StatefulSet's governing Service, the pod's own.
    pub aliases: Vec<String>,
    pub init: Vec<ContainerPlan>,
    pub containers: Vec<ContainerPlan>,
    pub volumes: BTreeMap<String, VolumePlan>,
    pub restart_policy: String,
}

/// The pod names a workload makes (StatefulSet: name-0..n; Deployment: name-<ordinal>; Job and
/// Pod: their name).
pub fn pod_names(w: &Workload) -> Vec<String> {
    match w.kind {
        Kind::StatefulSet => (0..w.replicas).map(|i| format!("{}-{i}", w.name)).collect(),
        Kind::Deployment => (0..w.replicas)
            .map(|i| format!("{}-podrun-{i}", w.name))
            .collect(),
        Kind::Job | Kind::Pod => vec![w.name.clone()],
    }
}

fn fqdn_forms(name: &str, ns: &str) -> [String; 4] {
    [
        name.to_owned(),
        format!("{name}.{ns}"),
        format!("{name}.{ns}.svc"),
        format!("{name}.{ns}.svc.cluster.local"),
    ]
}

/// Does the Service select pods with these labels?
pub fn selects(svc: &Service, labels: &BTreeMap<String, String>) -> bool {
    match svc.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(sel) if !sel.is_empty() => sel.iter().all(|(k, v)| labels.get(k) == Some(v)),
        _ => false,
    }
}

fn svc_name(svc: &Service) -> &str {
    svc.metadata.name.as_deref().unwrap_or("")
}

/// Kubernetes' $(VAR) expansion: a defined VAR is replaced, $$ is a literal $, anything else
/// stays as written.
pub fn expand(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

struct Ctx<'a> {
    m: &'a Manifests,
    w: &'a Workload,
    pod: &'a str,
    labels: &'a BTreeMap<String, String>,
}

impl Ctx<'_> {
    fn secret_key(
        &self,
        name: &str,
        key: &str,
        optional: bool,
        what: &str,
    ) -> Result<Option<Vec<u8>>> {
        match self.m.secrets.get(name) {
            Some(data) => match data.get(key) {
                Some(v) => Ok(Some(v.clone())),
                None if optional => Ok(None),
                None => bail!(
                    "{what}: Secret {name} has no key {key} (keys: {})",
                    keys(data)
                ),
            },
            None if optional => Ok(None),
            None => bail!("{what}: Secret {name} is not in the rendering (and is not optional)"),
        }
    }

    fn config_map_key(
        &self,
        name: &str,
        key: &str,
        optional: bool,
        what: &str,
    ) -> Result<Option<Vec<u8>>> {
        match self.m.config_maps.get(name) {
            Some(data) => match data.get(key) {
                Some(v) => Ok(Some(v.clone())),
                None if optional => Ok(None),
                None => bail!(
                    "{what}: ConfigMap {name} has no key {key} (keys: {})",
                    keys(data)
                ),
            },
            None if optional => Ok(None),
            None => bail!("{what}: ConfigMap {name} is not in the rendering (and is not optional)"),
        }
    }

    fn field(&self, path: &str, what: &str) -> Result<String> {
        let meta = &self.w.pod_meta;
        Ok(match path {
            "metadata.name" => self.pod.to_owned(),
            "metadata.namespace" => self.m.namespace.clone(),
            "spec.nodeName" => "podrun".to_owned(),
            "spec.serviceAccountName" => self
                .w
                .spec
                .service_account_name
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            p => {
                let lookup = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
                    p.strip_prefix(prefix)
                        .and_then(|k| k.strip_suffix("']"))
                        .map(|k| map.and_then(|m| m.get(k)).cloned().unwrap_or_default())
                };
                if let Some(v) = lookup("metadata.labels['", Some(self.labels)) {
                    v
                } else if let Some(v) = lookup("metadata.annotations['", meta.annotations.as_ref())
                {
                    v
                } else {
                    bail!("{what}: fieldRef {p} is not supported by this runner")
                }
            }
        })
    }
}

fn keys(data: &BTreeMap<String, Vec<u8>>) -> String {
    data.keys().cloned().collect::<Vec<_>>().join(", ")
}

fn text(bytes: Vec<u8>, what: &str) -> Result<String> {
    String::from_utf8(bytes).with_context(|| format!("{what}: the value is not UTF-8"))
}

/// Resolves env and envFrom in Kubernetes' order: envFrom sources first, then env (which wins),
/// each value expanded against the variables defined before it.
fn resolve_env(
    ctx: &Ctx,
    c: &Container,
    who: &str,
    secret_env: &mut Vec<String>,
) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = env.iter_mut().find(|(n, _)| *n == k) {
            slot.1 = v;
        } else {
            env.push((k, v));
        }
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match ctx.m.config_maps.get(&r.name) {
                Some(data) => {
                    for (k, v) in data {
                        let what = format!("{who} envFrom ConfigMap {} key {k}", r.name);
                        set(&mut env, format!("{prefix}{k}"), text(v.clone(), &what)?);
                    }
                }
                None if r.optional == Some(true) => {}
                None => bail!(
                    "{who}: envFrom ConfigMap {} is not in the rendering",
                    r.name
                ),
            }
        }
        if let Some(r) = &from.secret_ref {
            match ctx.m.secrets.get(&r.name) {
                Some(data) => {
                    for (k, v) in data {
                        let what = format!("{who} envFrom Secret {} key {k}", r.name);
                        secret_env.push(format!("{prefix}{k}"));
                        set(&mut env, format!("{prefix}{k}"), text(v.clone(), &what)?);
                    }
                }
                None if r.optional == Some(true) => {}
                None => bail!("{who}: envFrom Secret {} is not in the rendering", r.name),
            }
        }
    }
    for EnvVar {
        name,
        value,
        value_from,
    } in c.env.iter().flatten()
    {
        let what = format!("{who} env {name}");
        let v = if let Some(from) = value_from {
            if let Some(r) = &from.secret_key_ref {
                secret_env.push(name.clone());
                ctx.secret_key(&r.name, &r.key, r.optional == Some(true), &what)?
                    .map(|b| text(b, &what))
                    .transpose()?
            } else if let Some(r) = &from.config_map_key_ref {
                ctx.config_map_key(&r.name, &r.key, r.optional == Some(true), &what)?
                    .map(|b| text(b, &what))
                    .transpose()?
            } else if let Some(r) = &from.field_ref {
                Some(ctx.field(&r.field_path, &what)?)
            } else if let Some(r) = &from.resource_field_ref {
                Some(resource_field(c, &r.resource, &what)?)
            } else {
                bail!("{what}: valueFrom has no source this runner supports")
            }
        } else {
            let defined = env.clone();
            Some(expand(value.as_deref().unwrap_or(""), &|k| {
                defined.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
            }))
        };
        // An optional reference that is absent leaves the variable unset.
        if let Some(v) = v {
            set(&mut env, name.clone(), v);
        }
    }
    Ok(env)
}

fn resource_field(c: &Container, resource: &str, what: &str) -> Result<String> {
    let (section, res) = resource
        .split_once('.')
        .with_context(|| format!("{what}: resourceFieldRef {resource}"))?;
    let r = c.resources.as_ref();
    let map = match section {
        "limits" => r.and_then(|r| r.limits.as_ref()),
        "requests" => r.and_then(|r| r.requests.as_ref()),
        _ => bail!("{what}: resourceFieldRef {resource}"),
    };
    let q = map.and_then(|m| m.get(res)).with_context(|| {
        format!("{what}: resourceFieldRef {resource} is not set on the container")
    })?;
    let v = quantity::parse(&q.0)?;
    // Divisor 1: cpu rounds up to whole cores, memory is bytes.
    Ok(format!("{}", v.ceil()))
}

fn port_of(
    ports: &BTreeMap<String, u16>,
    declared: &[u16],
    p: &IntOrString,
    what: &str,
) -> Result<u16> {
    match p {
        IntOrString::Int(n) => {
            let n = u16::try_from(*n).with_context(|| format!("{what}: port {n} out of range"))?;
            if !declared.contains(&n) {
                // Kubernetes allows probing an undeclared port; say so, it is usually a slip.
                eprintln!("podrun: note: {what}: port {n} is not a declared containerPort");
            }
            Ok(n)
        }
        IntOrString::String(name) => ports.get(name).copied().with_context(|| {
            format!(
                "{what}: port name {name:?} is not a containerPort name of the container (names: {})",
                ports.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        }),
    }
}

fn probe(
    p: Option<&Probe>,
    ports: &BTreeMap<String, u16>,
    declared: &[u16],
    what: &str,
) -> Result<Option<ProbePlan>> {
    let Some(p) = p else { return Ok(None) };
    let action = if let Some(h) = &p.http_get {
        if h.scheme
            .as_deref()
            .is_some_and(|s| !s.eq_ignore_ascii_case("http"))
        {
            bail!(
                "{what}: httpGet scheme {:?} is not supported by this runner",
                h.scheme
            );
        }
        if h.host.is_some() {
            bail!("{what}: httpGet host is not supported by this runner");
        }
        ProbeAction::Http {
            path: h.path.clone().unwrap_or_else(|| "/".to_owned()),
            port: port_of(ports, declared, &h.port, what)?,
        }
    } else if let Some(g) = &p.grpc {
        ProbeAction::Grpc {
            port: port_of(ports, declared, &IntOrString::Int(g.port), what)?,
            service: g.service.clone().unwrap_or_default(),
        }
    } else if let Some(t) = &p.tcp_socket {
        ProbeAction::Tcp {
            port: port_of(ports, declared, &t.port, what)?,
        }
    } else if let Some(e) = &p.exec {
        let command = e.command.clone().unwrap_or_default();
        if command.is_empty() {
            bail!("{what}: exec probe without a command");
        }
        ProbeAction::Exec { command }
    } else {
        bail!("{what}: a probe without an action");
    };
    let secs =
        |v: Option<i32>, default: i32| u64::try_from(v.unwrap_or(default).max(0)).unwrap_or(0);
    let count =
        |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default).max(1)).unwrap_or(1);
    Ok(Some(ProbePlan {
        action,
        initial_delay_secs: secs(p.initial_delay_seconds, 0),
        period_secs: secs(p.period_seconds, 10).max(1),
        timeout_secs: secs(p.timeout_seconds, 1).max(1),
        success_threshold: count(p.success_threshold, 1),
        failure_threshold: count(p.failure_threshold, 3),
    }))
}

fn security(
    pod: Option<&PodSecurityContext>,
    c: Option<&SecurityContext>,
    plan: &mut ContainerPlan,
    what: &str,
) -> Result<()> {
    let uid = c
        .and_then(|c| c.run_as_user)
        .or(pod.and_then(|p| p.run_as_user));
    let gid = c
        .and_then(|c| c.run_as_group)
        .or(pod.and_then(|p| p.run_as_group));
    plan.run_as_non_root = c
        .and_then(|c| c.run_as_non_root)
        .or(pod.and_then(|p| p.run_as_non_root))
        .unwrap_or(false);
    if plan.run_as_non_root && uid == Some(0) {
        bail!("{what}: runAsNonRoot with runAsUser 0: the kubelet refuses to start it");
    }
    plan.user = match (uid, gid) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(_)) => {
            bail!("{what}: runAsGroup without runAsUser is not supported by this runner")
        }
        (None, None) => None,
    };
    if let Some(p) = pod {
        plan.group_add.extend(p.fs_group);
        plan.group_add
            .extend(p.supplemental_groups.iter().flatten().copied());
        if p.sysctls.as_ref().is_some_and(|s| !s.is_empty()) {
            bail!("{what}: pod sysctls are not supported by this runner");
        }
    }
    plan.group_add.sort_unstable();
    plan.group_add.dedup();
    if let Some(c) = c {
        plan.read_only = c.read_only_root_filesystem.unwrap_or(false);
        plan.privileged = c.privileged.unwrap_or(false);
        plan.no_new_privileges = c.allow_privilege_escalation == Some(false);
        if let Some(caps) = &c.capabilities {
            plan.cap_drop = caps.drop.clone().unwrap_or_default();
            plan.cap_add = caps.add.clone().unwrap_or_default();
        }
    }
    let seccomp = c
        .and_then(|c| c.seccomp_profile.as_ref())
        .or(pod.and_then(|p| p.seccomp_profile.as_ref()));
    match seccomp.map(|s| s.type_.as_str()) {
        None | Some("RuntimeDefault") => {}
        Some("Unconfined") => plan.seccomp_unconfined = true,
        Some(other) => bail!("{what}: seccompProfile {other} is not supported by this runner"),
    }
    Ok(())
}

fn resources(c: &Container, plan: &mut ContainerPlan, what: &str) -> Result<()> {
    let Some(r) = &c.resources else { return Ok(()) };
    let get =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    if let Some(q) = get(&r.limits, "memory") {
        plan.memory = Some(quantity::bytes(&q).with_context(|| format!("{what}: limits.memory"))?);
    }
    if let Some(q) = get(&r.limits, "cpu") {
        plan.cpus = Some(quantity::parse(&q).with_context(|| format!("{what}: limits.cpu"))?);
    }
    if let Some(q) = get(&r.requests, "memory") {
        plan.memory_reservation =
            Some(quantity::bytes(&q).with_context(|| format!("{what}: requests.memory"))?);
    }
    if let Some(q) = get(&r.requests, "cpu") {
        let cores = quantity::parse(&q).with_context(|| format!("{what}: requests.cpu"))?;
        // The kubelet's cpu.shares for a request (minimum 2).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let shares = (cores * 1024.0).round().max(2.0) as u64;
        plan.cpu_shares = Some(shares);
    }
    Ok(())
}

fn files_of(
    items: Option<&Vec<KeyToPath>>,
    data: &BTreeMap<String, Vec<u8>>,
    mode: u32,
    what: &str,
) -> Result<Vec<FileEntry>> {
    match items {
        Some(items) => items
            .iter()
            .map(|i| {
                let data = data.get(&i.key).with_context(|| {
                    format!(
                        "{what}: item key {} is not in it (keys: {})",
                        i.key,
                        keys(data)
                    )
                })?;
                Ok(FileEntry {
                    path: i.path.clone(),
                    data: data.clone(),
                    mode: i.mode.map_or(mode, |m| u32::try_from(m).unwrap_or(mode)),
                })
            })
            .collect(),
        None => Ok(data
            .iter()
            .map(|(k, v)| FileEntry {
                path: k.clone(),
                data: v.clone(),
                mode,
            })
            .collect()),
    }
}

fn volume(ctx: &Ctx, v: &Volume, gid: Option<i64>, who: &str) -> Result<VolumePlan> {
    let what = format!("{who} volume {}", v.name);
    let mode = |m: Option<i32>| m.map_or(0o644, |m| u32::try_from(m).unwrap_or(0o644));
    if let Some(s) = &v.secret {
        let name = s
            .secret_name
            .clone()
            .with_context(|| format!("{what}: no secretName"))?;
        let files = match ctx.m.secrets.get(&name) {
            Some(data) => files_of(s.items.as_ref(), data, mode(s.default_mode), &what)?,
            None if s.optional == Some(true) => Vec::new(),
            None => bail!("{what}: Secret {name} is not in the rendering"),
        };
        return Ok(VolumePlan::Files { files, gid });
    }
    if let Some(c) = &v.config_map {
        let files = match ctx.m.config_maps.get(&c.name) {
            Some(data) => files_of(c.items.as_ref(), data, mode(c.default_mode), &what)?,
            None if c.optional == Some(true) => Vec::new(),
            None => bail!("{what}: ConfigMap {} is not in the rendering", c.name),
        };
        return Ok(VolumePlan::Files { files, gid });
    }
    if let Some(p) = &v.projected {
        let mut files = Vec::new();
        for s in p.sources.iter().flatten() {
            if let Some(c) = &s.config_map {
                match ctx.m.config_maps.get(&c.name) {
                    Some(data) => files.extend(files_of(
                        c.items.as_ref(),
                        data,
                        mode(p.default_mode),
                        &what,
                    )?),
                    None if c.optional == Some(true) => {}
                    None => bail!(
                        "{what}: projected ConfigMap {} is not in the rendering",
                        c.name
                    ),
                }
            } else if let Some(sec) = &s.secret {
                match ctx.m.secrets.get(&sec.name) {
                    Some(data) => files.extend(files_of(
                        sec.items.as_ref(),
                        data,
                        mode(p.default_mode),
                        &what,
                    )?),
                    None if sec.optional == Some(true) => {}
                    None => bail!(
                        "{what}: projected Secret {} is not in the rendering",
                        sec.name
                    ),
                }
            } else {
                bail!("{what}: a projected source other than configMap/secret is not supported");
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &files {
            if !seen.insert(f.path.clone()) {
                bail!("{what}: two projected sources write {}", f.path);
            }
        }
        return Ok(VolumePlan::Files { files, gid });
    }
    if let Some(e) = &v.empty_dir {
        let size = e
            .size_limit
            .as_ref()
            .map(|q| quantity::bytes(&q.0))
            .transpose()
            .with_context(|| format!("{what}: sizeLimit"))?;
        let memory = e.medium.as_deref() == Some("Memory");
        return Ok(VolumePlan::EmptyDir { size, memory, gid });
    }
    if v.persistent_volume_claim.is_some() {
        return Ok(VolumePlan::Claim { gid });
    }
    bail!("{what}: this volume type is not supported by this runner")
}

fn container(
    ctx: &Ctx,
    c: &Container,
    volumes: &BTreeMap<String, VolumePlan>,
    who: &str,
    stop_timeout: i64,
) -> Result<ContainerPlan> {
    let who = format!("{who} container {}", c.name);
    let image = c
        .image
        .clone()
        .with_context(|| format!("{who}: no image"))?;
    let mut secret_env = Vec::new();
    let env = resolve_env(ctx, c, &who, &mut secret_env)?;
    let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let command: Vec<String> = c
        .command
        .iter()
        .flatten()
        .map(|s| expand(s, &lookup))
        .collect();
    let args: Vec<String> = c
        .args
        .iter()
        .flatten()
        .map(|s| expand(s, &lookup))
        .collect();
    let (entrypoint, args) = match command.split_first() {
        Some((first, rest)) => (
            Some(first.clone()),
            rest.iter().cloned().chain(args).collect(),
        ),
        None => (None, args),
    };
    let mut ports = BTreeMap::new();
    let mut declared = Vec::new();
    for p in c.ports.iter().flatten() {
        let n = u16::try_from(p.container_port)
            .with_context(|| format!("{who}: containerPort {}", p.container_port))?;
        declared.push(n);
        if let Some(name) = &p.name
            && ports.insert(name.clone(), n).is_some()
        {
            bail!("{who}: port name {name} declared twice");
        }
    }
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        if !volumes.contains_key(&m.name) {
            bail!("{who}: volumeMount {} names no volume of the pod", m.name);
        }
        if m.sub_path_expr.is_some() {
            bail!(
                "{who}: volumeMount {} uses subPathExpr, not supported by this runner",
                m.name
            );
        }
        mounts.push(MountPlan {
            volume: m.name.clone(),
            target: m.mount_path.clone(),
            sub_path: m.sub_path.clone().filter(|s| !s.is_empty()),
            read_only: m.read_only.unwrap_or(false),
        });
    }
    let mut plan = ContainerPlan {
        name: c.name.clone(),
        image,
        entrypoint,
        args,
        env,
        secret_env,
        user: None,
        run_as_non_root: false,
        group_add: Vec::new(),
        read_only: false,
        cap_drop: Vec::new(),
        cap_add: Vec::new(),
        no_new_privileges: false,
        privileged: false,
        seccomp_unconfined: false,
        memory: None,
        memory_reservation: None,
        cpus: None,
        cpu_shares: None,
        mounts,
        startup: probe(
            c.startup_probe.as_ref(),
            &ports,
            &declared,
            &format!("{who} startupProbe"),
        )?,
        readiness: probe(
            c.readiness_probe.as_ref(),
            &ports,
            &declared,
            &format!("{who} readinessProbe"),
        )?,
        liveness: probe(
            c.liveness_probe.as_ref(),
            &ports,
            &declared,
            &format!("{who} livenessProbe"),
        )?,
        ports,
        stop_timeout,
    };
    security(
        ctx.w.spec.security_context.as_ref(),
        c.security_context.as_ref(),
        &mut plan,
        &who,
    )?;
    resources(c, &mut plan, &who)?;
    Ok(plan)
}

/// The plan of pod `pod` of workload `w`.
pub fn pod_plan(m: &Manifests, w: &Workload, pod: &str) -> Result<PodPlan> {
    let who = format!("{} pod {pod}", w.id());
    let mut labels = w.pod_meta.labels.clone().unwrap_or_default();
    if w.kind == Kind::StatefulSet {
        labels.insert("statefulset.kubernetes.io/pod-name".into(), pod.to_owned());
    }
    let ctx = Ctx {
        m,
        w,
        pod,
        labels: &labels,
    };
    let spec = &w.spec;
    if spec.host_network == Some(true) || spec.host_pid == Some(true) || spec.host_ipc == Some(true)
    {
        bail!("{who}: host namespaces are not supported by this runner");
    }
    let gid = spec.security_context.as_ref().and_then(|s| s.fs_group);
    let mut volumes = BTreeMap::new();
    for v in spec.volumes.iter().flatten() {
        volumes.insert(v.name.clone(), volume(&ctx, v, gid, &who)?);
    }
    for claim in &w.volume_claims {
        volumes.insert(claim.clone(), VolumePlan::Claim { gid });
    }
    let stop_timeout = spec.termination_grace_period_seconds.unwrap_or(30);
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| container(&ctx, c, &volumes, &who, stop_timeout))
        .collect::<Result<Vec<_>>>()?;
    let containers = spec
        .containers
        .iter()
        .map(|c| container(&ctx, c, &volumes, &who, stop_timeout))
        .collect::<Result<Vec<_>>>()?;
    if containers.is_empty() {
        bail!("{who}: no containers");
    }
    let ns = &m.namespace;
    let mut aliases = Vec::new();
    for svc in &m.services {
        if selects(svc, &labels) {
            aliases.extend(fqdn_forms(svc_name(svc), ns));
        }
    }
    if let Some(governing) = &w.service_name {
        let hostname = format!("{pod}.{governing}");
        aliases.extend(fqdn_forms(&hostname, ns));
    }
    aliases.dedup();
    let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| {
        if w.kind == Kind::Job {
            "OnFailure"
        } else {
            "Always"
        }
        .to_owned()
    });
    Ok(PodPlan {
        owner: w.id(),
        name: pod.to_owned(),
        labels,
        aliases,
        init,
        containers,
        volumes,
        restart_policy,
    })
}

/// Every Service port must reach a port the selected pods declare, under the same number (a
/// network alias cannot remap ports), and every Service with a selector must select a pod.
pub fn check_services(m: &Manifests, pods: &[PodPlan]) -> Result<()> {
    for svc in &m.services {
        let name = svc_name(svc);
        let Some(spec) = &svc.spec else { continue };
        if spec.selector.as_ref().is_none_or(BTreeMap::is_empty) {
            continue;
        }
        let selected: Vec<&PodPlan> = pods.iter().filter(|p| selects(svc, &p.labels)).collect();
        if selected.is_empty() {
            bail!("Service {name}: its selector matches no pod of the rendering");
        }
        for port in spec.ports.iter().flatten() {
            let target = port
                .target_port
                .clone()
                .unwrap_or(IntOrString::Int(port.port));
            for pod in &selected {
                let found = match &target {
                    IntOrString::Int(n) => u16::try_from(*n).ok(),
                    IntOrString::String(s) => {
                        pod.containers.iter().find_map(|c| c.ports.get(s).copied())
                    }
                };
                let Some(n) = found else {
                    bail!(
                        "Service {name} port {}: targetPort {target:?} is not a port of pod {}",
                        port.port,
                        pod.name
                    );
                };
                if i32::from(n) != port.port {
                    bail!(
                        "Service {name} port {} maps to container port {n} on pod {}: a Docker network alias cannot remap ports",
                        port.port,
                        pod.name
                    );
                }
            }
        }
    }
    Ok(())
}

/// `docker run` arguments (after `run`) for one container of a pod.
pub struct RunTarget<'a> {
    pub docker_name: &'a str,
    /// Join this container's network namespace (second and later containers of a pod).
    pub join: Option<&'a str>,
    pub network: &'a str,
    pub hostname: &'a str,
    pub aliases: &'a [String],
    pub labels: &'a [(String, String)],
    /// Host directory of each Files/Claim volume of the pod.
    pub volume_dir: &'a dyn Fn(&str) -> String,
    pub volumes: &'a BTreeMap<String, VolumePlan>,
}

pub fn docker_run_args(c: &ContainerPlan, t: &RunTarget) -> Vec<String> {
    let mut a: Vec<String> = vec!["--detach".into(), "--name".into(), t.docker_name.into()];
    for (k, v) in t.labels {
        a.push("--label".into());
        a.push(format!("{k}={v}"));
    }
    match t.join {
        Some(first) => a.push(format!("--network=container:{first}")),
        None => {
            a.push(format!("--network={}", t.network));
            a.push(format!("--hostname={}", t.hostname));
            for alias in t.aliases {
                a.push(format!("--network-alias={alias}"));
            }
        }
    }
    if let Some(e) = &c.entrypoint {
        a.push(format!("--entrypoint={e}"));
    }
    for (k, v) in &c.env {
        a.push("--env".into());
        a.push(format!("{k}={v}"));
    }
    if let Some(u) = &c.user {
        a.push(format!("--user={u}"));
    }
    for g in &c.group_add {
        a.push(format!("--group-add={g}"));
    }
    if c.read_only {
        a.push("--read-only".into());
    }
    for cap in &c.cap_drop {
        a.push(format!("--cap-drop={cap}"));
    }
    for cap in &c.cap_add {
        a.push(format!("--cap-add={cap}"));
    }
    if c.no_new_privileges {
        a.push("--security-opt=no-new-privileges".into());
    }
    if c.seccomp_unconfined {
        a.push("--security-opt=seccomp=unconfined".into());
    }
    if c.privileged {
        a.push("--privileged".into());
    }
    if let Some(m) = c.memory {
        a.push(format!("--memory={m}"));
        // No swap beyond the limit, as on a kubelet node.
        a.push(format!("--memory-swap={m}"));
    }
    if let Some(m) = c.memory_reservation {
        a.push(format!("--memory-reservation={m}"));
    }
    if let Some(cpus) = c.cpus {
        a.push(format!("--cpus={cpus}"));
    }
    if let Some(s) = c.cpu_shares {
        a.push(format!("--cpu-shares={s}"));
    }
    a.push(format!("--stop-timeout={}", c.stop_timeout));
    for m in &c.mounts {
        match t.volumes.get(&m.volume) {
            Some(VolumePlan::EmptyDir {
                size, memory: true, ..
            }) => {
                let size = size.map(|s| format!(",size={s}")).unwrap_or_default();
                a.push(format!("--tmpfs={}:rw,exec,mode=1777{size}", m.target));
            }
            Some(_) => {
                let mut src = (t.volume_dir)(&m.volume);
                if let Some(sub) = &m.sub_path {
                    src = format!("{src}/{sub}");
                }
                let ro = if m.read_only { ",readonly" } else { "" };
                a.push(format!(
                    "--mount=type=bind,source={src},target={}{ro}",
                    m.target
                ));
            }
            None => {}
        }
    }
    a.push(c.image.clone());
    a.extend(c.args.iter().cloned());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERING: &str = r#"
---
# Source: a comment-only document must be skipped
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
type: Opaque
data:
  NATS_PASSWORD: c2VjcmV0          # "secret"
stringData:
  DATABASE_URL: postgres://u:p@db:5432/x
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data:
  GRPC_ADDR: 0.0.0.0:50051
  LOG_FORMAT: json
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports:
    - {name: grpc, port: 50051, targetPort: grpc}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: api}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: api}
  minReplicas: 2
  maxReplicas: 4
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      terminationGracePeriodSeconds: 30
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532}
      initContainers:
        - name: migrate
          image: app:dev
          command: [/usr/local/bin/app, migrate]
          env:
            - name: DATABASE_URL
              valueFrom: {secretKeyRef: {name: creds, key: DATABASE_URL}}
      containers:
        - name: api
          image: app:dev
          command: [/usr/local/bin/app]
          args: [serve, --password, $(NATS_PASSWORD), --literal, $$(NATS_PASSWORD), --unknown, $(NOPE)]
          ports:
            - {name: grpc, containerPort: 50051}
            - {name: http, containerPort: 8080}
          envFrom:
            - configMapRef: {name: cfg}
          env:
            - name: NATS_PASSWORD
              valueFrom: {secretKeyRef: {name: creds, key: NATS_PASSWORD}}
            - name: SMTP_PASSWORD
              valueFrom: {secretKeyRef: {name: creds, key: SMTP_PASSWORD, optional: true}}
            - name: POD
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
            - {name: LOG_FORMAT, value: text}
            - {name: GREETING, value: "pod $(POD) on $(GRPC_ADDR)"}
          startupProbe: {grpc: {port: 50051}, periodSeconds: 2, failureThreshold: 60}
          readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 5}
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {cpu: 500m, memory: 512Mi}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
            seccompProfile: {type: RuntimeDefault}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            - {name: conf, mountPath: /etc/app, readOnly: true}
      volumes:
        - name: tmp
          emptyDir: {sizeLimit: 64Mi}
        - name: conf
          secret:
            secretName: creds
            defaultMode: 0440
            items: [{key: NATS_PASSWORD, path: nats.pw}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db-headless
  replicas: 2
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
        - name: db
          image: db:1
          env:
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
  volumeClaimTemplates:
    - metadata: {name: data}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: smoke
  annotations: {helm.sh/hook: test, helm.sh/hook-weight: "5"}
spec:
  restartPolicy: Never
  containers:
    - {name: smoke, image: app:dev, command: [/usr/local/bin/app, smoke]}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: upgrade-only
  annotations: {helm.sh/hook: pre-upgrade}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: x, image: app:dev}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: api}
spec: {maxUnavailable: 1, selector: {matchLabels: {app: api}}}
"#;

    fn manifests() -> Manifests {
        Manifests::parse(RENDERING, "shop").unwrap()
    }

    fn workload<'a>(m: &'a Manifests, name: &str) -> &'a Workload {
        m.workloads.iter().find(|w| w.name == name).unwrap()
    }

    fn env<'a>(c: &'a ContainerPlan, k: &str) -> Option<&'a str> {
        c.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn parses_objects_phases_and_hpa_replicas() {
        let m = manifests();
        assert_eq!(m.secrets["creds"]["NATS_PASSWORD"], b"secret");
        assert_eq!(
            m.secrets["creds"]["DATABASE_URL"],
            b"postgres://u:p@db:5432/x"
        );
        assert_eq!(
            workload(&m, "api").replicas,
            2,
            "replicas come from the HPA's minReplicas"
        );
        assert_eq!(workload(&m, "db").replicas, 2);
        assert!(workload(&m, "db").parallel);
        let smoke = workload(&m, "smoke");
        assert_eq!(
            (smoke.phase, smoke.weight),
            (crate::manifest::Phase::Test, 5)
        );
        assert!(!smoke.serves());
        assert_eq!(m.skipped_hooks, vec!["job/upgrade-only".to_owned()]);
        assert_eq!(m.not_run.get("PodDisruptionBudget"), Some(&1));
    }

    #[test]
    fn env_resolution_follows_kubernetes_order_and_expansion() {
        let m = manifests();
        let p = pod_plan(&m, workload(&m, "api"), "api-podrun-0").unwrap();
        let c = &p.containers[0];
        assert_eq!(
            env(c, "GRPC_ADDR"),
            Some("0.0.0.0:50051"),
            "envFrom ConfigMap"
        );
        assert_eq!(env(c, "LOG_FORMAT"), Some("text"), "env wins over envFrom");
        assert_eq!(
            env(c, "NATS_PASSWORD"),
            Some("secret"),
            "secretKeyRef, base64 data decoded"
        );
        assert_eq!(
            env(c, "SMTP_PASSWORD"),
            None,
            "an optional missing key leaves it unset"
        );
        assert_eq!(
            env(c, "POD"),
            Some("api-podrun-0"),
            "fieldRef metadata.name"
        );
        assert_eq!(
            env(c, "GREETING"),
            Some("pod api-podrun-0 on 0.0.0.0:50051")
        );
        assert_eq!(c.entrypoint.as_deref(), Some("/usr/local/bin/app"));
        assert_eq!(
            c.args,
            [
                "serve",
                "--password",
                "secret",
                "--literal",
                "$(NATS_PASSWORD)",
                "--unknown",
                "$(NOPE)"
            ]
        );
        assert_eq!(
            env(&p.init[0], "DATABASE_URL"),
            Some("postgres://u:p@db:5432/x")
        );
        assert_eq!(p.init[0].args, ["migrate"]);
    }

    #[test]
    fn security_resources_probes_and_volumes_become_docker_flags() {
        let m = manifests();
        let p = pod_plan(&m, workload(&m, "api"), "api-podrun-0").unwrap();
        let c = &p.containers[0];
        assert_eq!(
            c.startup.as_ref().unwrap().action,
            ProbeAction::Grpc {
                port: 50051,
                service: String::new()
            }
        );
        assert_eq!(c.startup.as_ref().unwrap().failure_threshold, 60);
        assert_eq!(
            c.readiness.as_ref().unwrap().action,
            ProbeAction::Http {
                path: "/readyz".into(),
                port: 8080
            },
            "the named port resolves to its containerPort"
        );
        let VolumePlan::Files { files, gid } = &p.volumes["conf"] else {
            panic!("conf is a file volume")
        };
        assert_eq!(
            files,
            &vec![FileEntry {
                path: "nats.pw".into(),
                data: b"secret".to_vec(),
                mode: 0o440
            }]
        );
        assert_eq!(*gid, Some(65532));
        let labels = vec![("run".to_owned(), "1".to_owned())];
        let dir = |v: &str| format!("/tmp/run/api-podrun-0/{v}");
        let args = docker_run_args(
            c,
            &RunTarget {
                docker_name: "podrun-1-api-podrun-0-api",
                join: None,
                network: "net1",
                hostname: "api-podrun-0",
                aliases: &p.aliases,
                labels: &labels,
                volume_dir: &dir,
                volumes: &p.volumes,
            },
        );
        for flag in [
            "--network=net1",
            "--hostname=api-podrun-0",
            "--network-alias=api",
            "--network-alias=api.shop",
            "--network-alias=api.shop.svc",
            "--network-alias=api.shop.svc.cluster.local",
            "--entrypoint=/usr/local/bin/app",
            "--user=65532:65532",
            "--group-add=65532",
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--memory=536870912",
            "--memory-reservation=67108864",
            "--cpus=0.5",
            "--cpu-shares=102",
            "--stop-timeout=30",
            "--mount=type=bind,source=/tmp/run/api-podrun-0/tmp,target=/tmp",
            "--mount=type=bind,source=/tmp/run/api-podrun-0/conf,target=/etc/app,readonly",
        ] {
            assert!(args.iter().any(|a| a == flag), "missing {flag} in {args:?}");
        }
        let image = args.iter().position(|a| a == "app:dev").unwrap();
        assert_eq!(&args[image + 1..], &c.args[..], "the args follow the image");
        let env_at = args
            .iter()
            .position(|a| a == "NATS_PASSWORD=secret")
            .unwrap();
        assert_eq!(args[env_at - 1], "--env");
    }

    #[test]
    fn statefulset_pods_get_their_own_dns_names_and_claims() {
        let m = manifests();
        let w = workload(&m, "db");
        assert_eq!(pod_names(w), ["db-0", "db-1"]);
        let p = pod_plan(&m, w, "db-1").unwrap();
        assert!(
            p.aliases
                .contains(&"db-1.db-headless.shop.svc.cluster.local".to_owned())
        );
        assert!(p.aliases.contains(&"db-1.db-headless".to_owned()));
        assert_eq!(env(&p.containers[0], "POD_NAME"), Some("db-1"));
        assert_eq!(p.volumes["data"], VolumePlan::Claim { gid: None });
        assert!(
            p.containers[0].entrypoint.is_none(),
            "no command: the image's entrypoint stays"
        );
    }

    #[test]
    fn chart_mistakes_fail_with_the_pod_and_the_value() {
        let broken = RENDERING.replace("key: NATS_PASSWORD}}", "key: NATS_PASWORD}}");
        let m = Manifests::parse(&broken, "shop").unwrap();
        let e = pod_plan(&m, workload(&m, "api"), "api-podrun-0")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("env NATS_PASSWORD") && e.contains("no key NATS_PASWORD"),
            "{e}"
        );

        let broken = RENDERING.replace("port: http}", "port: htp}");
        let m = Manifests::parse(&broken, "shop").unwrap();
        let e = pod_plan(&m, workload(&m, "api"), "api-podrun-0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("readinessProbe") && e.contains("\"htp\""), "{e}");

        let broken = RENDERING.replace("configMapRef: {name: cfg}", "configMapRef: {name: cgf}");
        let m = Manifests::parse(&broken, "shop").unwrap();
        let e = pod_plan(&m, workload(&m, "api"), "api-podrun-0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ConfigMap cgf"), "{e}");

        let broken = RENDERING.replace("targetPort: grpc}", "targetPort: grcp}");
        let m = Manifests::parse(&broken, "shop").unwrap();
        let pods: Vec<PodPlan> = m
            .workloads
            .iter()
            .flat_map(|w| pod_names(w).into_iter().map(move |p| (w, p)))
            .map(|(w, p)| pod_plan(&m, w, &p).unwrap())
            .collect();
        let e = check_services(&m, &pods).unwrap_err().to_string();
        assert!(e.contains("Service api") && e.contains("grcp"), "{e}");

        let broken = RENDERING.replace("runAsUser: 65532, runAsGroup", "runAsUser: 0, runAsGroup");
        let m = Manifests::parse(&broken, "shop").unwrap();
        let e = pod_plan(&m, workload(&m, "api"), "api-podrun-0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("runAsNonRoot"), "{e}");
    }

    #[test]
    fn dollar_expansion_matches_kubernetes() {
        let vars = |k: &str| (k == "A").then(|| "x".to_owned());
        assert_eq!(
            expand("$(A)-$(B)-$$(A)-$A-$(A", &vars),
            "x-$(B)-$(A)-$A-$(A"
        );
        assert_eq!(expand("no vars", &vars), "no vars");
    }
}
