import type { Outcome, Phase } from './types.js';

/** Both phases' stored outcomes of one (saga id, step), as read under the lock. */
export interface StepOutcomes {
  readonly command: Outcome | undefined;
  readonly compensation: Outcome | undefined;
}

/** One unit of work on (saga id, step): the lock is held and the transaction open until it ends. */
export interface StepTransaction<Tx> {
  readonly outcomes: StepOutcomes;
  /** The store's transaction handle, handed to handlers for their own writes. */
  readonly handle: Tx;
  /** Records the outcome of `phase`, replacing any stored one; committed when the unit of work returns. */
  save(phase: Phase, outcome: Outcome): Promise<void>;
}

/**
 * Keeps one outcome per (saga id, step, phase). `withStep` holds a lock on (saga id, step) for the duration of
 * `work`, so a command and a compensation of one step never run at once; it commits what `work` saved when it
 * returns and rolls back when it throws.
 */
export interface Store<Tx = unknown> {
  withStep<T>(sagaId: string, step: string, work: (transaction: StepTransaction<Tx>) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}
