//! No secret in any log, error or metric. Canary secrets go into every place a secret
//! can be configured or presented; the service runs with debug logging, fails once on a
//! bad Kafka property, serves requests with good and bad tokens, exposes its metrics,
//! and stops. None of the canaries may appear in anything it printed or served.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::Duration;

use support::*;

const CANARIES: &[&str] = &[
    "CANARYdbpw",
    "CANARYquery",
    "CANARYsasl",
    "CANARYoauth",
    "CANARYjaas",
    "CANARYsslkey",
    "CANARYreplykey",
    "CANARYtoken",
    "CANARYwrongtoken",
    "CANARYbarekey",
];

fn output(mut child: Child) -> String {
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    child.wait().unwrap();
    text
}

fn assert_clean(what: &str, text: &str) {
    for canary in CANARIES {
        assert!(!text.contains(canary), "{what} shows {canary}:\n{text}");
    }
}

fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_secrets_appear_in_no_output() {
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let mut settings = settings(&db, &broker, &repo_path("tests/sagas-held"));
    // A password holding `@` (unencoded) and a password in the query.
    settings.database.url =
        settings
            .database
            .url
            .replacen("postgres@", "postgres:CANARYdbpw@x@", 1)
            + "?password=CANARYquery&sslmode=disable";
    for (k, v) in [
        ("sasl.password", "CANARYsasl"),
        ("sasl.oauthbearer.config", "principal=CANARYoauth"),
        ("ssl.key.password", "CANARYsslkey"),
    ] {
        settings.kafka.properties.insert(k.into(), v.into());
    }
    settings.security.reply_keys = vec!["CANARYreplykey-0123456789abcdefghijklmnop".into()];
    let tokens = format!(
        r#"[{{"name":"ops","sha256":"{}","scopes":["read","health"]}}]"#,
        sha256_hex("CANARYtoken")
    );

    // 1. librdkafka refuses a property (the JAAS file of a Java client): the error
    //    names the property, never its value.
    let port = free_port();
    let mut bad = settings.clone();
    bad.kafka.properties.insert(
        "sasl.jaas.config".into(),
        "org.apache.kafka.common.security.plain.PlainLoginModule required password=\"CANARYjaas\";"
            .into(),
    );
    let failed = Process::command(&bad, port)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = tokio::task::spawn_blocking(move || output(failed))
        .await
        .unwrap();
    assert!(text.contains("sasl.jaas.config"), "{text}");
    assert_clean("the configuration error", &text);

    // 1b. A reply key given bare instead of as a JSON list: the settings error names
    //     the setting, not the value.
    let port = free_port();
    let failed = Process::command(&settings, port)
        .env(
            "SAGAFLOW_SECURITY__REPLY_KEYS",
            "CANARYbarekey-0123456789abcdefghijklmnop",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = tokio::task::spawn_blocking(move || output(failed))
        .await
        .unwrap();
    assert!(text.contains("security.reply_keys"), "{text}");
    assert_clean("the settings error", &text);

    // 2. A running service, with access control, asked with a good and a bad token.
    let port = free_port();
    let child = Process::command(&settings, port)
        .env("RUST_LOG", "debug")
        .env("SAGAFLOW_API__AUTH__ENABLED", "true")
        .env("SAGAFLOW_API__AUTH__TOKENS", &tokens)
        .env("SAGAFLOW_API__AUTH__PROTECT_HEALTH", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let good = [("authorization", "Bearer CANARYtoken")];
    eventually(
        "the service to be ready",
        Duration::from_secs(60),
        || async {
            http("GET", &format!("{base}/readyz"), None, &good)
                .await
                .filter(|(s, _)| *s == 200)
        },
    )
    .await;
    let (status, metrics) = http("GET", &format!("{base}/metrics"), None, &good)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_clean("/metrics", &metrics);
    let (status, body) = http(
        "GET",
        &format!("{base}/v1/sagas"),
        None,
        &[("authorization", "Bearer CANARYwrongtoken")],
    )
    .await
    .unwrap();
    assert_eq!(status, 401);
    assert_clean("a refusal", &body);
    let (status, body) = http("GET", &format!("{base}/v1/sagas"), None, &good)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    sigterm(&child);
    let text = tokio::task::spawn_blocking(move || output(child))
        .await
        .unwrap();
    assert!(
        text.contains("settings"),
        "debug logging shows the settings:\n{text}"
    );
    assert!(text.contains("****"), "and masks them:\n{text}");
    assert_clean("the service's logs", &text);
}

fn sigterm(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
