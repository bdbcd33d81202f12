//! The audit table grown to over a million rows on PostgreSQL. The sweep
//! removes the expired ones in bounded batches through the index on `audit_events.at`
//! (EXPLAIN shows it) while password resets keep working; their latency is printed, not
//! asserted (run with `--nocapture` to see it). About 30 s.

use std::time::{Duration, Instant};

use chrono::Utc;
use recovery_service::db::RetentionSettings;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tokio_util::sync::CancellationToken;

use crate::common::{NEW_PASSWORD, TempDir, fresh_database_url_for, spawn_app_with, unique_login};
use recovery_service::server::Overrides;

const EXPIRED: i64 = 800_000;
const KEPT: i64 = 200_000;

async fn audit_rows(conn: &sea_orm::DatabaseConnection) -> i64 {
    conn.query_one_raw(Statement::from_string(
        DbBackend::Postgres,
        "SELECT count(*) AS n FROM audit_events",
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get::<i64>("", "n")
    .unwrap()
}

fn summary(latencies: &mut [Duration]) -> String {
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    format!(
        "n={} p50={:?} p90={:?} max={:?}",
        latencies.len(),
        p(0.5),
        p(0.9),
        latencies[latencies.len() - 1]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_audit_rows_are_swept_through_the_index_while_resets_keep_working() {
    if !crate::common::backend::database("postgres") {
        return;
    }
    let dir = TempDir::new();
    let url = fresh_database_url_for("postgres", &dir).await;
    let app_url = url.clone();
    let app = spawn_app_with(
        move |config| {
            config.database_url = app_url;
            // This test drives the sweep itself.
            config.retention.sweep_interval_secs = 0;
            // Hundreds of resets from one address: the per-IP limit is not under test here.
            config.rate_limits.enabled = false;
        },
        Overrides::default(),
    )
    .await;
    let conn = app.database.connection().clone();
    // The fill is one long statement: its own connection, without the service's statement
    // timeout.
    let filler = sea_orm::Database::connect(&url).await.unwrap();

    // One INSERT ... SELECT: 800k rows past the 400-day limit, 200k inside it.
    let started = Instant::now();
    filler.execute_unprepared(&format!(
        "INSERT INTO audit_events (at, event, login_key, client_ip, user_agent, result) \
         SELECT CASE WHEN g <= {EXPIRED} THEN now() - interval '500 days' + g * interval '1 second' \
                     ELSE now() - interval '10 days' + g * interval '1 millisecond' END, \
                'recovery.started', 'login-key-' || (g % 100), '192.0.2.1', 'growth-test', 'ok' \
         FROM generate_series(1, {}) AS g",
        EXPIRED + KEPT
    ))
    .await
    .unwrap();
    filler
        .execute_unprepared("ANALYZE audit_events")
        .await
        .unwrap();
    filler.close().await.ok();
    println!(
        "filled {} audit rows in {:?}",
        EXPIRED + KEPT,
        started.elapsed()
    );
    assert!(audit_rows(&conn).await >= 1_000_000);

    // The sweep's own statement reads the rows it removes through the index on `at`.
    let settings = RetentionSettings::default();
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(settings.audit_days));
    let statement = app
        .database
        .audit_sweep_statement(cutoff, settings.batch_size);
    let plan = conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!("EXPLAIN {}", statement.sql),
            statement.values.map(|v| v.0).unwrap_or_default(),
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.try_get::<String>("", "QUERY PLAN").unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    println!("{plan}");
    assert!(
        plan.contains("Index Scan using idx_audit_events_at")
            || plan.contains("Index Only Scan using idx_audit_events_at"),
        "the sweep does not use the index on audit_events.at:\n{plan}"
    );

    // Baseline reset latency, then the same while the sweep runs.
    let reset_once = async || {
        let login = unique_login();
        app.create_account(&login).await;
        let (_, token) = app.verified_flow(&login).await;
        let t = Instant::now();
        app.reset(&token, NEW_PASSWORD, NEW_PASSWORD)
            .await
            .expect("reset works");
        t.elapsed()
    };
    let mut baseline = Vec::new();
    for _ in 0..5 {
        baseline.push(reset_once().await);
    }
    let sweeper_db = app.database.clone();
    let sweep_started = Instant::now();
    let sweep = tokio::spawn(async move {
        let report = sweeper_db
            .sweep(&settings, Utc::now(), &CancellationToken::new())
            .await;
        (report, sweep_started.elapsed())
    });
    let mut during = Vec::new();
    while !sweep.is_finished() {
        during.push(reset_once().await);
        // A steady trickle, not a flood: the 2-core machine is the sweep's too.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (report, took) = sweep.await.unwrap();
    let report = report.unwrap();
    println!(
        "sweep removed {} audit rows in {took:?} ({} batches of {})",
        report.audit_events,
        report
            .audit_events
            .div_ceil(u64::from(RetentionSettings::default().batch_size)),
        RetentionSettings::default().batch_size
    );
    println!("ResetPassword before the sweep: {}", summary(&mut baseline));
    if during.is_empty() {
        println!("ResetPassword during the sweep: none finished");
    } else {
        println!("ResetPassword during the sweep: {}", summary(&mut during));
    }
    assert_eq!(report.audit_events, EXPIRED as u64);
    // Every kept row and every row the resets wrote are still there.
    assert!(audit_rows(&conn).await >= KEPT);
    let expired_left = conn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM audit_events WHERE at < $1",
            [cutoff.into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(expired_left, 0);
    drop(app);
    crate::common::drop_database(&url).await;
}
