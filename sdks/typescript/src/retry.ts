// A record whose processing failed is read again after a backoff, and only its own partition waits for it: the
// partition is paused and sought back to that record, and a timer resumes it. The consumer's loop meanwhile
// goes on fetching (and heartbeating), so the other partitions of the replica keep moving and the member keeps
// its place in the group however long the backoff. Nothing is committed for the failed record, so a rebalance
// hands it to the next owner as well.

/** The kafkajs calls a failed record needs, for the partition it came from. */
export interface PartitionControl {
  /** Stops fetching the partition; returns the function that resumes it (kafkajs's `payload.pause`). */
  pause(): () => void;
  /** Makes the partition's next fetch start at `offset` (kafkajs's `consumer.seek`). */
  seek(offset: string): void;
}

export class PartitionRetries {
  /** The record each partition is failing on, and the backoff it last waited. */
  private readonly failing = new Map<string, { readonly offset: string; readonly backoffMs: number }>();
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly firstBackoffMs: number,
    private readonly maxBackoffMs: number,
  ) {}

  /**
   * Pauses the partition at `offset` and schedules its resumption; returns the backoff in ms. The same record
   * failing again doubles the backoff, up to the maximum.
   */
  failed(topic: string, partition: number, offset: string, control: PartitionControl): number {
    const key = partitionKey(topic, partition);
    const previous = this.failing.get(key);
    const backoffMs = previous?.offset === offset ? Math.min(previous.backoffMs * 2, this.maxBackoffMs) : this.firstBackoffMs;
    this.failing.set(key, { offset, backoffMs });
    const resume = control.pause();
    // kafkajs resolves the offset of a record whose eachMessage returned; the seek undoes that, so the next
    // fetch after the resumption starts at this record again instead of after it.
    control.seek(offset);
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      resume();
    }, backoffMs);
    this.timers.add(timer);
    return backoffMs;
  }

  /** The partition moved past its failing record: the next failure starts from the first backoff again. */
  succeeded(topic: string, partition: number): void {
    this.failing.delete(partitionKey(topic, partition));
  }

  /** Drops pending resumptions: the consumer they would resume is going away. */
  cancel(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.failing.clear();
  }
}

function partitionKey(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}
