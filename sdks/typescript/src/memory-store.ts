// The in-memory store: for tests and demos, a restart forgets everything.
import type { Store, StepTransaction } from './store.js';
import type { Outcome, Phase } from './types.js';

export class MemoryStore implements Store<undefined> {
  private readonly outcomes = new Map<string, Outcome>();
  /** The tail of each (saga id, step)'s queue of units of work: the lock. */
  private readonly locks = new Map<string, Promise<void>>();

  async withStep<T>(sagaId: string, step: string, work: (tx: StepTransaction<undefined>) => Promise<T>): Promise<T> {
    const key = `${sagaId.toLowerCase()}/${step}`;
    const release = await this.lock(key);
    try {
      const pending = new Map<string, Outcome>();
      const result = await work({
        outcomes: {
          command: this.outcomes.get(`${key}/command`),
          compensation: this.outcomes.get(`${key}/compensation`),
        },
        handle: undefined,
        save: (phase: Phase, outcome: Outcome) => {
          pending.set(`${key}/${phase}`, structuredClone(outcome));
          return Promise.resolve();
        },
      });
      // Only a unit of work that returned is committed, as with a database transaction.
      for (const [k, outcome] of pending) this.outcomes.set(k, outcome);
      return result;
    } finally {
      release();
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  private async lock(key: string): Promise<() => void> {
    const previous = this.locks.get(key) ?? Promise.resolve();
    let release!: () => void;
    const current = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => current);
    this.locks.set(key, tail);
    await previous;
    return () => {
      release();
      // Forget the key when nobody queued behind us, so the map does not grow with every saga.
      if (this.locks.get(key) === tail) this.locks.delete(key);
    };
  }
}
