//! The gRPC server every service runs: its own services plus `grpc.health.v1` and server
//! reflection in both v1 and v1alpha (grpcurl 1.8 only speaks v1alpha).

use std::task::{Context, Poll};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

use crate::error::FieldViolation;

/// A router with health and reflection, and the reporter that marks services serving.
/// Reflection lists `services` (the full names this server implements) and health; it can
/// still describe every jetmart type.
/// Every service added to the router answers undecodable requests with INVALID_ARGUMENT
/// ([`InvalidMessageLayer`]).
pub fn base(services: &[&str]) -> (HealthReporter, GrpcRouter) {
    let (reporter, health) = tonic_health::server::health_reporter();
    // google.rpc's error details too, so that grpcurl can show the BadRequest of an error.
    let sets = [
        jetmart_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_types::pb::FILE_DESCRIPTOR_SET,
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
        .layer(InvalidMessageLayer)
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha);
    (reporter, router)
}

/// Serves until `shutdown`, then lets in-flight calls finish.
pub async fn serve(
    router: GrpcRouter,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    router
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}

pub use crate::error::invalid_argument;

/// The router [`base`] returns: every service behind [`InvalidMessageLayer`].
pub type GrpcRouter = Router<Stack<InvalidMessageLayer, Identity>>;

/// Turns tonic's answer to a request it could not decode (INTERNAL "failed to decode Protobuf
/// message: ...", e.g. a string field that is not UTF-8) into what it is: the client's mistake,
/// INVALID_ARGUMENT with a `BadRequest` violation naming the field
/// (`PlaceOrderRequest.lines.sku`). tonic-prost keeps only the text of prost's `DecodeError`,
/// so the field path is read back from it.
#[derive(Debug, Clone, Copy, Default)]
pub struct InvalidMessageLayer;

impl<S> tower::Layer<S> for InvalidMessageLayer {
    type Service = InvalidMessage<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InvalidMessage { inner }
    }
}

/// The service [`InvalidMessageLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub struct InvalidMessage<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for InvalidMessage<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = futures::future::MapOk<S::Future, fn(http::Response<R>) -> http::Response<R>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use futures::TryFutureExt;
        self.inner.call(request).map_ok(rewrite_decode_failure)
    }
}

const DECODE_FAILURE: &str = "failed to decode Protobuf message: ";

fn rewrite_decode_failure<R>(mut response: http::Response<R>) -> http::Response<R> {
    // tonic answers a request it cannot decode with a trailers-only response carrying the
    // Status in its extensions; a handler's own statuses travel in the body's trailers.
    let Some(status) = response.extensions().get::<tonic::Status>() else {
        return response;
    };
    if status.code() != tonic::Code::Internal {
        return response;
    }
    let Some(violation) = decode_failure_violation(status.message()) else {
        return response;
    };
    tracing::debug!(field = %violation.field, "request not decodable");
    let status = crate::error::invalid_argument([violation]);
    let headers = response.headers_mut();
    for name in [
        tonic::Status::GRPC_STATUS,
        tonic::Status::GRPC_MESSAGE,
        tonic::Status::GRPC_STATUS_DETAILS,
    ] {
        headers.remove(name);
    }
    if status.add_header(headers).is_err() {
        // Not reachable with the bounded text of invalid_argument; keep tonic's answer then.
        return response;
    }
    response.extensions_mut().insert(status);
    response
}

/// The violation a prost decode error's text names: `"failed to decode Protobuf message:
/// OrderLine.sku: PlaceOrderRequest.lines: invalid string value: ..."` (innermost field first)
/// becomes `PlaceOrderRequest.lines.sku` / `invalid string value: ...`.
fn decode_failure_violation(message: &str) -> Option<FieldViolation> {
    let mut rest = message.strip_prefix(DECODE_FAILURE)?;
    let mut stack = Vec::new();
    while let Some((head, tail)) = rest.split_once(": ") {
        let Some((message, field)) = head.split_once('.') else {
            break;
        };
        let ident =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident(message) || !ident(field) {
            break;
        }
        stack.push((message, field));
        rest = tail;
    }
    let field = match stack.last() {
        Some((outer, _)) => std::iter::once(*outer)
            .chain(stack.iter().rev().map(|(_, f)| *f))
            .collect::<Vec<_>>()
            .join("."),
        // Malformed framing with no field to name (e.g. a truncated message).
        None => "request".to_owned(),
    };
    Some(FieldViolation::new(field, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_path_runs_from_the_request_to_the_bad_field() {
        let v = decode_failure_violation(
            "failed to decode Protobuf message: OrderLine.sku: PlaceOrderRequest.lines: invalid string value: data is not UTF-8 encoded",
        )
        .unwrap();
        assert_eq!(v.field, "PlaceOrderRequest.lines.sku");
        assert_eq!(
            v.description,
            "invalid string value: data is not UTF-8 encoded"
        );
        let top = decode_failure_violation(
            "failed to decode Protobuf message: GetStockRequest.sku: invalid string value: data is not UTF-8 encoded",
        )
        .unwrap();
        assert_eq!(top.field, "GetStockRequest.sku");
        let framing =
            decode_failure_violation("failed to decode Protobuf message: invalid varint").unwrap();
        assert_eq!(framing.field, "request");
        assert_eq!(framing.description, "invalid varint");
        assert!(decode_failure_violation("database down").is_none());
    }
}
