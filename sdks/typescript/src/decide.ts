// The decision table of protocol/README.md: what to do with a decoded message given what is stored for its
// (saga id, step). Pure: no I/O, no handler call.
import type { StepOutcomes } from './store.js';
import type { Command, Outcome } from './types.js';

export const REFUSAL_PAYLOAD = { error: 'the step was compensated before it ran' } as const;

export type Decision =
  /** Reply with a stored outcome; the handler is not called, nothing is stored. */
  | { readonly kind: 'replay'; readonly outcome: Outcome }
  /** Call the handler and store its outcome (replacing a stored retryable failure). */
  | { readonly kind: 'run' }
  /** Store this outcome without calling the handler, and reply with it. */
  | { readonly kind: 'record'; readonly outcome: Outcome }
  /** Reply nothing, store nothing. */
  | { readonly kind: 'skip' };

export interface DecisionInput {
  readonly command: Command;
  readonly outcomes: StepOutcomes;
  /** The registration's success type (for a compensation: the type of "nothing to undo"). */
  readonly successType: string;
  /** The registration's refusal type, commands only. */
  readonly refusalType: string | undefined;
  /** Whether a stored command outcome is a success (the library knows its registrations' success types). */
  readonly isCommandSuccess: (outcome: Outcome) => boolean;
}

export function decide(input: DecisionInput): Decision {
  const { command, outcomes } = input;
  const own = outcomes[command.phase];
  // A success, a non-retryable failure, or a repeat of the attempt that failed retryably: answer it again.
  if (own !== undefined && (!own.retryable || own.commandId === command.id)) return { kind: 'replay', outcome: own };
  return command.phase === 'command' ? decideCommand(input) : decideCompensation(input);
}

function decideCommand({ command, outcomes, refusalType }: DecisionInput): Decision {
  // Once the compensation was handled the command must never run (obligation 5), new attempt or not.
  if (outcomes.compensation === undefined) return { kind: 'run' };
  if (refusalType === undefined) return { kind: 'skip' };
  return {
    kind: 'record',
    outcome: { commandId: command.id, replyType: refusalType, payload: REFUSAL_PAYLOAD, retryable: false },
  };
}

function decideCompensation({ command, outcomes, successType, isCommandSuccess }: DecisionInput): Decision {
  const commandOutcome = outcomes.command;
  if (commandOutcome !== undefined && isCommandSuccess(commandOutcome)) return { kind: 'run' };
  // The command never ran here, or failed: nothing to undo (obligation 4).
  return { kind: 'record', outcome: { commandId: command.id, replyType: successType, payload: {}, retryable: false } };
}
