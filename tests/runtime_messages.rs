//! What the reply and trigger consumer does with awkward messages, over a real
//! PostgreSQL and a real broker: duplicate trigger events, duplicate and stale replies,
//! replies for unknown sagas and garbage, which go to the dead-letter topic.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use sagaflow::config::Settings;
use sagaflow::engine::{Phase, SagaStatus, StepStatus};
use sagaflow::messaging::envelope::Record;
use sagaflow::messaging::kafka;
use sagaflow::participant::{self, Command, Decision, Policy};
use sagaflow::store::Store;
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);
const REPLIES: &str = "fast.replies";
const SIGNUPS: &str = "fast.signups";

/// One test's world: database, broker, service, participants, a producer.
struct Rig {
    settings: Settings,
    svc: InProcess,
    store: Store,
    p: Participants,
    producer: FutureProducer,
    _broker: Broker,
    _db: TestDb,
}

impl Rig {
    /// The fast sagas; participants answer every command with success, except
    /// `fast-manual`'s `manual` step, which the tests answer by hand. Returns once a
    /// warm-up saga has completed, so the consumer groups have formed.
    async fn start() -> Rig {
        log_init();
        let dir = repo_path("tests/sagas-fast");
        let db = TestDb::new().await;
        let broker = Broker::shared();
        let settings = settings(&db, &broker, &dir);
        let svc = InProcess::start(settings.clone()).await;
        let policy: Policy = Arc::new(|c| {
            let d = if c.step == "manual" && c.phase == Phase::Command {
                Decision::Silence
            } else {
                Decision::Success
            };
            (d, Duration::ZERO)
        });
        let p = participants(&settings, load_defs(&settings.runtime.sagas_dir), policy);
        let store = db.store().await;
        let producer = kafka::producer(&settings.kafka).unwrap();
        let rig = Rig {
            settings,
            svc,
            store,
            p,
            producer,
            _broker: broker,
            _db: db,
        };
        let id = rig.start_saga("fast-warmup", json!({})).await;
        wait_status(
            &rig.store,
            id,
            SagaStatus::Completed,
            Duration::from_secs(60),
        )
        .await;
        rig
    }

    async fn start_saga(&self, name: &str, input: Value) -> Uuid {
        start_saga(&self.svc.url(""), name, input).await
    }

    /// Sends `record` to the test's own copy of its topic (see `support::settings`).
    async fn send(&self, record: &Record) {
        let mut record = record.clone();
        record.topic = self.topic(&record.topic);
        kafka::send(&self.producer, &record, Duration::from_secs(10))
            .await
            .unwrap();
    }

    fn topic(&self, name: &str) -> String {
        topic(&self.settings, name)
    }

    async fn stop(self) {
        self.p.stop().await;
        self.svc.stop().await;
    }
}

/// A reply to `step#attempt` of `saga` as a participant would send it (see
/// `participant::reply_record`), with a chosen `ce_source` and `ce_id`.
fn reply(
    settings: &Settings,
    saga: Uuid,
    step: &str,
    attempt: u32,
    reply_type: &str,
    id: &str,
    data: Value,
) -> Record {
    let cmd = Command {
        saga_id: saga,
        definition: "fast-manual".into(),
        step: step.into(),
        attempt,
        phase: Phase::Command,
        command_type: "fast.manual_do".into(),
        command_id: Uuid::new_v4().to_string(),
        payload: json!({}),
        reply_to: REPLIES.into(),
        token: Some(reply_token(settings, saga, step, Phase::Command, attempt)),
        traceparent: None,
        tracestate: None,
    };
    let mut record = participant::reply_record(&cmd, reply_type, &data);
    for (k, v) in &mut record.headers {
        match k.as_str() {
            "ce_id" => *v = id.to_owned(),
            "ce_source" => *v = "/tests/manual-participant".to_owned(),
            _ => {}
        }
    }
    record
}

/// A trigger event for `fast-trigger`; every one is produced with the Kafka key
/// `partition_key`, so they stay in order on one partition.
fn signup(partition_key: &str, ce_id: &str, data: Value) -> Record {
    cloud_event(
        SIGNUPS.into(),
        partition_key,
        (ce_id, "/tests/accounts", "fast.signup_completed"),
        &data,
    )
}

/// Reads the dead-letter topic from its beginning.
struct DeadLetters {
    consumer: StreamConsumer,
    seen: Vec<OwnedMessage>,
}

impl DeadLetters {
    fn new(settings: &Settings) -> DeadLetters {
        let consumer: StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &settings.kafka.bootstrap_servers)
            .set(
                "group.id",
                format!("dlq-reader-{}", Uuid::new_v4().simple()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .create()
            .unwrap();
        consumer
            .subscribe(&[settings.kafka.dead_letter_topic.as_str()])
            .unwrap();
        DeadLetters {
            consumer,
            seen: Vec::new(),
        }
    }

    /// Every dead letter read so far, once one matching `found` has been read.
    async fn wait_for(
        &mut self,
        what: &str,
        found: impl Fn(&OwnedMessage) -> bool,
    ) -> OwnedMessage {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(m) = self.seen.iter().find(|m| found(m)) {
                return m.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no dead letter {what} within {WAIT:?}; saw {:?}",
                self.reasons()
            );
            if let Ok(m) = tokio::time::timeout(left, self.consumer.recv()).await {
                self.seen.push(m.unwrap().detach());
            }
        }
    }

    fn reasons(&self) -> Vec<Option<String>> {
        self.seen.iter().map(|m| header(m, "dlq-reason")).collect()
    }
}

async fn count_by_key(store: &Store, key: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sagas WHERE business_key = $1")
        .bind(key)
        .fetch_one(&store.pool)
        .await
        .unwrap()
}

async fn saga_by_key(store: &Store, key: &str) -> Uuid {
    eventually(&format!("a saga with business key {key}"), WAIT, || async {
        sqlx::query_scalar::<_, Uuid>("SELECT id FROM sagas WHERE business_key = $1")
            .bind(key)
            .fetch_optional(&store.pool)
            .await
            .unwrap()
    })
    .await
}

/// `kind#attempt` of one step's timeline entries, in order.
async fn step_timeline(store: &Store, id: Uuid, step: &str) -> Vec<String> {
    timeline(store, id)
        .await
        .into_iter()
        .filter(|h| h.step.as_deref() == Some(step))
        .map(|h| match h.attempt {
            Some(a) => format!("{}#{a}", h.kind),
            None => h.kind,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_trigger_events_start_exactly_one_saga() {
    let rig = Rig::start().await;
    let mut dlq = DeadLetters::new(&rig.settings);
    let event = signup(
        "p",
        "evt-1",
        json!({"user_id": "u-1", "plan": "pro", "at": 1}),
    );
    // The same event twice (a redelivery), then another event for the same user with
    // another id (a re-sent signup; `at` is not part of the saga input).
    rig.send(&event).await;
    rig.send(&event).await;
    rig.send(&signup(
        "p",
        "evt-2",
        json!({"user_id": "u-1", "plan": "pro", "at": 2}),
    ))
    .await;
    // Same key, different input: cannot start a second saga, and is not dropped silently.
    rig.send(&signup(
        "p",
        "evt-3",
        json!({"user_id": "u-1", "plan": "basic"}),
    ))
    .await;
    // Same partition, after all of the above: once its saga exists, they were consumed.
    rig.send(&signup("p", "evt-4", json!({"user_id": "u-2"})))
        .await;

    let sentinel = saga_by_key(&rig.store, "u-2").await;
    assert_eq!(count_by_key(&rig.store, "u-1").await, 1);
    let id = saga_by_key(&rig.store, "u-1").await;
    let inst = wait_status(&rig.store, id, SagaStatus::Completed, WAIT).await;
    assert_eq!(inst.input, json!({"user_id": "u-1", "plan": "pro"}));
    assert_eq!(inst.key.as_deref(), Some("u-1"));
    assert_eq!(
        sent(&rig.store, id).await,
        ["cmd:open_account#1", "cmd:activate#1"]
    );
    let kinds: Vec<String> = timeline(&rig.store, id)
        .await
        .into_iter()
        .map(|h| h.kind)
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "started").count(), 1);
    wait_status(&rig.store, sentinel, SagaStatus::Completed, WAIT).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas WHERE definition = 'fast-trigger'")
        .fetch_one(&rig.store.pool)
        .await
        .unwrap();
    assert_eq!(n, 2);

    let conflict = dlq
        .wait_for("for evt-3", |m| {
            header(m, "ce_id").as_deref() == Some("evt-3")
        })
        .await;
    let reason = header(&conflict, "dlq-reason").unwrap();
    assert!(reason.contains("business key already used"), "{reason}");
    assert!(
        dlq.seen
            .iter()
            .all(|m| header(m, "ce_id").as_deref() == Some("evt-3")),
        "only the conflicting event is dead-lettered: {:?}",
        dlq.reasons()
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_reply_is_applied_once() {
    let rig = Rig::start().await;
    let mut dlq = DeadLetters::new(&rig.settings);
    let id = rig.start_saga("fast-manual", json!({"n": 1})).await;
    eventually("manual#1 to be sent", WAIT, || async {
        (sent(&rig.store, id).await == ["cmd:manual#1"]).then_some(())
    })
    .await;
    let done = reply(
        &rig.settings,
        id,
        "manual",
        1,
        "fast.manual_done",
        "dup-1",
        json!({"ticket": "T-1"}),
    );
    rig.send(&done).await;
    rig.send(&done).await;
    let inst = wait_status(&rig.store, id, SagaStatus::Completed, WAIT).await;
    assert_eq!(inst.output, Some(json!({"first": {"ticket": "T-1"}})));
    // follow_up's reply came after both copies on the same partition (key = saga id),
    // so both were consumed before the saga completed; the second was dropped by the
    // inbox before reaching the engine, so it is not even recorded.
    assert_eq!(
        step_timeline(&rig.store, id, "manual").await,
        ["command_sent#1", "reply_received#1", "step_succeeded"]
    );
    assert_eq!(
        sent(&rig.store, id).await,
        ["cmd:manual#1", "cmd:follow_up#1"]
    );

    // Redelivered once more after completion, then a sentinel on the same partition
    // (a reply for an unknown saga, keyed by this saga's id) that is dead-lettered:
    // once it is on the dead-letter topic, the duplicate has been consumed too.
    let before = timeline(&rig.store, id).await.len();
    rig.send(&done).await;
    let mut sentinel = reply(
        &rig.settings,
        Uuid::new_v4(),
        "manual",
        1,
        "fast.manual_done",
        "sentinel-1",
        json!({}),
    );
    sentinel.key = id.to_string();
    rig.send(&sentinel).await;
    dlq.wait_for("for the sentinel", |m| {
        header(m, "ce_id").as_deref() == Some("sentinel-1")
    })
    .await;
    assert_eq!(timeline(&rig.store, id).await.len(), before);
    assert!(
        dlq.seen
            .iter()
            .all(|m| header(m, "ce_id").as_deref() != Some("dup-1")),
        "a duplicate is not a dead letter"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_reply_to_a_timed_out_attempt_settles_the_step() {
    let rig = Rig::start().await;
    let id = rig.start_saga("fast-manual", json!({"n": 2})).await;
    // Nobody answers attempt 1: it times out after 1 s and attempt 2 goes out.
    eventually("manual#2 to be sent", WAIT, || async {
        (sent(&rig.store, id).await == ["cmd:manual#1", "cmd:manual#2"]).then_some(())
    })
    .await;
    // Attempt 1's answer arrives while attempt 2 is out: it is news, not a duplicate.
    rig.send(&reply(
        &rig.settings,
        id,
        "manual",
        1,
        "fast.manual_done",
        "late-1",
        json!({"ticket": "late"}),
    ))
    .await;
    let late = eventually("the late reply to be recorded", WAIT, || async {
        timeline(&rig.store, id)
            .await
            .into_iter()
            .find(|h| h.kind == "late_reply")
    })
    .await;
    assert_eq!(late.attempt, Some(1));
    assert_eq!(late.detail["message_id"], "late-1");
    assert_eq!(late.detail["effect"], "settled: the step succeeded");
    let inst = eventually("manual to succeed", WAIT, || async {
        let inst = saga(&rig.store, id).await;
        (inst.steps[0].forward.status == StepStatus::Succeeded).then_some(inst)
    })
    .await;
    assert_eq!(inst.steps[0].reply, Some(json!({"ticket": "late"})));

    // Attempt 2's own answer, later still, changes nothing and is not a duplicate either.
    rig.send(&reply(
        &rig.settings,
        id,
        "manual",
        2,
        "fast.manual_done",
        "fresh-2",
        json!({"ticket": "fresh"}),
    ))
    .await;
    eventually("attempt 2's answer to be recorded", WAIT, || async {
        let kinds = step_timeline(&rig.store, id, "manual").await;
        (kinds
            == [
                "command_sent#1",
                "timed_out#1",
                "retry_scheduled#2",
                "command_sent#2",
                "late_reply#1",
                "step_succeeded",
                "late_reply#2",
            ])
        .then_some(())
    })
    .await;
    let inst = saga(&rig.store, id).await;
    assert_eq!(inst.steps[0].reply, Some(json!({"ticket": "late"})));
    assert!(
        timeline(&rig.store, id)
            .await
            .iter()
            .all(|h| h.kind != "reply_ignored"),
        "no reply was set aside"
    );
    assert_eq!(
        sent(&rig.store, id).await[..3],
        ["cmd:manual#1", "cmd:manual#2", "cmd:follow_up#1"]
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unroutable_messages_are_dead_lettered_and_the_consumer_carries_on() {
    let rig = Rig::start().await;
    let mut dlq = DeadLetters::new(&rig.settings);

    // A well-formed reply for a saga that does not exist.
    let ghost = Uuid::new_v4();
    rig.send(&reply(
        &rig.settings,
        ghost,
        "manual",
        1,
        "fast.manual_done",
        "ghost-1",
        json!({}),
    ))
    .await;
    // Bytes that are not a CloudEvent, with no headers at all.
    let garbage: &[u8] = b"\x00\xffnot a cloudevent";
    rig.producer
        .send(
            FutureRecord::<str, [u8]>::to(&rig.topic(REPLIES))
                .key("garbage")
                .payload(garbage),
            Timeout::After(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    // A CloudEvent without the saga attributes a reply needs.
    rig.send(&Record {
        topic: REPLIES.into(),
        key: "anonymous".into(),
        headers: vec![
            ("ce_specversion".into(), "1.0".into()),
            ("ce_id".into(), "anon-1".into()),
            ("ce_source".into(), "/tests".into()),
            ("ce_type".into(), "fast.manual_done".into()),
        ],
        payload: b"{}".to_vec(),
    })
    .await;
    // A reply naming a step that the (existing) saga does not have.
    let real = rig.start_saga("fast-manual", json!({"n": 3})).await;
    rig.send(&reply(
        &rig.settings,
        real,
        "no_such_step",
        1,
        "fast.manual_done",
        "nostep-1",
        json!({}),
    ))
    .await;

    let m = dlq
        .wait_for("for the unknown saga", |m| {
            header(m, "ce_id").as_deref() == Some("ghost-1")
        })
        .await;
    assert_eq!(
        header(&m, "dlq-reason").as_deref(),
        Some("reply for an unknown saga")
    );
    assert_eq!(header(&m, "dlq-original-topic"), Some(rig.topic(REPLIES)));
    assert_eq!(m.key(), Some(ghost.to_string().as_bytes()));

    let m = dlq
        .wait_for("for the garbage", |m| m.payload() == Some(garbage))
        .await;
    assert_eq!(
        header(&m, "dlq-reason").as_deref(),
        Some("missing CloudEvents attribute `specversion`")
    );
    assert_eq!(header(&m, "dlq-original-topic"), Some(rig.topic(REPLIES)));
    assert!(header(&m, "dlq-original-offset").is_some());
    assert_eq!(m.key(), Some(&b"garbage"[..]));

    let m = dlq
        .wait_for("for the anonymous reply", |m| {
            header(m, "ce_id").as_deref() == Some("anon-1")
        })
        .await;
    let reason = header(&m, "dlq-reason").unwrap();
    assert!(reason.starts_with("unroutable reply"), "{reason}");

    let m = dlq
        .wait_for("for the unknown step", |m| {
            header(m, "ce_id").as_deref() == Some("nostep-1")
        })
        .await;
    let reason = header(&m, "dlq-reason").unwrap();
    assert!(reason.contains("no_such_step"), "{reason}");

    // The saga the bad reply named is untouched, and new sagas still complete.
    assert!(
        step_timeline(&rig.store, real, "manual")
            .await
            .iter()
            .all(|k| !k.starts_with("reply")),
    );
    let id = rig
        .start_saga("fast-linear", json!({"order_id": "after-dlq"}))
        .await;
    wait_status(&rig.store, id, SagaStatus::Completed, WAIT).await;
    assert_eq!(
        sent(&rig.store, id).await,
        [
            "cmd:reserve#1",
            "cmd:charge#1",
            "cmd:commit#1",
            "cmd:notify#1"
        ]
    );
    assert_eq!(dlq.seen.len(), 4, "{:?}", dlq.reasons());
    rig.stop().await;
}

/// A message is dead-lettered after its batch's transaction commits. If that publish
/// fails, the batch is processed again; the message must still reach the dead-letter
/// topic then, rather than be taken for a duplicate of itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letter_survives_a_failed_first_publish() {
    log_init();
    let dir = repo_path("tests/sagas-fast");
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let mut settings = settings(&db, &broker, &dir);
    settings.kafka.create_topics = false;
    settings.kafka.dead_letter_topic = topic(&settings, "fast.dead-letter-late");
    settings
        .kafka
        .properties
        .insert("message.timeout.ms".into(), "1000".into());
    // Apache Kafka creates a topic a producer names unless told not to.
    settings
        .kafka
        .properties
        .insert("allow.auto.create.topics".into(), "false".into());
    // Every topic but the dead-letter one.
    let mut others = settings.clone();
    others.kafka.dead_letter_topic = topic(&settings, "fast.unused");
    let (defs, _) = sagaflow::definition::load_dir(&settings.runtime.sagas_dir);
    sagaflow::runtime::service::ensure_topics(
        &others,
        &sagaflow::runtime::registry::Registry::new(defs),
    )
    .await
    .unwrap();
    let svc = InProcess::start(settings.clone()).await;
    let p = participants(
        &settings,
        load_defs(&settings.runtime.sagas_dir),
        Arc::new(|_c| (Decision::Silence, Duration::ZERO)),
    );
    let store = db.store().await;
    let producer = kafka::producer(&settings.kafka).unwrap();
    let send = |mut r: Record| {
        let producer = producer.clone();
        r.topic = topic(&settings, &r.topic);
        async move {
            kafka::send(&producer, &r, Duration::from_secs(10))
                .await
                .unwrap()
        }
    };

    let (status, body) = http(
        "POST",
        &svc.url("/v1/sagas/fast-manual"),
        Some(&json!({"input": {"n": 4}})),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let id: Uuid = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    send(reply(
        &settings,
        id,
        "no_such_step",
        1,
        "fast.manual_done",
        "nostep-2",
        json!({}),
    ))
    .await;
    // Its transaction committed without an inbox row (it was rejected) and the
    // dead-letter publish failed.
    eventually(
        "the consumer to report the failed publish",
        WAIT,
        || async {
            let claimed: i64 =
                sqlx::query_scalar("SELECT count(*) FROM inbox WHERE message_id LIKE '%|nostep-2'")
                    .fetch_one(&store.pool)
                    .await
                    .unwrap();
            let ready = http_get(&svc.url("/readyz")).await.unwrap();
            (claimed == 0 && ready.0 == 503).then_some(())
        },
    )
    .await;

    let mut created = settings.clone();
    created.kafka.create_topics = true;
    sagaflow::runtime::service::ensure_topics(
        &created,
        &sagaflow::runtime::registry::Registry::default(),
    )
    .await
    .unwrap();
    // A sentinel behind it on the same partition.
    let mut sentinel = reply(
        &settings,
        Uuid::new_v4(),
        "manual",
        1,
        "fast.manual_done",
        "sentinel-2",
        json!({}),
    );
    sentinel.key = id.to_string();
    send(sentinel).await;
    let mut dlq = DeadLetters::new(&settings);
    dlq.wait_for("for the sentinel", |m| {
        header(m, "ce_id").as_deref() == Some("sentinel-2")
    })
    .await;
    assert!(
        dlq.seen
            .iter()
            .any(|m| header(m, "ce_id").as_deref() == Some("nostep-2")),
        "the reply naming an unknown step was dropped: {:?}",
        dlq.reasons()
    );
    p.stop().await;
    svc.stop().await;
}
