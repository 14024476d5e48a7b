//! Handler tests: the router driven with `oneshot` against a real PostgreSQL database
//! and the definitions in `sagas/`. No broker: starting, reading and operator actions
//! only write to the database (publishing is the relay's job).
#![allow(clippy::unwrap_used)]

mod oneshot;
mod support;

use axum::body::Body;
use axum::http::{Request, header};
use oneshot::*;
use sagaflow::config::ApiSettings;
use serde_json::json;

#[tokio::test]
async fn start_is_idempotent_by_key_and_checks_the_input() {
    let app = app().await;
    let started = app
        .call(
            "POST",
            "/v1/sagas/order-fulfilment",
            Some(json!({"input": order("o-1"), "key": "k-1"})),
            None,
        )
        .await;
    assert_eq!(started.status, 201, "{}", started.text);
    let id = started.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        started.headers[header::LOCATION].to_str().unwrap(),
        format!("/v1/sagas/{id}")
    );
    assert_eq!(started.body["created"], true);

    // Same key (header wins over body) and same input: the same saga, 200.
    let req = Request::post("/v1/sagas/order-fulfilment")
        .header(header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", "k-1")
        .body(Body::from(json!({"input": order("o-1")}).to_string()))
        .unwrap();
    let again = app.send(req).await;
    assert_eq!(
        (again.status, again.body["id"].as_str()),
        (200, Some(id.as_str()))
    );
    assert_eq!(again.body["created"], false);

    // Same key, other input: 409.
    let conflict = app
        .call(
            "POST",
            "/v1/sagas/order-fulfilment",
            Some(json!({"input": order("o-2"), "key": "k-1"})),
            None,
        )
        .await;
    assert_eq!(conflict.status, 409, "{}", conflict.text);

    // Schema errors: every failing path, as objects.
    let bad = app
        .start(
            "order-fulfilment",
            json!({"order_id": "o", "customer_id": "c", "amount": -1, "currency": "euro", "items": []}),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    let paths: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for p in ["/amount", "/currency", "/items"] {
        assert!(paths.contains(&p), "{paths:?}");
    }
    assert!(bad.body["errors"][0]["message"].is_string());

    assert_eq!(app.start("no-such-saga", json!({})).await.status, 404);
}

#[tokio::test]
async fn malformed_requests_get_problems_not_panics() {
    let settings = ApiSettings {
        max_body_bytes: 4096,
        max_input_bytes: 512,
        ..ApiSettings::default()
    };
    let app = app_with(settings).await;
    let post = |body: &'static str, ctype: Option<&str>| {
        let mut r = Request::post("/v1/sagas/order-fulfilment");
        if let Some(c) = ctype {
            r = r.header(header::CONTENT_TYPE, c);
        }
        r.body(Body::from(body)).unwrap()
    };
    assert_eq!(
        app.send(post("{", Some("application/json"))).await.status,
        400
    );
    assert_eq!(app.send(post("{}", Some("text/plain"))).await.status, 415);
    assert_eq!(app.send(post("{}", None)).await.status, 415);
    assert_eq!(
        app.send(post(r#"{"inputs": 1}"#, Some("application/json")))
            .await
            .status,
        422
    );
    let deep = "[".repeat(10_000);
    let deep: &'static str = Box::leak(deep.into_boxed_str());
    assert!(matches!(
        app.send(post(deep, Some("application/json"))).await.status,
        400 | 413
    ));
    // Body over the request limit, and an input over the per-saga limit.
    let big = json!({"input": {"x": "y".repeat(8000)}}).to_string();
    let req = Request::post("/v1/sagas/order-fulfilment")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(big))
        .unwrap();
    assert_eq!(app.send(req).await.status, 413);
    let r = app
        .start("order-fulfilment", json!({"x": "y".repeat(1000)}))
        .await;
    assert_eq!(
        (r.status, r.body["type"].as_str()),
        (413, Some("https://sagaflow.dev/problems/too-large"))
    );

    // PostgreSQL cannot store U+0000: refused with the path, not a 500.
    let r = app
        .start("order-fulfilment", json!({"a": ["x\u{0}"]}))
        .await;
    assert_eq!(
        (r.status, &r.body["errors"][0]["path"]),
        (422, &json!("/input/a/0"))
    );
    assert_eq!(
        app.call("GET", "/v1/sagas?key=a%00b", None, None)
            .await
            .status,
        200
    );
    assert_eq!(
        app.call("GET", "/v1/definitions/a%00b", None, None)
            .await
            .status,
        404
    );

    // The framework's own errors: unknown route, method not allowed, bad path.
    assert_eq!(app.call("GET", "/nope", None, None).await.status, 404);
    let r = app.call("DELETE", "/v1/sagas", None, None).await;
    assert_eq!(r.status, 405);
    assert!(r.headers.contains_key(header::ALLOW));
    assert_eq!(
        app.call("GET", "/v1/sagas/not-a-uuid", None, None)
            .await
            .status,
        404
    );
    assert_eq!(
        app.call("POST", "/v1/sagas/not-a-uuid/abort", None, None)
            .await
            .status,
        404
    );
    let r = app
        .call(
            "GET",
            &format!("/v1/sagas/{}", uuid::Uuid::now_v7()),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    for q in [
        "limit=0",
        "limit=501",
        "limit=x",
        "status=bogus",
        "cursor=zzz",
        "created_after=yesterday",
    ] {
        assert_eq!(
            app.call("GET", &format!("/v1/sagas?{q}"), None, None)
                .await
                .status,
            400,
            "{q}"
        );
    }
}

#[tokio::test]
async fn get_shows_steps_and_timeline_and_operator_actions_record_the_actor() {
    let app = app().await;
    let id = app.start("order-fulfilment", order("o-9")).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let saga = app
        .call("GET", &format!("/v1/sagas/{id}"), None, None)
        .await;
    assert_eq!(saga.status, 200);
    assert_eq!(saga.body["status"], "running");
    assert_eq!(saga.body["definition"], "order-fulfilment");
    assert_eq!(saga.body["current_steps"], json!(["reserve_stock"]));
    assert_eq!(saga.body["steps"][0]["name"], "reserve_stock");
    assert!(!saga.body["timeline"].as_array().unwrap().is_empty());

    // Nothing has failed: retry is refused with the reason.
    let r = app
        .call("POST", &format!("/v1/sagas/{id}/retry"), None, None)
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.body["detail"].is_string());

    let r = app
        .call(
            "POST",
            &format!("/v1/sagas/{id}/abort"),
            Some(json!({"reason": "test"})),
            None,
        )
        .await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (200, &json!("compensating")),
        "{}",
        r.text
    );
    // Idempotent: aborting again changes nothing and succeeds.
    let r = app
        .call("POST", &format!("/v1/sagas/{id}/abort"), None, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let saga = app
        .call("GET", &format!("/v1/sagas/{id}"), None, None)
        .await;
    let abort = saga.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "operator_abort")
        .cloned()
        .unwrap();
    assert_eq!(abort["detail"]["actor"], "anonymous");
    assert_eq!(abort["detail"]["reason"], "test");
}

#[tokio::test]
async fn list_filters_and_pages_without_gaps_or_repeats() {
    let app = app().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let r = app
            .start("order-fulfilment", order(&format!("o-{n}")))
            .await;
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut uri = "/v1/sagas?limit=2&definition=order-fulfilment".to_owned();
    loop {
        let page = app.call("GET", &uri, None, None).await;
        assert_eq!(page.status, 200, "{}", page.text);
        for item in page.body["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/sagas?limit=2&definition=order-fulfilment&cursor={c}"),
            None => break,
        }
    }
    ids.reverse(); // newest first
    assert_eq!(seen, ids);

    let none = app
        .call("GET", "/v1/sagas?definition=trip-booking", None, None)
        .await;
    assert_eq!(none.body["items"], json!([]));
    let running = app
        .call("GET", "/v1/sagas?status=running&limit=500", None, None)
        .await;
    assert_eq!(running.body["items"].as_array().unwrap().len(), 5);
    let later = app
        .call(
            "GET",
            "/v1/sagas?created_after=2999-01-01T00:00:00Z",
            None,
            None,
        )
        .await;
    assert_eq!(later.body["items"], json!([]));
    let earlier = app
        .call(
            "GET",
            "/v1/sagas?created_before=2999-01-01T00:00:00Z&updated_after=2000-01-01T00:00:00Z",
            None,
            None,
        )
        .await;
    assert_eq!(earlier.body["items"].as_array().unwrap().len(), 5);
}

/// A saga with 10,000 timeline entries: its detail carries the latest 100, and the
/// timeline endpoint pages through all of them in order, none twice.
#[tokio::test]
async fn a_long_timeline_is_paged_not_sent_whole() {
    let app = app().await;
    let started = app.start("order-fulfilment", order("long-1")).await;
    let id = started.body["id"].as_str().unwrap().to_owned();
    let store = app.db.store().await;
    sqlx::query(
        "INSERT INTO saga_history (saga_id, at, kind, detail) \
         SELECT $1::uuid, now(), 'timer_ignored', jsonb_build_object('n', n) \
         FROM generate_series(1, 10000) AS n",
    )
    .bind(uuid::Uuid::parse_str(&id).unwrap())
    .execute(&store.pool)
    .await
    .unwrap();
    let total = sagaflow::store::history(&store.pool, id.parse().unwrap())
        .await
        .unwrap()
        .len();
    assert!(total > 10_000, "{total}");

    let detail = app
        .call("GET", &format!("/v1/sagas/{id}"), None, None)
        .await;
    assert_eq!(detail.body["timeline"].as_array().unwrap().len(), 100);
    assert_eq!(detail.body["timeline_complete"], false);
    assert_eq!(detail.body["timeline"][99]["detail"]["n"], 10000);

    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = app
            .call(
                "GET",
                &format!("/v1/sagas/{id}/timeline?after={after}&limit=1000"),
                None,
                None,
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 1000);
        seen.extend(items.iter().map(|e| e["seq"].as_i64().unwrap()));
        match page.body["next_after"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen.len(), total);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, none twice");
    let r = app
        .call(
            "GET",
            &format!("/v1/sagas/{id}/timeline?limit=0"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 400);
}

/// Search by step, failure text, key prefix and a field of the input, with counts.
#[tokio::test]
async fn search_filters_find_sagas_by_step_failure_key_prefix_and_input() {
    let app = app().await;
    let mut ids = Vec::new();
    for (n, customer) in ["c-1", "c-2", "c-2"].iter().enumerate() {
        let mut input = order(&format!("s-{n}"));
        input["customer_id"] = json!(customer);
        let body = json!({ "input": input, "key": format!("shop-7/order-{n}") });
        let r = app
            .call("POST", "/v1/sagas/order-fulfilment", Some(body), None)
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let abort = json!({"reason": "customer phoned: wrong address"});
    let r = app
        .call(
            "POST",
            &format!("/v1/sagas/{}/abort", ids[0]),
            Some(abort),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let app = &app;
    let found = |query: &'static str| async move {
        let r = app
            .call("GET", &format!("/v1/sagas?{query}"), None, None)
            .await;
        assert_eq!(r.status, 200, "{query}: {}", r.text);
        let mut ids: Vec<String> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        (ids, r.body["counts"].clone())
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let (by_input, _) = found("input=/customer_id=c-2").await;
    assert_eq!(by_input, sorted(vec![ids[1].clone(), ids[2].clone()]));
    let (by_prefix, _) = found("key_prefix=shop-7/order-&definition=order-fulfilment").await;
    assert_eq!(by_prefix.len(), 3);
    let (by_failure, _) = found("failure=WRONG%20ADDRESS").await;
    assert_eq!(by_failure, vec![ids[0].clone()]);
    // Not started by a broker here: each saga is at its first step.
    let (by_step, counts) = found("step=reserve_stock&with_counts=true").await;
    assert_eq!(by_step.len(), 3);
    assert_eq!(counts["counts"], json!({"compensating": 1, "running": 2}));
    assert_eq!(counts["capped"], false);
    // Wildcards in a filter are taken literally.
    let (none, _) = found("key_prefix=%25").await;
    assert!(none.is_empty());
    let r = app
        .call("GET", "/v1/sagas?input=customer_id=x", None, None)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // Filters no index can serve are refused; one that cannot match answers nothing.
    for query in ["failure=ab", "input=/customer_id", "failure="] {
        let r = app
            .call("GET", &format!("/v1/sagas?{query}"), None, None)
            .await;
        assert_eq!(r.status, 400, "{query}: {}", r.text);
    }
    let (none, _) = found("input=/customer_id=%22%5Cu0000%22").await;
    assert!(none.is_empty());
}

/// The YAML and chart of a version no file holds any more, and a saga's own chart.
#[tokio::test]
async fn pinned_versions_stay_visible_and_a_saga_has_its_own_chart() {
    let app = app().await;
    let started = app.start("order-fulfilment", order("chart-1")).await;
    let id = started.body["id"].as_str().unwrap().to_owned();
    let saga = app
        .call("GET", &format!("/v1/sagas/{id}"), None, None)
        .await;
    let version = saga.body["version"].as_str().unwrap().to_owned();

    let v = app
        .call(
            "GET",
            &format!("/v1/definitions/order-fulfilment/versions/{version}"),
            None,
            None,
        )
        .await;
    assert_eq!(v.status, 200, "{}", v.text);
    assert_eq!(v.body["current"], true);
    assert!(
        v.body["source"]
            .as_str()
            .unwrap()
            .contains("name: order-fulfilment")
    );

    // A version whose file is gone: only its snapshot is left.
    let old = "name: retired\nsteps:\n  - name: only\n    command: {topic: t, type: t.do}\n    reply: {success: [t.done]}\n    compensation: none\n";
    let store = app.db.store().await;
    sqlx::query("INSERT INTO definition_snapshots (name, version, source, file) VALUES ('retired', 'v-old', $1, 'sagas/retired.yaml')")
        .bind(old)
        .execute(&store.pool)
        .await
        .unwrap();
    let v = app
        .call("GET", "/v1/definitions/retired/versions/v-old", None, None)
        .await;
    assert_eq!(
        (v.status, v.body["source"].as_str()),
        (200, Some(old)),
        "{}",
        v.text
    );
    assert_eq!(v.body["current"], false);
    let g = app
        .call(
            "GET",
            "/v1/definitions/retired/versions/v-old/graph",
            None,
            None,
        )
        .await;
    assert_eq!(g.status, 200, "{}", g.text);
    assert!(g.text.contains("s_only"), "{}", g.text);
    let missing = app
        .call(
            "GET",
            "/v1/definitions/retired/versions/nope/graph",
            None,
            None,
        )
        .await;
    assert_eq!(missing.status, 404);

    // No broker here: the first step is in flight.
    let g = app
        .call("GET", &format!("/v1/sagas/{id}/graph"), None, None)
        .await;
    assert_eq!(g.status, 200, "{}", g.text);
    assert!(
        g.text.contains("class s_reserve_stock current"),
        "{}",
        g.text
    );
    assert!(g.text.contains("classDef succeeded"), "{}", g.text);
    let req = Request::get(format!("/v1/sagas/{id}/graph"))
        .header(header::ACCEPT, "image/svg+xml")
        .body(Body::empty())
        .unwrap();
    let svg = app.send(req).await;
    assert_eq!(svg.headers[header::CONTENT_TYPE], "image/svg+xml");
    assert_eq!(
        svg.headers[header::CONTENT_SECURITY_POLICY],
        "default-src 'none'; style-src 'unsafe-inline'"
    );
    let in_flight = "data-step=\"reserve_stock\" data-phase=\"command\" data-state=\"current\"";
    assert!(svg.text.contains(in_flight), "{}", svg.text);
}

/// Parked outbox rows are listed, put back or dropped through the API, each action in
/// the saga's timeline with its actor and reason.
#[tokio::test]
async fn parked_messages_are_listed_requeued_and_discarded() {
    let app = app().await;
    let started = app.start("order-fulfilment", order("parked-1")).await;
    let id = started.body["id"].as_str().unwrap().to_owned();
    let saga: uuid::Uuid = id.parse().unwrap();
    let store = app.db.store().await;
    for (row, topic) in [(9001_i64, "too.large"), (9002, "refused.topic")] {
        sqlx::query(
            "INSERT INTO outbox_parked (id, saga_id, topic, key, headers, payload, created_at, reason) \
             VALUES ($1, $2, $3, 'k', '[[\"ce_type\", \"x\"]]', '\\x00ff', now(), 'MessageSizeTooLarge')",
        )
        .bind(row)
        .bind(saga)
        .bind(topic)
        .execute(&store.pool)
        .await
        .unwrap();
    }
    let page = app.call("GET", "/v1/parked-messages", None, None).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(page.body["items"][0]["id"], 9002);
    assert_eq!(page.body["items"][1]["payload_bytes"], 2);

    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE topic = 'too.large'")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    let r = app
        .call(
            "POST",
            "/v1/parked-messages/9001/requeue",
            Some(json!({"reason": "limit raised"})),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE topic = 'too.large'")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(after, before + 1);
    let r = app
        .call(
            "POST",
            "/v1/parked-messages/9001/requeue",
            Some(json!({"reason": "again"})),
            None,
        )
        .await;
    assert_eq!(r.status, 404, "requeued once: {}", r.text);
    let r = app
        .call(
            "POST",
            "/v1/parked-messages/9002/discard",
            Some(json!({"reason": ""})),
            None,
        )
        .await;
    assert_eq!(r.status, 422);
    let r = app
        .call(
            "POST",
            "/v1/parked-messages/9002/discard",
            Some(json!({"reason": "attempt retried since"})),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);

    let history = sagaflow::store::history(&store.pool, saga).await.unwrap();
    let notes: Vec<(&str, &str)> = history
        .iter()
        .filter(|h| h.kind.starts_with("message_"))
        .map(|h| (h.kind.as_str(), h.detail["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        notes,
        [
            ("message_requeued", "limit raised"),
            ("message_discarded", "attempt retried since")
        ]
    );
    let page = app.call("GET", "/v1/parked-messages", None, None).await;
    assert_eq!(page.body["items"], json!([]));
}
