//! Periodic reconciliation: events that the bus acknowledged and then lost (as JetStream may
//! on power loss without `sync_interval: always`) leave the gateway short; reconciliation finds
//! the gap against the marketplace's records, repairs it exactly once, reports it, and never
//! "repairs" events that are merely on their way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agriportal_platform::auth::Role;
use agriportal_platform::bus::{
    Bus, BusError, BusKind, Consumer, ConsumerSpec, Message, PublishAck,
};
use agriportal_platform::reference::Partner;
use agriportal_platform::storage::Database;
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::marketplace::v1 as pb;
use agriportal_proto::marketplace::v1::marketplace_audit_client::MarketplaceAuditClient;
use async_trait::async_trait;
use serde_json::Value;
use tonic::Code;

use agriportal_gateway::Gateway;

use crate::support::{spawn_app_with_bus, Mode, TestApp};

/// A bus that acknowledges every publish but silently drops the marketplace events `lose` picks: the
/// marketplace marks them sent, and no consumer ever sees them.
struct LossyBus {
    inner: Arc<dyn Bus>,
    published: AtomicUsize,
    lose: fn(usize, &Message) -> bool,
    lost: AtomicUsize,
}

#[async_trait]
impl Bus for LossyBus {
    async fn publish(&self, message: Message) -> Result<PublishAck, BusError> {
        // Only the marketplace's events are counted and lost: other services (the indicators
        // catalogue, seeded at start) publish in an order of their own.
        if !message.subject.starts_with("marketplace.") {
            return self.inner.publish(message).await;
        }
        let n = self.published.fetch_add(1, Ordering::SeqCst);
        if (self.lose)(n, &message) {
            self.lost.fetch_add(1, Ordering::SeqCst);
            return Ok(PublishAck { duplicate: false });
        }
        self.inner.publish(message).await
    }
    async fn consumer(&self, spec: ConsumerSpec) -> Result<Box<dyn Consumer>, BusError> {
        self.inner.consumer(spec).await
    }
    fn kind(&self) -> BusKind {
        self.inner.kind()
    }
}

fn sale(id: &str, day: &str, province: &str, grams: i64) -> pb::SalesRecord {
    pb::SalesRecord {
        record_id: id.into(),
        sale_date: day.into(),
        province_code: province.into(),
        commune_code: String::new(),
        category: "fruit".into(),
        quantity_grams: grams,
        value_vnd: grams * 30,
        orders: 2,
        household_ref: String::new(),
    }
}

fn household(id: &str, province: &str, status: HouseholdStatus) -> pb::OnboardingRecord {
    pb::OnboardingRecord {
        household_ref: id.into(),
        province_code: province.into(),
        commune_code: String::new(),
        registered_on: "2022-01-15".into(),
        status: status as i32,
        categories: vec!["fruit".into()],
        listed_products: None,
        has_digital_address: None,
    }
}

/// What the acknowledged records add up to: record key → (grams, đồng, orders) or status.
#[derive(Default)]
struct Ledger {
    sales: BTreeMap<(String, String), [i64; 3]>,
    households: BTreeMap<(String, String), i32>,
}

impl Ledger {
    fn matches(&self, n: &Value) -> bool {
        let mut ok = true;
        for p in ["postmart", "voso"] {
            let mut t = [0i64; 3];
            for ((partner, _), v) in &self.sales {
                if partner == p {
                    t.iter_mut().zip(v).for_each(|(a, b)| *a += b);
                }
            }
            let b = &n["sales"]["by_partner"][p];
            ok &= b["grams"] == t[0] && b["value_vnd"] == t[1] && b["orders"] == t[2];
            let h = self
                .households
                .keys()
                .filter(|(partner, _)| partner == p)
                .count();
            ok &= n["households"]["by_partner"][p] == h as i64;
        }
        let active = self
            .households
            .values()
            .filter(|s| **s == HouseholdStatus::Active as i32)
            .count();
        ok && n["households"]["active"] == active as i64
    }
}

async fn metric(app: &TestApp, name: &str) -> i64 {
    let body = reqwest::get(format!("http://{}/metrics", app.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}

/// Repairs recorded in this system's own gateway store (the metrics registry is shared by
/// every test in the process, the store is not).
async fn repairs(app: &TestApp) -> i64 {
    let db = Database::connect(&app.config, "gateway")
        .await
        .expect("gateway db");
    let n: i64 = agriportal_platform::with_db!(&db.pool, |pool| {
        sqlx::query_scalar("SELECT COUNT(*) FROM repairs")
            .fetch_one(pool)
            .await
            .expect("count")
    });
    db.close().await;
    n
}

/// The gateway's cells equal the marketplace's recomputed cells, province by province.
async fn assert_cells_agree(app: &TestApp) {
    let token = app.token(Role::Admin);
    let mut audit = MarketplaceAuditClient::connect(format!("http://{}", app.grpc))
        .await
        .expect("connect");
    let db = Database::connect(&app.config, "gateway")
        .await
        .expect("gateway db");
    let store = agriportal_gateway::SqlStore::new(db);
    use agriportal_gateway::GatewayStore;
    for partner in Partner::ALL {
        for kind in [pb::RollupKind::Sales, pb::RollupKind::Households] {
            let mut request = tonic::Request::new(pb::GetRollupCellsRequest {
                partner: partner.to_proto() as i32,
                kind: kind as i32,
                province_code: String::new(),
            });
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("meta"),
            );
            let theirs = audit
                .get_rollup_cells(request)
                .await
                .expect("audit")
                .into_inner();
            let ours = store
                .rollup_cells(partner, kind, None)
                .await
                .expect("cells");
            assert_eq!(
                theirs.provinces,
                agriportal_platform::reconcile::province_digests(&ours),
                "{partner:?} {kind:?}"
            );
        }
    }
}

async fn lost_events_are_repaired(mode: Mode) {
    // Lose the second and third events: a sales batch and an onboarding batch.
    let Some(app) = spawn_app_with_bus(
        mode,
        "reconcile",
        |s| {
            s.section_mut::<Gateway>()
                .expect("registered")
                .reconcile_interval_seconds = 1
        },
        |inner| {
            Arc::new(LossyBus {
                inner,
                published: AtomicUsize::new(0),
                lose: |n, _| n == 1 || n == 2,
                lost: AtomicUsize::new(0),
            })
        },
    )
    .await
    else {
        return;
    };
    let mut ledger = Ledger::default();
    let mut voso = app.partner("voso").await;
    let mut postmart = app.partner("postmart").await;
    let batches = [
        vec![
            sale("a1", "2022-03-01", "01", 1_000),
            sale("a2", "2022-03-01", "79", 2_000),
        ],
        // Lost: two lines, one of them corrected later.
        vec![
            sale("b1", "2022-03-02", "01", 5_000),
            sale("b2", "2022-03-05", "48", 7_000),
        ],
    ];
    for (i, records) in batches.iter().enumerate() {
        let r = voso
            .push_sales(pb::PushSalesRequest {
                batch_id: format!("s{i}"),
                records: records.clone(),
            })
            .await
            .expect("push")
            .into_inner();
        assert_eq!(r.accepted as usize, records.len());
        for s in records {
            ledger.sales.insert(
                ("voso".into(), s.record_id.clone()),
                [s.quantity_grams, s.value_vnd, i64::from(s.orders)],
            );
        }
    }
    // Lost: households of Postmart.
    let hs = vec![
        household("h1", "01", HouseholdStatus::Active),
        household("h2", "79", HouseholdStatus::Suspended),
    ];
    postmart
        .push_onboarding(pb::PushOnboardingRequest {
            batch_id: "h".into(),
            records: hs.clone(),
        })
        .await
        .expect("push");
    for h in &hs {
        ledger
            .households
            .insert(("postmart".into(), h.household_ref.clone()), h.status);
    }
    // Delivered: a correction of a lost line (its "previous" figures were never added) moved
    // to another day and province, and a new line.
    let fix = vec![
        sale("b1", "2022-03-03", "79", 4_000),
        sale("c1", "2022-03-02", "01", 9),
    ];
    voso.push_sales(pb::PushSalesRequest {
        batch_id: "fix".into(),
        records: fix.clone(),
    })
    .await
    .expect("push");
    for s in &fix {
        ledger.sales.insert(
            ("voso".into(), s.record_id.clone()),
            [s.quantity_grams, s.value_vnd, i64::from(s.orders)],
        );
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, national) = app.get("/api/v1/national").await;
        if ledger.matches(&national) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reconciliation never repaired the lost events; national: {national:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Lost: voso 01/03-02 and 48/03-05 (sales), postmart 01 and 79 (households); the
    // correction's removal from 01/03-02 and its addition to 79/03-03 were delivered.
    let repaired = repairs(&app).await;
    assert_eq!(repaired, 4, "repaired cells recorded");
    assert!(metric(&app, "agriportal_gateway_reconcile_repaired_cells_total").await >= 4);
    assert_cells_agree(&app).await;

    // Steady traffic while rounds run every second: events on their way are never
    // "repaired", so nothing is counted twice and no further repair is reported.
    for i in 0..30 {
        let records: Vec<pb::SalesRecord> = (0..20)
            .map(|j| {
                sale(
                    &format!("d{i}-{j}"),
                    "2022-04-01",
                    if j % 2 == 0 { "01" } else { "31" },
                    100 + j,
                )
            })
            .collect();
        voso.push_sales(pb::PushSalesRequest {
            batch_id: format!("d{i}"),
            records: records.clone(),
        })
        .await
        .expect("push");
        for s in &records {
            ledger.sales.insert(
                ("voso".into(), s.record_id.clone()),
                [s.quantity_grams, s.value_vnd, i64::from(s.orders)],
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.wait_national(|n| ledger.matches(n)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, national) = app.get("/api/v1/national").await;
    assert!(
        ledger.matches(&national),
        "totals moved after settling: {national:#}"
    );
    assert_eq!(
        repairs(&app).await,
        repaired,
        "a round repaired cells that were not gaps"
    );
    assert!(
        metric(
            &app,
            "agriportal_gateway_reconcile_rounds_total{outcome=\"compared\""
        )
        .await
            >= 3
    );
    assert_cells_agree(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_events_are_repaired_embedded() {
    lost_events_are_repaired(Mode::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_events_are_repaired_on_postgres_and_jetstream() {
    lost_events_are_repaired(Mode::Distributed).await;
}

#[tokio::test]
async fn the_audit_rpc_is_for_admins_and_checks_its_request() {
    let Some(app) = crate::support::spawn_app(Mode::Embedded, "audit").await else {
        return;
    };
    let mut audit = MarketplaceAuditClient::connect(format!("http://{}", app.grpc))
        .await
        .expect("connect");
    let call = |token: Option<String>, partner: i32, kind: i32, province: &str| {
        let mut request = tonic::Request::new(pb::GetRollupCellsRequest {
            partner,
            kind,
            province_code: province.into(),
        });
        if let Some(t) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("meta"),
            );
        }
        request
    };
    let admin = app.token(Role::Admin);
    let partner = app.token(Role::Partner {
        partner: "voso".into(),
    });
    let voso = Partner::Voso.to_proto() as i32;
    let sales = pb::RollupKind::Sales as i32;
    let cases = [
        (
            None,
            voso,
            sales,
            "",
            Code::Unauthenticated,
            "authorization",
        ),
        (
            Some(partner),
            voso,
            sales,
            "",
            Code::PermissionDenied,
            "admin",
        ),
        (
            Some(admin.clone()),
            0,
            sales,
            "",
            Code::InvalidArgument,
            "partner",
        ),
        (
            Some(admin.clone()),
            voso,
            0,
            "",
            Code::InvalidArgument,
            "kind",
        ),
        (
            Some(admin.clone()),
            voso,
            9,
            "",
            Code::InvalidArgument,
            "kind",
        ),
        (
            Some(admin.clone()),
            voso,
            sales,
            "99",
            Code::InvalidArgument,
            "province_code",
        ),
    ];
    for (token, p, k, province, code, names) in cases {
        let err = audit
            .get_rollup_cells(call(token, p, k, province))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(names), "{err:?}");
    }
    let ok = audit
        .get_rollup_cells(call(Some(admin), voso, sales, "01"))
        .await
        .expect("admin may read")
        .into_inner();
    assert!(ok.cells.is_empty() && ok.provinces.is_empty());
}
