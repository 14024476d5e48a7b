//! Where a lone saga's milliseconds go. A tap consumer (its own group) reads the
//! command and reply topics, and sagaflow's lifecycle topic, and notes for each message
//! when it became readable (the tap's receive time, which is when the participant's or
//! the orchestrator's own long-polling fetch gets it too) and when it was produced
//! (the record's `CreateTime`, which librdkafka stamps when `produce` is called).
//! Each saga's time from its start to its end then splits into hops that add up.
//!
//! `CreateTime` has millisecond resolution and is truncated, so 0.5 ms is added to it:
//! over a few hundred sagas that makes the split unbiased, not exact per message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use sagaflow::config::KafkaSettings;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::consume;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Command,
    Reply,
    /// sagaflow's `sagaflow.saga.completed` (or compensated, failed) event.
    End,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    role: Role,
    produced: Instant,
    readable: Instant,
}

/// One hop's mean over the sagas measured, in ms.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    pub hop: String,
    pub mean_ms: f64,
}

/// One saga the scenario ran: when it was started, when its start had committed, and
/// when its end was seen.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    pub id: Uuid,
    pub started: Instant,
    pub committed: Instant,
    pub ended: Instant,
}

/// Which topics hold what, for one system under test.
pub struct Topics<'a> {
    pub commands: &'a str,
    pub replies: &'a str,
    /// sagaflow's lifecycle topic; none for the baseline, whose saga ends at its commit.
    pub lifecycle: Option<&'a str>,
}

#[derive(Clone)]
pub struct Tap {
    seen: Arc<Mutex<HashMap<Uuid, Vec<Seen>>>>,
}

impl Tap {
    pub fn start(
        settings: &KafkaSettings,
        topics: &Topics<'_>,
        cancel: CancellationToken,
    ) -> anyhow::Result<Tap> {
        let consumer: StreamConsumer = consume::own_group(settings, "bench-tap")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut names = vec![topics.commands, topics.replies];
        names.extend(topics.lifecycle);
        consumer.subscribe(&names)?;
        let (commands, replies) = (topics.commands.to_owned(), topics.replies.to_owned());
        let tap = Tap {
            seen: Arc::default(),
        };
        let seen = tap.seen.clone();
        tokio::spawn(async move {
            while let Some(m) = consume::next(&consumer, &cancel).await {
                let (readable, wall) = (Instant::now(), SystemTime::now());
                let role = if m.topic() == commands {
                    Role::Command
                } else if m.topic() == replies {
                    Role::Reply
                } else {
                    Role::End
                };
                let Some(id) = saga_of(&m) else { continue };
                if role == Role::End && crate::terminal_of(&m).is_none() {
                    continue;
                }
                let Some(produced) = produced_at(&m, readable, wall) else {
                    continue;
                };
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(id)
                    .or_default()
                    .push(Seen {
                        role,
                        produced,
                        readable,
                    });
            }
        });
        Ok(tap)
    }

    /// Waits until the tap has been given its partitions, so it sees a saga's first
    /// command.
    pub async fn ready(&self, probe: impl AsyncFnOnce() -> anyhow::Result<Uuid>) {
        let Ok(id) = probe().await else { return };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && !self.lock().contains_key(&id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<Seen>>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Splits each saga's `(id, started, committed, ended)` (`committed`: when its start
    /// transaction had committed) into hops; sagas whose messages do not
    /// form the plain command, reply, … sequence of `steps` steps are left out.
    /// Returns the hops' means and how many sagas they cover.
    pub async fn breakdown(
        &self,
        sagas: &[Timed],
        steps: usize,
        ends_with_event: bool,
    ) -> (Vec<Hop>, usize) {
        // The tap may still be reading the last saga's end event.
        let deadline = Instant::now() + Duration::from_secs(5);
        let want = 2 * steps + usize::from(ends_with_event);
        while Instant::now() < deadline {
            let complete = sagas
                .last()
                .is_none_or(|t| self.lock().get(&t.id).is_some_and(|v| v.len() >= want));
            if complete {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seen = std::mem::take(&mut *self.lock());
        let split: Vec<Vec<f64>> = sagas
            .iter()
            .filter_map(|t| split(seen.get(&t.id)?, t, steps, ends_with_event))
            .collect();
        let n = split.len();
        let names = hop_names(ends_with_event);
        let hops = names
            .iter()
            .enumerate()
            .map(|(i, name)| Hop {
                hop: (*name).to_owned(),
                mean_ms: if n == 0 {
                    f64::NAN
                } else {
                    split.iter().map(|s| s[i]).sum::<f64>() / n as f64
                },
            })
            .collect();
        (hops, n)
    }
}

fn hop_names(ends_with_event: bool) -> Vec<&'static str> {
    let mut names = vec![
        "start transaction, until committed",
        "start committed → first command produced",
        "broker: commands produced → readable",
        "participant: command readable → reply produced",
        "broker: replies produced → readable",
        "orchestrator: reply readable → next command produced",
    ];
    if ends_with_event {
        names.extend([
            "orchestrator: last reply readable → end event produced",
            "broker: end event produced → read",
        ]);
    } else {
        names.push("orchestrator: last reply readable → committed");
    }
    names
}

/// One saga's hops in ms, in [`hop_names`] order.
fn split(seen: &[Seen], timed: &Timed, steps: usize, ends_with_event: bool) -> Option<Vec<f64>> {
    let mut seen = seen.to_vec();
    seen.sort_by_key(|s| s.readable);
    let expected = (0..steps)
        .flat_map(|_| [Role::Command, Role::Reply])
        .chain(ends_with_event.then_some(Role::End));
    if seen.len() != 2 * steps + usize::from(ends_with_event)
        || !seen.iter().map(|s| s.role).eq(expected)
    {
        return None;
    }
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
    let (commands, replies): (Vec<Seen>, Vec<Seen>) = seen[..2 * steps]
        .iter()
        .partition(|s| s.role == Role::Command);
    let mut hops = vec![
        ms(timed.started, timed.committed),
        ms(timed.committed, commands[0].produced),
        commands.iter().map(|c| ms(c.produced, c.readable)).sum(),
        commands
            .iter()
            .zip(&replies)
            .map(|(c, r)| ms(c.readable, r.produced))
            .sum(),
        replies.iter().map(|r| ms(r.produced, r.readable)).sum(),
        replies
            .iter()
            .zip(&commands[1..])
            .map(|(r, c)| ms(r.readable, c.produced))
            .sum(),
    ];
    let last = replies[steps - 1].readable;
    if ends_with_event {
        let end = seen[2 * steps];
        hops.extend([ms(last, end.produced), ms(end.produced, timed.ended)]);
    } else {
        hops.push(ms(last, timed.ended));
    }
    Some(hops)
}

/// The saga a message belongs to: `ce_sagaid`, or the baseline's `id:step` payload.
fn saga_of(m: &impl Message) -> Option<Uuid> {
    match crate::header(m, "ce_sagaid") {
        Some(id) => Uuid::parse_str(id).ok(),
        None => crate::baseline::saga_of_payload(m.payload()?),
    }
}

/// The record's `CreateTime` on the monotonic clock, by its distance from the wall clock
/// at `readable`.
fn produced_at(m: &impl Message, readable: Instant, wall: SystemTime) -> Option<Instant> {
    let created_ms = m.timestamp().to_millis()?;
    let wall_us = wall.duration_since(UNIX_EPOCH).ok()?.as_micros() as i64;
    let age_us = (wall_us - created_ms * 1000 - 500).max(0) as u64;
    readable.checked_sub(Duration::from_micros(age_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn hops_add_up_to_the_saga_and_odd_sequences_are_left_out() {
        let t = Instant::now();
        let s = |role, produced, readable| Seen {
            role,
            produced: at(t, produced),
            readable: at(t, readable),
        };
        let seen = vec![
            s(Role::Command, 2, 3),
            s(Role::Reply, 4, 6),
            s(Role::Command, 9, 10),
            s(Role::Reply, 11, 13),
            s(Role::End, 15, 16),
        ];
        let timed = |ended| Timed {
            id: Uuid::nil(),
            started: t,
            committed: at(t, 1),
            ended: at(t, ended),
        };
        let hops = split(&seen, &timed(18), 2, true).expect("a plain sequence");
        assert_eq!(hops, vec![1.0, 1.0, 2.0, 2.0, 4.0, 3.0, 2.0, 3.0]);
        assert_eq!(hops.iter().sum::<f64>(), 18.0);
        assert!(split(&seen[..4], &timed(18), 2, true).is_none());
        assert!(split(&seen[1..], &timed(18), 2, false).is_none());
        let baseline = split(&seen[..4], &timed(14), 2, false).expect("no end event");
        assert_eq!(baseline.iter().sum::<f64>(), 14.0);
    }
}
