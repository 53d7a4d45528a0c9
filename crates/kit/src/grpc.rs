//! The gRPC server every service runs: its own services plus `grpc.health.v1` and server
//! reflection in both v1 and v1alpha (grpcurl 1.8 only speaks v1alpha).

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic_health::server::HealthReporter;

/// A router with health and reflection, and the reporter that marks services serving.
/// Reflection lists `services` (the full names this server implements) and health; it can
/// still describe every jetmart type.
pub fn base(services: &[&str]) -> (HealthReporter, Router) {
    let (reporter, health) = tonic_health::server::health_reporter();
    let sets = [
        jetmart_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ];
    let mut v1 = tonic_reflection::server::Builder::configure();
    let mut v1alpha = tonic_reflection::server::Builder::configure();
    for set in sets {
        v1 = v1.register_encoded_file_descriptor_set(set);
        v1alpha = v1alpha.register_encoded_file_descriptor_set(set);
    }
    for name in services.iter().copied().chain(["grpc.health.v1.Health"]) {
        v1 = v1.with_service_name(name);
        v1alpha = v1alpha.with_service_name(name);
    }
    // The descriptor sets are generated at build time; failing here is a build defect.
    let v1 = v1
        .build_v1()
        .expect("reflection v1 from generated descriptors");
    let v1alpha = v1alpha
        .build_v1alpha()
        .expect("reflection v1alpha from generated descriptors");
    let router = Server::builder()
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha);
    (reporter, router)
}

/// Serves until `shutdown`, then lets in-flight calls finish.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    router
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}

/// INVALID_ARGUMENT naming every bad field: a `google.rpc.BadRequest` with one violation per
/// `(field, description)`, and the same list in the message for clients that ignore details.
pub fn invalid_argument<F, D>(violations: impl IntoIterator<Item = (F, D)>) -> tonic::Status
where
    F: Into<String>,
    D: Into<String>,
{
    use tonic_types::{ErrorDetails, StatusExt};
    let mut details = ErrorDetails::new();
    let mut summary = Vec::new();
    for (field, description) in violations {
        let (field, description) = (field.into(), description.into());
        summary.push(format!("{field}: {description}"));
        details.add_bad_request_violation(field, description);
    }
    tonic::Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("invalid request: {}", summary.join("; ")),
        details,
    )
}
