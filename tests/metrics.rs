//! `GET /metrics` on its own listener: the metrics exist and move. One test
//! in this binary: the recorder is process-wide.

mod common;

use std::time::Duration;

use common::{eventually, stack::start_ready};
use precinct::db::Trigger;

async fn scrape(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the first sample whose line starts with `series`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_apart_and_follow_rotations() {
    let (_stack, app) = start_ready(&[("METRICS_ADDR", "127.0.0.1:0")]).await;
    let addr = app.metrics_addr.expect("metrics listener");
    assert_ne!(addr.port(), app.addr.port(), "its own listener");
    // The public port does not serve them.
    assert_eq!(app.status("/metrics").await, 404);

    let text = scrape(addr).await;
    let build = text
        .lines()
        .find(|l| l.starts_with("precinct_build_info{"))
        .expect("build info");
    assert!(
        build.contains(&format!("commit=\"{}\"", precinct::build_info::GIT_COMMIT)),
        "{build}"
    );
    assert_eq!(value(&text, "precinct_db_generation"), Some(1.0));
    assert_eq!(
        value(
            &text,
            "precinct_db_rotations_total{trigger=\"initial\",outcome=\"success\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "precinct_dependency_ready{check=\"database\"}"),
        Some(1.0)
    );
    let lease = value(&text, "precinct_db_lease_expiry_seconds").expect("lease gauge");
    assert!(lease > 0.0 && lease <= 60.0, "{lease}");

    app.db.as_ref().unwrap().request_rotation(Trigger::Signal);
    eventually(
        Duration::from_secs(10),
        "a signal rotation counted",
        || async move {
            let text = scrape(addr).await;
            value(
                &text,
                "precinct_db_rotations_total{trigger=\"signal\",outcome=\"success\"}",
            ) == Some(1.0)
                && value(&text, "precinct_db_generation") == Some(2.0)
        },
    )
    .await;
    let text = scrape(addr).await;
    assert!(
        text.contains("precinct_db_rotation_duration_seconds_bucket"),
        "histogram"
    );
    app.stop().await;
}
