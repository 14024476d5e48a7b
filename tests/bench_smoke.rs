//! The benchmark harness in smoke mode (a few seconds, tiny counts), so it cannot rot.
//! The full benchmark is `scripts/bench` (docs/benchmarks.md).

use std::process::Command;

#[test]
fn bench_smoke_runs_every_scenario() {
    let out = Command::new(env!("CARGO_BIN_EXE_sagaflow-bench"))
        .args(["--smoke", "--sagaflow-bin", env!("CARGO_BIN_EXE_sagaflow")])
        .output()
        .expect("sagaflow-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    let json_start = stdout.find("\n{").expect("a JSON report after the table");
    let report: serde_json::Value =
        serde_json::from_str(&stdout[json_start..]).expect("the report is JSON");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    for name in [
        "baseline",
        "baseline-single",
        "single",
        "closed-loop",
        "failing-10%",
        "scale-1",
        "scale-2",
        "single-with-parked",
    ] {
        let row = scenarios
            .iter()
            .find(|r| r["scenario"] == name)
            .unwrap_or_else(|| panic!("no {name} row in {stdout}"));
        let finished = row["completed"].as_u64().unwrap_or(0)
            + row["compensated"].as_u64().unwrap_or(0)
            + row["failed"].as_u64().unwrap_or(0);
        assert!(finished > 0, "{name}: no saga finished: {row}");
        assert!(
            row["steps"].as_u64().unwrap_or(0) > 0,
            "{name}: no steps: {row}"
        );
    }
    // The scale rows carry rollbacks per step (in the JSON, not the table).
    let scale2 = scenarios
        .iter()
        .find(|r| r["scenario"] == "scale-2")
        .expect("a scale-2 row");
    assert!(
        scale2["pg_rollbacks_per_step"].as_f64().is_some(),
        "{scale2}"
    );
    // The one-at-a-time rows split their sagas' time into hops: 8 for sagaflow (its
    // saga ends with an event on the lifecycle topic), 7 for the baseline.
    for (name, hops) in [("single", 8), ("baseline-single", 7)] {
        let row = scenarios
            .iter()
            .find(|r| r["scenario"] == name)
            .expect("a one-at-a-time row");
        assert!(row["hops_sagas"].as_u64().unwrap_or(0) > 0, "{row}");
        let means: Vec<f64> = row["hops"]
            .as_array()
            .unwrap_or_else(|| panic!("no hops: {row}"))
            .iter()
            .map(|h| h["mean_ms"].as_f64().unwrap_or(f64::NAN))
            .collect();
        assert_eq!(means.len(), hops, "{row}");
        assert!(means.iter().all(|m| *m >= 0.0), "{row}");
        assert!(means.iter().sum::<f64>() > 0.0, "{row}");
    }
    assert!(report["ratio_to_baseline"]["ratio"].as_f64().is_some());
    assert!(report["parked"]["parked_running"].as_i64().unwrap_or(0) >= 500);
}
