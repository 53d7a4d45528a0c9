//! Throwaway nats-server (2.15, from the venv) with JetStream: one node or a 3-node cluster.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use crate::error::{Result, TestkitError};
use crate::process::{
    Launch, POLL_INTERVAL, ScratchDir, ServerProcess, free_port, ready_timeout, with_port_retry,
};
use crate::tools;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Graceful stop: nats-server flushes JetStream and exits on SIGTERM well within this.
const STOP_GRACE: Duration = Duration::from_secs(10);

fn url_of(port: u16) -> String {
    format!("nats://127.0.0.1:{port}")
}

async fn connect(url: &str) -> std::result::Result<async_nats::Client, String> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(1))
        .connect(url)
        .await
        .map_err(|e| format!("connect: {e}"))
}

/// Readiness: JetStream answers on this node, not merely the TCP port.
async fn jetstream_answers(url: &str) -> std::result::Result<(), String> {
    let client = connect(url).await?;
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(2));
    js.query_account()
        .await
        .map(|_| ())
        .map_err(|e| format!("JetStream account info: {e}"))
}

fn quoted(path: &Path) -> String {
    // nats config strings are JSON-like; our scratch paths hold no quotes or backslashes.
    format!("\"{}\"", path.display())
}

/// A single nats-server with JetStream (file storage in a scratch dir) on a random loopback port.
///
/// Dropping it kills the server and removes the store.
#[derive(Debug)]
pub struct NatsServer {
    proc: ServerProcess,
    store: PathBuf,
    config: PathBuf,
    // Declared last: dropped after the process is gone.
    _dir: ScratchDir,
}

impl NatsServer {
    /// Starts a server and waits until JetStream answers.
    pub async fn start() -> Result<NatsServer> {
        Self::start_with_config("").await
    }

    /// Like [`start`](Self::start), with `extra` appended to the generated config file (e.g. an
    /// `authorization { ... }` block or `max_payload: 64KB`).
    pub async fn start_with_config(extra: &str) -> Result<NatsServer> {
        let binary = tools::nats_server()?;
        with_port_retry(|| Self::start_once(binary.clone(), extra)).await
    }

    async fn start_once(binary: PathBuf, extra: &str) -> Result<NatsServer> {
        let dir = ScratchDir::new("nats")?;
        let port = free_port()?;
        let store = dir.path().join("store");
        let config = dir.path().join("nats.conf");
        let text = format!(
            "server_name: testkit\nlisten: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {}\n}}\n{extra}\n",
            quoted(&store)
        );
        std::fs::write(&config, text)
            .map_err(|e| TestkitError::io(format!("writing {}", config.display()), e))?;
        let launch = Launch::new("nats-server", binary, dir.path().join("nats.log"), port)
            .arg("-c")
            .arg(&config);
        let server = NatsServer {
            proc: ServerProcess::new(launch),
            store,
            config,
            _dir: dir,
        };
        server.boot().await?;
        Ok(server)
    }

    async fn boot(&self) -> Result<()> {
        self.proc.spawn().await?;
        let url = self.url();
        self.proc
            .wait_ready(ready_timeout(READY_TIMEOUT), || jetstream_answers(&url))
            .await
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        url_of(self.port())
    }

    pub fn port(&self) -> u16 {
        self.proc.launch.port
    }

    /// The JetStream store dir (kept across [`kill`](Self::kill) / [`restart`](Self::restart)).
    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Pid of the running server, None while it is down.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// A new client connected to this server.
    pub async fn client(&self) -> Result<async_nats::Client> {
        let url = self.url();
        async_nats::connect(&url)
            .await
            .map_err(|e| TestkitError::nats(&url, e))
    }

    /// A JetStream context on a new client.
    pub async fn jetstream(&self) -> Result<jetstream::Context> {
        Ok(jetstream::new(self.client().await?))
    }

    /// SIGKILL: no flush, no goodbye. The port and store stay for [`restart`](Self::restart).
    pub fn kill(&self) {
        self.proc.kill();
    }

    /// Graceful stop (SIGTERM, SIGKILL after 10 s).
    pub fn stop(&self) {
        self.proc.stop(STOP_GRACE);
    }

    /// Starts the server again on the same port and store dir (stopping it first if it runs)
    /// and waits until JetStream answers.
    pub async fn restart(&self) -> Result<()> {
        self.proc.stop(STOP_GRACE);
        self.boot().await
    }
}

#[derive(Debug)]
struct Node {
    name: String,
    proc: ServerProcess,
}

/// A JetStream cluster of `n` nodes (`n0`..) on loopback, each with its own store dir.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    cluster_name: String,
    _dir: ScratchDir,
}

/// Name of the stream created (and deleted) to prove the cluster can place R3 streams.
const READY_STREAM: &str = "TESTKIT_READY";

impl NatsCluster {
    /// Starts `n` nodes (3 for R3 streams) and waits until every node answers JetStream requests
    /// and an R`n` stream can be created.
    pub async fn start(n: usize) -> Result<NatsCluster> {
        if n == 0 {
            return Err(TestkitError::Invalid(
                "a cluster needs at least one node".into(),
            ));
        }
        let binary = tools::nats_server()?;
        with_port_retry(|| Self::start_once(binary.clone(), n)).await
    }

    async fn start_once(binary: PathBuf, n: usize) -> Result<NatsCluster> {
        let dir = ScratchDir::new("nats-cluster")?;
        let cluster_name = "jetmart-testkit".to_owned();
        let mut client_ports = Vec::with_capacity(n);
        let mut route_ports = Vec::with_capacity(n);
        for _ in 0..n {
            client_ports.push(free_port()?);
            route_ports.push(free_port()?);
        }
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("n{i}");
            let store = dir.path().join(&name);
            let config = dir.path().join(format!("{name}.conf"));
            let routes = (0..n)
                .filter(|&j| j != i)
                .map(|j| format!("\"nats-route://127.0.0.1:{}\"", route_ports[j]))
                .collect::<Vec<_>>()
                .join(", ");
            let mut text = String::new();
            let _ = write!(
                text,
                "server_name: {name}\nlisten: \"127.0.0.1:{}\"\njetstream {{\n  store_dir: {}\n}}\n\
                 cluster {{\n  name: {cluster_name}\n  listen: \"127.0.0.1:{}\"\n  routes: [{routes}]\n}}\n",
                client_ports[i],
                quoted(&store),
                route_ports[i],
            );
            std::fs::write(&config, text)
                .map_err(|e| TestkitError::io(format!("writing {}", config.display()), e))?;
            let launch = Launch::new(
                format!("nats-server {name}"),
                binary.clone(),
                dir.path().join(format!("{name}.log")),
                client_ports[i],
            )
            .arg("-c")
            .arg(&config);
            nodes.push(Node {
                name,
                proc: ServerProcess::new(launch),
            });
        }
        let cluster = NatsCluster {
            nodes,
            cluster_name,
            _dir: dir,
        };
        for node in &cluster.nodes {
            node.proc.spawn().await?;
        }
        let deadline = Instant::now() + ready_timeout(CLUSTER_READY_TIMEOUT);
        for i in 0..n {
            cluster.wait_node_answers(i, deadline).await?;
        }
        cluster.wait_can_place_stream(deadline).await?;
        Ok(cluster)
    }

    async fn wait_node_answers(&self, i: usize, deadline: Instant) -> Result<()> {
        let url = self.node_url(i);
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .max(POLL_INTERVAL);
        self.nodes[i]
            .proc
            .wait_ready(timeout, || jetstream_answers(&url))
            .await
    }

    /// Creates and deletes an R`n` memory stream: proves a meta leader exists and every peer is
    /// known to it.
    async fn wait_can_place_stream(&self, deadline: Instant) -> Result<()> {
        let n = self.nodes.len();
        let urls = self.url_list();
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .max(POLL_INTERVAL);
        self.nodes[0]
            .proc
            .wait_ready(timeout, || {
                let urls = urls.clone();
                async move {
                    let client = async_nats::ConnectOptions::new()
                        .connection_timeout(Duration::from_secs(1))
                        .connect(urls)
                        .await
                        .map_err(|e| format!("connect: {e}"))?;
                    let mut js = jetstream::new(client);
                    js.set_timeout(Duration::from_secs(2));
                    js.create_stream(jetstream::stream::Config {
                        name: READY_STREAM.to_owned(),
                        subjects: vec!["testkit.ready".to_owned()],
                        num_replicas: n,
                        storage: jetstream::stream::StorageType::Memory,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("creating an R{n} stream: {e}"))?;
                    js.delete_stream(READY_STREAM)
                        .await
                        .map_err(|e| format!("deleting the probe stream: {e}"))?;
                    Ok(())
                }
            })
            .await
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// Server name of node `i` (`n0`, `n1`, ...), as it appears in stream cluster info.
    pub fn node_name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Client URLs of all nodes, comma-joined (the form NATS_URL takes).
    pub fn urls(&self) -> String {
        self.url_list().join(",")
    }

    pub fn url_list(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| url_of(n.proc.launch.port))
            .collect()
    }

    pub fn node_url(&self, i: usize) -> String {
        url_of(self.nodes[i].proc.launch.port)
    }

    pub fn node_port(&self, i: usize) -> u16 {
        self.nodes[i].proc.launch.port
    }

    pub fn node_pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].proc.pid()
    }

    /// A client that knows every node (and fails over between them).
    pub async fn client(&self) -> Result<async_nats::Client> {
        let urls = self.url_list();
        async_nats::connect(urls.clone())
            .await
            .map_err(|e| TestkitError::nats(&urls.join(","), e))
    }

    /// A client of node `i` only.
    pub async fn node_client(&self, i: usize) -> Result<async_nats::Client> {
        let url = self.node_url(i);
        async_nats::connect(&url)
            .await
            .map_err(|e| TestkitError::nats(&url, e))
    }

    /// SIGKILL node `i`; its ports and store stay for [`restart_node`](Self::restart_node).
    pub fn kill_node(&self, i: usize) {
        self.nodes[i].proc.kill();
    }

    /// Graceful stop of node `i`.
    pub fn stop_node(&self, i: usize) {
        self.nodes[i].proc.stop(STOP_GRACE);
    }

    /// Starts node `i` again (same ports, same store) and waits until it answers JetStream
    /// requests. Use [`wait_stream_current`](Self::wait_stream_current) to wait for it to catch
    /// up on a stream.
    pub async fn restart_node(&self, i: usize) -> Result<()> {
        self.nodes[i].proc.stop(STOP_GRACE);
        self.nodes[i].proc.spawn().await?;
        self.wait_node_answers(i, Instant::now() + ready_timeout(READY_TIMEOUT))
            .await
    }

    /// Waits until `stream` has a leader and every replica is current and online.
    pub async fn wait_stream_current(&self, stream: &str, timeout: Duration) -> Result<()> {
        let js = jetstream::new(self.client().await?);
        let start = Instant::now();
        let mut last: String;
        loop {
            match js.get_stream(stream).await {
                Ok(mut s) => match s.info().await {
                    Ok(info) => {
                        let cluster = info.cluster.clone().unwrap_or_default();
                        let lagging: Vec<String> = cluster
                            .replicas
                            .iter()
                            .filter(|p| !p.current || p.offline)
                            .map(|p| p.name.clone())
                            .collect();
                        if cluster.leader.is_some() && lagging.is_empty() {
                            return Ok(());
                        }
                        last = format!("leader {:?}, not current: {lagging:?}", cluster.leader);
                    }
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            if start.elapsed() > timeout {
                return Err(TestkitError::Timeout {
                    what: format!("stream {stream} replicas to be current ({last})"),
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}
