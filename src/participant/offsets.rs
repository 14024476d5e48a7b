//! Which command offsets the participant may commit (docs/protocol.md rule 31: only
//! after the broker has acknowledged the reply). Replies finish out of order (each
//! command waits its own latency), so per partition the committable position is the
//! lowest offset still unanswered, or one past the highest received when none is.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
struct Partition {
    /// Offsets received and not yet answered, with how many deliveries of each are open
    /// (a rebalance can deliver an offset again while its first handling still runs).
    open: BTreeMap<i64, u32>,
    /// One past the highest offset received.
    next: i64,
}

/// Open offsets per (topic, partition).
#[derive(Debug, Default)]
pub struct Pending {
    partitions: HashMap<(String, i32), Partition>,
}

impl Pending {
    /// A message at `offset` was received and is being handled.
    pub fn received(&mut self, topic: &str, partition: i32, offset: i64) {
        let p = self
            .partitions
            .entry((topic.to_owned(), partition))
            .or_default();
        *p.open.entry(offset).or_default() += 1;
        p.next = p.next.max(offset + 1);
    }

    /// The message at `offset` needs nothing more (its reply was acknowledged, or it
    /// gets none); the position the partition may now commit: the next offset to read.
    pub fn done(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&(topic.to_owned(), partition))?;
        if let Some(n) = p.open.get_mut(&offset) {
            *n -= 1;
            if *n == 0 {
                p.open.remove(&offset);
            }
        }
        Some(p.open.keys().next().copied().unwrap_or(p.next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_commits_only_up_to_its_lowest_unanswered_offset() {
        let mut p = Pending::default();
        for o in 5..8 {
            p.received("t", 0, o);
        }
        p.received("t", 1, 40);
        // 6 answered first: 5 is still open, so nothing past it may be committed.
        assert_eq!(p.done("t", 0, 6), Some(5));
        assert_eq!(p.done("t", 0, 5), Some(7));
        assert_eq!(p.done("t", 0, 7), Some(8));
        assert_eq!(p.done("t", 1, 40), Some(41));
        assert_eq!(p.done("u", 0, 1), None);
    }

    #[test]
    fn an_offset_delivered_twice_stays_open_until_both_are_answered() {
        let mut p = Pending::default();
        p.received("t", 0, 3);
        p.received("t", 0, 4);
        p.received("t", 0, 3);
        assert_eq!(p.done("t", 0, 3), Some(3));
        assert_eq!(p.done("t", 0, 4), Some(3));
        assert_eq!(p.done("t", 0, 3), Some(5));
    }
}
