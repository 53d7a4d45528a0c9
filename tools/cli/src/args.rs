//! The command line: every subcommand, its help and its examples.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

const TOP_EXAMPLES: &str = "\
Examples:
  jetmartctl dlq list
  jetmartctl dlq show 42
  jetmartctl dlq replay 42
  jetmartctl dlq replay --all --consumer payment
  jetmartctl streams
  jetmartctl rebuild order --database-url postgres://order@db/order
  jetmartctl demo-orders --order-url http://localhost:50051 --count 50 --rate 5
  jetmartctl smoke --order-url http://order:50051 --health-url http://order:50051 --timeout 120s

Exit status:
  0  done
  1  failed: not found, refused, smoke test failed, or NATS / Postgres / Redis / gRPC error
  2  usage error: unknown command, missing or malformed argument (clap's usual code)";

#[derive(Debug, Parser)]
#[command(
    name = "jetmartctl",
    version,
    about = "Operate jetmart: dead letters, streams and consumers, read-model rebuilds, demo orders, smoke test",
    long_about = "Operate jetmart: dead letters, streams and consumers, read-model rebuilds, demo orders \
and the smoke test.\n\n\
jetmart's services exchange events over NATS JetStream (one stream per publishing context: ORDER, \
INVENTORY, PAYMENT, NOTIFICATION, SURVEY). A message a service cannot handle is copied to the \
DEADLETTER stream as deadletter.<service>.<original subject>, with the reason, the error and the \
delivery count; `jetmartctl dlq` inspects those and puts fixed ones back. Commands that talk to \
NATS use --nats-url (env NATS_URL; a comma-separated list names the nodes of a cluster) and the \
optional credentials below.",
    after_help = TOP_EXAMPLES,
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach NATS. Global: accepted before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated for a cluster (any node is a way in).
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true,
        global = true,
        help_heading = "NATS"
    )]
    pub nats_url: String,
    /// NATS credentials file (JWT + nkey).
    #[arg(long, env = "NATS_CREDS_FILE", global = true, help_heading = "NATS")]
    pub nats_creds_file: Option<PathBuf>,
    /// NATS user (with --nats-password).
    #[arg(
        long,
        env = "NATS_USER",
        global = true,
        requires = "nats_password",
        help_heading = "NATS"
    )]
    pub nats_user: Option<String>,
    /// NATS password (with --nats-user).
    #[arg(
        long,
        env = "NATS_PASSWORD",
        hide_env_values = true,
        global = true,
        requires = "nats_user",
        help_heading = "NATS"
    )]
    pub nats_password: Option<String>,
    /// CA bundle to verify the NATS server; enables TLS.
    #[arg(long, env = "NATS_TLS_CA_FILE", global = true, help_heading = "NATS")]
    pub nats_tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dead letters: list, show, replay, purge.
    #[command(
        long_about = "Dead letters: messages a service could not handle, kept in the DEADLETTER stream.\n\n\
Each is stored as deadletter.<service>.<original subject> with the original headers and payload plus \
jetmart-dlq-reason (undecodable | permanent | max_deliver), jetmart-dlq-error, jetmart-dlq-delivered, \
jetmart-dlq-stream and jetmart-dlq-stream-seq. A dead letter is named by its sequence number in the \
DEADLETTER stream (the SEQ column of `dlq list`), which `show` and `replay` take.",
        after_help = "Examples:\n  jetmartctl dlq list --consumer payment\n  jetmartctl dlq show 7\n  \
jetmartctl dlq replay 7\n  jetmartctl dlq replay --all --subject-filter 'order.placed.*'\n  jetmartctl dlq purge --consumer analytics --yes",
        subcommand_required = true,
        arg_required_else_help = true
    )]
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Streams and durable consumers: messages, pending, ack pending, redeliveries, last activity.
    #[command(
        long_about = "Streams and durable consumers.\n\n\
Per stream: messages, bytes, first and last sequence. Per durable consumer (named after the \
consuming service): PENDING = messages in the stream not yet delivered to it; ACK_PENDING = delivered, \
not yet acknowledged (being handled, or waiting for a retry); REDELIVERED = messages delivered more \
than once and still unacknowledged; LAST_ACTIVE = when it was last delivered a message. Then the same \
summed per service, with the service's dead letters. Ephemeral consumers (tools, rebuild replays) are \
left out unless --all.",
        after_help = "Examples:\n  jetmartctl streams\n  NATS_URL=nats://n0:4222,nats://n1:4222 jetmartctl streams --all"
    )]
    Streams(StreamsArgs),
    /// Rebuild a read model from its source of truth.
    #[command(
        long_about = "Rebuild a read model from its source of truth, without downtime.\n\n\
`order` rebuilds the order read model (order_view) from the order event store beside the live table \
and swaps it in. `analytics` replays every stream into a fresh Redis keyspace beside the live one, \
swaps it in and deletes the old one. Both are safe while the services run.",
        after_help = "Examples:\n  jetmartctl rebuild order --database-url postgres://order:pw@localhost/order\n  \
jetmartctl rebuild analytics --redis-url redis://localhost:6379/1",
        subcommand_required = true,
        arg_required_else_help = true
    )]
    Rebuild {
        #[command(subcommand)]
        target: RebuildTarget,
    },
    /// Place demo orders through the order service (SKUs of the demo catalog).
    #[command(
        long_about = "Place demo orders through the order service's PlaceOrder, with random customers, SKUs \
and quantities from the demo catalog (seed the inventory with `jetmart-inventory seed-demo` first). \
A share of orders is meant to be declined by payment (token tok_decline) or to run out of stock. The \
same --seed gives the same orders and the same idempotency keys, so re-running with one seed places \
nothing new. Prints a summary; --wait also waits for every order to be confirmed or cancelled.",
        after_help = "Examples:\n  jetmartctl demo-orders --order-url http://localhost:50051\n  \
jetmartctl demo-orders --order-url http://localhost:50051 --count 200 --rate 20 --seed 7 --wait"
    )]
    DemoOrders(DemoArgs),
    /// End-to-end smoke test: every service healthy, then one order until CONFIRMED.
    #[command(
        long_about = "End-to-end smoke test (the Helm test hook and Tilt run it).\n\n\
1. Calls grpc.health.v1 Check(\"\") on every --health-url until each answers SERVING.\n\
2. Places one order through --order-url: one unit of a demo-catalog SKU, paid with token tok_visa.\n\
3. Polls GetOrder until the order is CONFIRMED.\n\n\
Each step is printed. Exit 0 when the order is CONFIRMED; exit 1 with the reason when a service is not \
SERVING, the order is cancelled, or --timeout (for the whole run) passes first.",
        after_help = "Examples:\n  jetmartctl smoke --order-url http://localhost:50051 --health-url http://localhost:50051 \
--health-url http://localhost:50052 --timeout 120s\n\nDurations: 120s, 2m, 1500ms, or plain seconds."
    )]
    Smoke(SmokeArgs),
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// One line per dead letter: SEQ, time, consumer, reason, deliveries, original subject, error.
    #[command(
        long_about = "List dead letters, oldest first, one per line: SEQ (its sequence in DEADLETTER, the id \
`show` and `replay` take), when it was dead-lettered, the consumer (service) that gave up, the reason \
(undecodable | permanent | max_deliver), how many deliveries it had, the original subject and the \
error (truncated; `show` prints it whole).",
        after_help = "Examples:\n  jetmartctl dlq list\n  jetmartctl dlq list --consumer payment --limit 20\n  \
jetmartctl dlq list --subject-filter 'inventory.reserved.*'"
    )]
    List(ListArgs),
    /// Headers, error and the payload decoded as its protobuf type.
    #[command(
        long_about = "Show one dead letter: where it came from, why it failed, every header, and the payload \
decoded as the protobuf message its ce-type names (printed as JSON with proto field names). A payload \
that does not decode is shown as a hex dump with the decode error. An unknown SEQ prints \
\"dead letter <SEQ> not found\" and exits 1.",
        after_help = "Examples:\n  jetmartctl dlq show 7"
    )]
    Show {
        /// The dead letter's sequence in the DEADLETTER stream (SEQ in `dlq list`).
        seq: u64,
    },
    /// Put dead letters back on their original subject so their consumer handles them again.
    #[command(
        long_about = "Replay dead letters: republish each to its original subject (so it lands in its \
original stream again) with its original headers and payload, minus the jetmart-dlq-* headers; once \
JetStream has stored it, delete the dead letter from DEADLETTER. Fix the cause first.\n\n\
Every consumer of that subject receives the event again, not only the one that dead-lettered it. \
Consumers that already handled it skip it: each records the event's ce-id in the same transaction as \
its effect (the runtime's processed record), so a second delivery has no effect.\n\n\
Replaying twice is harmless, twice over: the republished copy carries Nats-Msg-Id \
replay:<ce-id> (replay:<ce-id>:<n> for the n-th replay of an event that was dead-lettered again after \
a replay; replay:dlq-<SEQ> when the message has no ce-id), so JetStream drops a second copy within its \
duplicate window (10 minutes); and after that window consumers still deduplicate by ce-id.",
        after_help = "Examples:\n  jetmartctl dlq replay 7\n  jetmartctl dlq replay 7 8 9\n  \
jetmartctl dlq replay --all --consumer payment\n  jetmartctl dlq replay --all --subject-filter 'order.placed.*'"
    )]
    Replay(ReplayArgs),
    /// Delete dead letters for good (asks for confirmation).
    #[command(
        long_about = "Delete the dead letters that match (all of them without filters). Asks for \
confirmation on a terminal; without a terminal it refuses unless --yes. Only the dead letters that \
existed when it counted them are deleted, never one that arrives meanwhile.",
        after_help = "Examples:\n  jetmartctl dlq purge\n  jetmartctl dlq purge --consumer analytics --yes"
    )]
    Purge(PurgeArgs),
}

/// Which dead letters: by the consumer that gave up and by the original subject.
#[derive(Debug, Clone, Default, Args)]
pub struct Filter {
    /// Only dead letters of this consumer (service), e.g. payment.
    #[arg(long, value_parser = parse_token)]
    pub consumer: Option<String>,
    /// Only dead letters whose original subject matches this NATS filter, e.g. 'order.placed.*' or 'inventory.>'.
    #[arg(long, value_parser = parse_subject_filter)]
    pub subject_filter: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: Filter,
    /// Show at most this many (the oldest first).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Sequence(s) in the DEADLETTER stream (SEQ in `dlq list`).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub seqs: Vec<u64>,
    /// Replay every dead letter that matches --consumer / --subject-filter (all without them).
    #[arg(long)]
    pub all: bool,
    /// With --all: only this consumer's dead letters.
    #[arg(long, value_parser = parse_token, conflicts_with = "seqs")]
    pub consumer: Option<String>,
    /// With --all: only dead letters whose original subject matches this NATS filter.
    #[arg(long, value_parser = parse_subject_filter, conflicts_with = "seqs")]
    pub subject_filter: Option<String>,
}

impl ReplayArgs {
    pub fn filter(&self) -> Filter {
        Filter {
            consumer: self.consumer.clone(),
            subject_filter: self.subject_filter.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub filter: Filter,
    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Also show ephemeral consumers (tools, rebuild replays).
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum RebuildTarget {
    /// Rebuild the order read model from the order event store (Postgres).
    #[command(
        long_about = "Rebuild the order read model: build order_view_next from order_events while the live \
view keeps serving, catch up under a short lock and swap it in. Runs the order service's `jetmart-order \
rebuild-projection` (found beside jetmartctl, as in the image, or on PATH).",
        after_help = "Examples:\n  jetmartctl rebuild order --database-url postgres://order:pw@localhost:5432/order"
    )]
    Order {
        /// The order service's database.
        #[arg(long, env = "ORDER_DATABASE_URL", hide_env_values = true, value_parser = parse_postgres_url)]
        database_url: String,
    },
    /// Rebuild the analytics read model (Redis) by replaying every stream.
    #[command(
        long_about = "Rebuild the analytics read model: replay every business stream from its start into a \
fresh Redis keyspace beside the live one, swap it in, delete the old one (as `jetmart-analytics rebuild`). \
Live analytics consumers keep counting meanwhile; two rebuilds exclude each other. Needs NATS (--nats-url).",
        after_help = "Examples:\n  jetmartctl rebuild analytics --redis-url redis://localhost:6379/1"
    )]
    Analytics {
        /// The analytics service's Redis.
        #[arg(long, env = "ANALYTICS_REDIS_URL", hide_env_values = true, value_parser = parse_redis_url)]
        redis_url: String,
        /// Lifetime of the exactly-once markers; use the service's ANALYTICS_MARKER_TTL_SECS.
        #[arg(long, env = "ANALYTICS_MARKER_TTL_SECS", default_value_t = 8 * 24 * 3600,
              value_parser = clap::value_parser!(u64).range(60..=365 * 24 * 3600))]
        marker_ttl_secs: u64,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The order service's gRPC endpoint.
    #[arg(long, env = "ORDER_URL", default_value = "http://127.0.0.1:50051", value_parser = parse_http_url)]
    pub order_url: String,
    /// Orders to place.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub count: u64,
    /// Orders per second (default: as fast as --concurrency allows).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Seed of customers, SKUs and quantities (default: random, printed in the summary).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub concurrency: u64,
    /// Share of orders paid with a declining token.
    #[arg(long, default_value_t = 0.05, value_parser = parse_share)]
    pub decline_share: f64,
    /// Share of orders asking for more of a scarce SKU than exists.
    #[arg(long, default_value_t = 0.05, value_parser = parse_share)]
    pub out_of_stock_share: f64,
    /// Then wait (up to --wait-timeout) until every order is confirmed or cancelled, and count them.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub wait_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct SmokeArgs {
    /// The order service's gRPC endpoint (the order is placed here).
    #[arg(long, value_parser = parse_http_url)]
    pub order_url: String,
    /// A gRPC endpoint whose grpc.health.v1 Check("") must answer SERVING; repeat for every service.
    #[arg(long = "health-url", value_parser = parse_http_url)]
    pub health_urls: Vec<String>,
    /// Time for the whole run (health checks, placing, confirmation): 120s, 2m, 1500ms, or plain seconds.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The SKU to order (default: the demo-catalog SKU with the most stock).
    #[arg(long)]
    pub sku: Option<String>,
    /// Payment token of the order.
    #[arg(long, default_value = "tok_visa")]
    pub payment_token: String,
}

/// A single subject token: a consumer (service) name.
pub fn parse_token(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains(['.', '*', '>', ' ', '\t']) {
        return Err("a consumer name is one subject token: no '.', '*', '>' or spaces".into());
    }
    Ok(s.to_owned())
}

/// A NATS subject filter: dot-separated tokens, `*` for one token, `>` for the rest.
pub fn parse_subject_filter(s: &str) -> Result<String, String> {
    let tokens: Vec<&str> = s.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() || t.contains([' ', '\t']) {
            return Err(format!(
                "{s:?} is not a subject filter (empty token or space)"
            ));
        }
        if t.len() > 1 && t.contains(['*', '>']) {
            return Err(format!(
                "{s:?}: wildcards stand alone as a token ('order.*', not 'order*')"
            ));
        }
        if *t == ">" && i != tokens.len() - 1 {
            return Err(format!("{s:?}: '>' can only be the last token"));
        }
    }
    Ok(s.to_owned())
}

/// `120s`, `2m`, `1h`, `1500ms`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 120s, 2m, 1500ms)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 7.0 * 24.0 * 3600.0 {
        return Err(format!("{s:?} must be positive and at most a week"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err("a positive number of orders per second".into()),
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err("a share between 0 and 1".into()),
    }
}

fn parse_http_url(s: &str) -> Result<String, String> {
    if (s.starts_with("http://") || s.starts_with("https://")) && s.len() > "https://".len() {
        Ok(s.to_owned())
    } else {
        Err("a gRPC endpoint such as http://order:50051".into())
    }
}

fn parse_postgres_url(s: &str) -> Result<String, String> {
    jetmart_kit::config::require_postgres_url("--database-url", s)
        .map(|()| s.to_owned())
        .map_err(|e| e.problem)
}

fn parse_redis_url(s: &str) -> Result<String, String> {
    jetmart_kit::config::require_redis_url("--redis-url", s)
        .map(|()| s.to_owned())
        .map_err(|e| e.problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("120s").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "s", "0s", "-1s", "5d", "abc", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subject_filters_and_tokens() {
        for good in ["order.placed.*", "inventory.>", ">", "a.b.c"] {
            parse_subject_filter(good).unwrap();
        }
        for bad in ["", "order..placed", "order.>.x", "order*", "a b"] {
            assert!(parse_subject_filter(bad).is_err(), "{bad:?}");
        }
        parse_token("payment").unwrap();
        for bad in ["", "a.b", "*", ">", "a b"] {
            assert!(parse_token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn replay_needs_seqs_or_all_and_filters_need_all() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("jetmartctl").chain(args.iter().copied()))
        };
        assert!(parse(&["dlq", "replay"]).is_err());
        assert!(parse(&["dlq", "replay", "1", "--all"]).is_err());
        assert!(parse(&["dlq", "replay", "1", "--consumer", "x"]).is_err());
        assert!(parse(&["dlq", "replay", "--consumer", "x"]).is_err());
        assert!(parse(&["dlq", "replay", "--all", "--consumer", "x"]).is_ok());
        assert!(parse(&["dlq", "replay", "1", "2"]).is_ok());
        assert!(parse(&["dlq", "show", "abc"]).is_err());
        assert!(parse(&["dlq", "list", "--limit", "0"]).is_err());
        // Global NATS settings after the subcommand too.
        let cli = parse(&["dlq", "list", "--nats-url", "nats://a:1,nats://b:2"]).unwrap();
        assert_eq!(cli.nats.nats_url, "nats://a:1,nats://b:2");
    }
}
