//! W3C trace context across NATS: inject the active span into outgoing events, continue it
//! from incoming ones.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// `(traceparent, tracestate)` of the active span, when tracing is exporting.
pub(crate) fn current_traceparent() -> Option<(String, Option<String>)> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    let parent = carrier.remove("traceparent")?;
    let state = carrier.remove("tracestate").filter(|s| !s.is_empty());
    Some((parent, state))
}

/// Makes `span` a child of the remote span named by `traceparent`.
pub(crate) fn continue_from(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(parent) = traceparent else { return };
    let carrier = HashMap::from([("traceparent".to_owned(), parent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    // Fails only when no OpenTelemetry layer is installed; then there is nothing to continue.
    let _ = span.set_parent(cx);
}
