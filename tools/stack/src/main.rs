//! `jetmart-stack`: the whole system locally, in the foreground, with a demo order flowing
//! through it. Ctrl-C stops every process it started and removes their data.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use jetmart_proto::common::v1::{Money, OrderLine};
use jetmart_proto::order::v1::order_service_client::OrderServiceClient;
use jetmart_proto::order::v1::{GetOrderRequest, OrderStatus, PlaceOrderRequest};
use jetmart_stack::{Infra, InfraOptions, SERVICES, ServiceProcess};

#[derive(Debug, Parser)]
#[command(
    name = "jetmart-stack",
    version,
    about = "Run jetmart locally: NATS, Postgres, Redis, an SMTP sink and every service"
)]
struct Args {
    /// First gRPC port; services get consecutive ports (order, inventory, payment, notification, survey, analytics).
    #[arg(long, default_value_t = 50051)]
    grpc_port: u16,
    /// First HTTP port (/healthz, /readyz, /metrics, dashboards), consecutive like the gRPC ports.
    #[arg(long, default_value_t = 8081)]
    http_port: u16,
    /// Where service logs and received mail are kept.
    #[arg(long, default_value = ".local/stack")]
    dir: PathBuf,
    /// Place a demo order and follow it to its end.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    demo: bool,
    /// Start, run the demo, then stop (no waiting for Ctrl-C).
    #[arg(long)]
    once: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let logs = args.dir.join("logs");
    let maildir = args.dir.join("mail");
    std::fs::create_dir_all(&logs)?;
    println!("jetmart local stack (logs in {})", logs.display());
    let infra = Infra::start(&InfraOptions {
        nats_nodes: 1,
        maildir: maildir.clone(),
    })
    .await?;
    println!("  NATS        {}", infra.nats.url());
    println!("  Postgres    {}", infra.pg.admin_url());
    println!("  Redis       {}", infra.redis.url());
    println!(
        "  SMTP sink   {} (mail in {})",
        infra.smtp.url(),
        infra.smtp.maildir().join("new").display()
    );

    let mut services = Vec::new();
    for (i, kind) in SERVICES.iter().enumerate() {
        let (grpc, http) = (args.grpc_port + i as u16, args.http_port + i as u16);
        match ServiceProcess::new(*kind, 0, grpc, http, infra.env(kind, 1), &logs) {
            Ok(p) => services.push(p),
            Err(e) => println!("  {:<11} not in this build ({e})", kind.name),
        }
    }
    if let Some(inventory) = services.iter().find(|s| s.kind.name == "inventory") {
        inventory.run_command(&["migrate"]).await?;
        let seeded = inventory.run_command(&["seed-demo"]).await?;
        println!(
            "  catalog     {}",
            seeded.lines().next().unwrap_or("seeded")
        );
    }
    for s in &mut services {
        s.spawn()?;
    }
    for s in &mut services {
        s.wait_ready(Duration::from_secs(60)).await?;
        println!(
            "  {:<11} grpc localhost:{}  http localhost:{}  ready",
            s.kind.name, s.grpc, s.http
        );
    }

    if args.demo
        && let Err(e) = demo(args.grpc_port, &infra).await
    {
        println!("demo failed: {e:#}");
    }
    println!("\nTry:");
    println!("  grpcurl -plaintext localhost:{} list", args.grpc_port);
    println!(
        "  grpcurl -plaintext localhost:{} describe jetmart.order.v1.OrderService",
        args.grpc_port
    );
    println!(
        "  ls {}   # received emails",
        infra.smtp.maildir().join("new").display()
    );
    println!(
        "  open http://localhost:{}/   # live analytics dashboard",
        args.http_port + 5
    );
    if !args.once {
        println!("\nRunning. Ctrl-C stops everything.");
        wait_for_signal().await;
    }
    println!("stopping...");
    for s in services.iter_mut().rev() {
        let status = s.stop(Duration::from_secs(15)).await;
        println!(
            "  {:<11} {}",
            s.kind.name,
            status.map_or("killed".into(), |st| st.to_string())
        );
    }
    drop(infra);
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn demo(order_port: u16, infra: &Infra) -> anyhow::Result<()> {
    let mut client = OrderServiceClient::connect(format!("http://127.0.0.1:{order_port}")).await?;
    let eur = |minor| {
        Some(Money {
            amount_minor: minor,
            currency: "EUR".into(),
        })
    };
    let req = PlaceOrderRequest {
        idempotency_key: uuid::Uuid::now_v7().to_string(),
        customer_id: "demo-customer".into(),
        customer_email: "ada@example.com".into(),
        lines: vec![
            OrderLine {
                sku: "SKU-0001".into(),
                quantity: 2,
                unit_price: eur(1999),
            },
            OrderLine {
                sku: "SKU-0002".into(),
                quantity: 1,
                unit_price: eur(4500),
            },
        ],
        payment_token: "tok_visa".into(),
        currency: "EUR".into(),
    };
    let started = Instant::now();
    let placed = client
        .place_order(req)
        .await?
        .into_inner()
        .order
        .context("no order in the response")?;
    println!(
        "\ndemo order {} placed: {:?}",
        placed.order_id,
        placed.status()
    );
    let mut last = placed.status();
    let mut version = placed.version;
    while !matches!(last, OrderStatus::Confirmed | OrderStatus::Cancelled) {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "order still {last:?} after 30 s"
        );
        // Read-your-writes: wait for the next version of the read model.
        let req = GetOrderRequest {
            order_id: placed.order_id.clone(),
            min_version: Some(version + 1),
        };
        match client.get_order(req).await {
            Ok(r) => {
                let o = r.into_inner().order.context("no order")?;
                version = o.version;
                if o.status() != last {
                    last = o.status();
                    println!(
                        "  -> {:?} after {} ms {}",
                        last,
                        started.elapsed().as_millis(),
                        o.cancel_detail
                    );
                }
            }
            Err(s) if s.code() == tonic::Code::Unavailable => {}
            Err(s) => return Err(s.into()),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut shown = 0;
    while Instant::now() < deadline {
        let mails = infra.smtp.try_messages().unwrap_or_default();
        for m in mails.iter().skip(shown) {
            println!(
                "  email to {:?}: {:?}",
                m.to,
                m.subject.as_deref().unwrap_or("")
            );
            if let Some(link) = m.text.split_whitespace().find(|w| w.contains("/s/")) {
                println!("    survey link (opens the answer form): {link}");
            }
        }
        shown = mails.len();
        if shown >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
