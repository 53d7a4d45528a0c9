//! The kubelet's probes, run from the host against the container's address on the Docker network
//! (httpGet, tcpSocket, native gRPC health) or inside the container (exec).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::docker::Docker;
use crate::plan::{ProbeAction, ProbePlan};

/// One probe attempt: Ok, or why it failed.
pub async fn check(
    p: &ProbePlan,
    ip: &str,
    container: &str,
    docker: &Docker,
) -> Result<(), String> {
    let timeout = Duration::from_secs(p.timeout_secs);
    match &p.action {
        ProbeAction::Http { path, port } => http(ip, *port, path, timeout).await,
        ProbeAction::Tcp { port } => tokio::time::timeout(timeout, TcpStream::connect((ip, *port)))
            .await
            .map_err(|_| format!("tcp {port}: timed out"))?
            .map(|_| ())
            .map_err(|e| format!("tcp {port}: {e}")),
        ProbeAction::Grpc { port, service } => grpc(ip, *port, service, timeout).await,
        ProbeAction::Exec { command } => match docker.exec(container, command, timeout).await {
            Ok(0) => Ok(()),
            Ok(code) => Err(format!("exec {command:?}: exit {code}")),
            Err(e) => Err(format!("exec {command:?}: {e:#}")),
        },
    }
}

/// GET like the kubelet: success is a status in 200..400.
async fn http(ip: &str, port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        let mut s = TcpStream::connect((ip, port))
            .await
            .map_err(|e| e.to_string())?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.35\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        // The status line is enough; read until it is complete.
        while !buf.contains(&b'\n') {
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                format!(
                    "no HTTP status line: {:?}",
                    line.lines().next().unwrap_or("")
                )
            })?;
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("GET :{port}{path}: timed out"))?
        .map_err(|e| format!("GET :{port}{path}: {e}"))
}

/// grpc.health.v1.Health/Check, as the kubelet's native gRPC probe.
async fn grpc(ip: &str, port: u16, service: &str, timeout: Duration) -> Result<(), String> {
    let url = format!("http://{ip}:{port}");
    let attempt = async {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let resp = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        match resp.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(format!("status {}", other.as_str_name())),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("grpc health {url} service {service:?}: timed out"))?
        .map_err(|e| format!("grpc health {url} service {service:?}: {e}"))
}
