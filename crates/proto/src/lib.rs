//! Protobuf messages and gRPC clients/servers of every jetmart context, generated at build time
//! from the workspace's `proto/` tree (see `build.rs`).
//!
//! Module paths mirror the proto packages: `jetmart.order.v1` is [`order::v1`]. Every message
//! implements [`prost::Name`]; its `full_name()` (e.g. `jetmart.order.v1.OrderPlaced`) is the
//! CloudEvents `ce-type` of the event it is published as. Well-known types come from `prost_types`.
//! Clients live in `<svc>_service_client`, servers in `<svc>_service_server` of each `v1` module.

/// Declares `pub mod <context> { pub mod v1 { <generated code> } }` for each context.
macro_rules! generated {
    ($($context:ident => $file:literal),+ $(,)?) => {
        $(
            #[doc = concat!("The `jetmart.", stringify!($context), "` contracts.")]
            pub mod $context {
                #[doc = concat!("Package `jetmart.", stringify!($context), ".v1`.")]
                #[allow(
                    clippy::all,
                    clippy::pedantic,
                    clippy::nursery,
                    missing_docs,
                    rustdoc::all,
                    unreachable_pub
                )]
                pub mod v1 {
                    include!(concat!(env!("OUT_DIR"), "/", $file));
                }
            }
        )+
    };
}

generated! {
    common => "jetmart.common.v1.rs",
    order => "jetmart.order.v1.rs",
    inventory => "jetmart.inventory.v1.rs",
    payment => "jetmart.payment.v1.rs",
    notification => "jetmart.notification.v1.rs",
    survey => "jetmart.survey.v1.rs",
    analytics => "jetmart.analytics.v1.rs",
}

/// A message published on a JetStream stream. Its CloudEvents `ce-type` is
/// [`prost::Name::full_name`] (`jetmart.<context>.v1.<Message>`) and its subject is
/// `<SUBJECT_PREFIX>.<aggregate-id>`.
pub trait Event: prost::Message + prost::Name + Default {
    /// `<context>.<event>`, e.g. `order.placed`: the subject without the aggregate id.
    const SUBJECT_PREFIX: &'static str;
}

/// Static description of one event type, for code that handles events generically
/// (dispatch tables, dead-letter tooling, stream provisioning checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventType {
    /// The `ce-type`, the message's full proto name.
    pub type_name: &'static str,
    /// `<context>.<event>`; subjects are `<subject_prefix>.<aggregate-id>`.
    pub subject_prefix: &'static str,
}

/// Implements [`Event`] for each listed message and lists them all in [`EVENT_TYPES`].
macro_rules! events {
    ($($context:ident :: $message:ident => $subject:literal),+ $(,)?) => {
        $(
            impl Event for $context::v1::$message {
                const SUBJECT_PREFIX: &'static str = $subject;
            }
        )+

        /// Every event type, in saga order per context. `type_name` is spelled out from the
        /// naming convention; a test checks it against the generated `prost::Name`.
        pub const EVENT_TYPES: &[EventType] = &[$(
            EventType {
                type_name: concat!("jetmart.", stringify!($context), ".v1.", stringify!($message)),
                subject_prefix: $subject,
            },
        )+];

        /// `(full_name(), SUBJECT_PREFIX)` from the trait impls, in EVENT_TYPES order.
        #[cfg(test)]
        fn registered_events() -> Vec<(String, &'static str)> {
            vec![$((
                <$context::v1::$message as prost::Name>::full_name(),
                <$context::v1::$message as Event>::SUBJECT_PREFIX,
            )),+]
        }
    };
}

events! {
    order::OrderPlaced => "order.placed",
    order::OrderConfirmed => "order.confirmed",
    order::OrderCancelled => "order.cancelled",
    inventory::StockReserved => "inventory.reserved",
    inventory::StockRejected => "inventory.rejected",
    inventory::StockReleased => "inventory.released",
    inventory::StockCommitted => "inventory.committed",
    inventory::StockLow => "inventory.low",
    inventory::StockAdjusted => "inventory.adjusted",
    payment::PaymentAuthorized => "payment.authorized",
    payment::PaymentDeclined => "payment.declined",
    payment::PaymentCaptured => "payment.captured",
    payment::PaymentVoided => "payment.voided",
    notification::NotificationSent => "notification.sent",
    notification::NotificationFailed => "notification.failed",
    survey::SurveyRequested => "survey.requested",
    survey::SurveyCompleted => "survey.completed",
}

/// Encoded `google.protobuf.FileDescriptorSet` of every jetmart proto file plus its imports,
/// for `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/jetmart_descriptor.binpb"));

/// Full names of every gRPC service defined here, e.g. for health status registration.
pub const SERVICE_NAMES: &[&str] = &[
    "jetmart.order.v1.OrderService",
    "jetmart.inventory.v1.InventoryService",
    "jetmart.payment.v1.PaymentService",
    "jetmart.notification.v1.NotificationService",
    "jetmart.survey.v1.SurveyService",
    "jetmart.analytics.v1.AnalyticsService",
];

#[cfg(test)]
mod tests {
    use super::*;
    use prost::{Message, Name};

    #[test]
    fn event_full_names_and_subjects_follow_the_conventions() {
        let registered = registered_events();
        assert_eq!(registered.len(), 17);
        assert_eq!(registered.len(), EVENT_TYPES.len());
        for ((full_name, prefix), ty) in registered.iter().zip(EVENT_TYPES) {
            assert_eq!(full_name, ty.type_name);
            assert_eq!(*prefix, ty.subject_prefix);
            // jetmart.<context>.v1.<Message> is published under <context>.<event>.
            let context = ty.type_name.split('.').nth(1).unwrap();
            let (subject_context, event) = prefix.split_once('.').unwrap();
            assert_eq!(
                subject_context, context,
                "{prefix} is not on {context}'s stream"
            );
            assert!(!event.is_empty() && !event.contains('.'), "{prefix}");
        }
        // Spelled out literally once, so a broken macro cannot make the loop vacuous.
        assert_eq!(
            order::v1::OrderPlaced::full_name(),
            "jetmart.order.v1.OrderPlaced"
        );
        assert_eq!(
            <order::v1::OrderPlaced as Event>::SUBJECT_PREFIX,
            "order.placed"
        );
        assert_eq!(order::v1::OrderPlaced::PACKAGE, "jetmart.order.v1");
        assert_eq!(order::v1::OrderPlaced::NAME, "OrderPlaced");
    }

    #[test]
    fn descriptor_set_decodes_and_holds_every_service_and_event() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
            .expect("FILE_DESCRIPTOR_SET decodes");
        let services: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |s| format!("{}.{}", f.package(), s.name()))
            })
            .collect();
        for name in SERVICE_NAMES {
            assert!(
                services.iter().any(|s| s == name),
                "{name} missing from {services:?}"
            );
        }
        assert_eq!(
            services.len(),
            SERVICE_NAMES.len(),
            "SERVICE_NAMES out of date: {services:?}"
        );

        let messages: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| {
                f.message_type
                    .iter()
                    .map(move |m| format!("{}.{}", f.package(), m.name()))
            })
            .collect();
        for event in EVENT_TYPES.iter().map(|e| e.type_name) {
            assert!(
                messages.iter().any(|m| m == event),
                "{event} missing from the descriptor set"
            );
        }
        // Every message declared in an events.proto is an Event (and so name-checked), and only those.
        let mut declared_events: Vec<String> = fds
            .file
            .iter()
            .filter(|f| f.name().ends_with("/events.proto"))
            .flat_map(|f| {
                f.message_type
                    .iter()
                    .map(move |m| format!("{}.{}", f.package(), m.name()))
            })
            .collect();
        declared_events.sort();
        let mut listed: Vec<&str> = EVENT_TYPES.iter().map(|e| e.type_name).collect();
        listed.sort_unstable();
        assert_eq!(declared_events, listed);

        // Imports are included so reflection can resolve google.protobuf.Timestamp.
        assert!(
            fds.file
                .iter()
                .any(|f| f.name() == "google/protobuf/timestamp.proto")
        );
    }

    #[test]
    fn reflection_servers_build_from_the_descriptor_set() {
        // jetmart-kit registers this set and treats a failure as a build defect: catch it here.
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("reflection v1");
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .expect("reflection v1alpha");
    }

    #[test]
    fn event_round_trips_and_tolerates_unknown_fields() {
        use common::v1::{Money, OrderLine};
        let placed = order::v1::OrderPlaced {
            order_id: "0190c3a4-0000-7000-8000-000000000001".into(),
            customer_id: "c-1".into(),
            customer_email: "c1@example.test".into(),
            lines: vec![OrderLine {
                sku: "SKU-1".into(),
                quantity: 2,
                unit_price: Some(Money {
                    amount_minor: 1250,
                    currency: "EUR".into(),
                }),
            }],
            total: Some(Money {
                amount_minor: 2500,
                currency: "EUR".into(),
            }),
            payment_token: "tok".into(),
            placed_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
        };
        let mut bytes = placed.encode_to_vec();
        assert_eq!(
            order::v1::OrderPlaced::decode(bytes.as_slice()).unwrap(),
            placed
        );

        // A field added by a newer producer (number 99, string) is skipped by older consumers.
        prost::encoding::string::encode(99, &"from the future".to_string(), &mut bytes);
        assert_eq!(
            order::v1::OrderPlaced::decode(bytes.as_slice()).unwrap(),
            placed
        );
    }

    #[test]
    fn enums_have_unspecified_zero_values() {
        assert_eq!(
            order::v1::OrderStatus::default(),
            order::v1::OrderStatus::Unspecified
        );
        assert_eq!(
            order::v1::CancelReason::default(),
            order::v1::CancelReason::Unspecified
        );
        assert_eq!(
            order::v1::CancelReason::OutOfStock.as_str_name(),
            "CANCEL_REASON_OUT_OF_STOCK"
        );
        assert_eq!(
            payment::v1::PaymentStatus::default(),
            payment::v1::PaymentStatus::Unspecified
        );
    }
}
