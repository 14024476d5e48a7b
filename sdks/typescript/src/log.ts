// The logger the library writes to, and a limiter for warnings that would otherwise repeat on every poll.

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string, error?: unknown): void;
}

export const consoleLogger: Logger = {
  info: (message) => console.log(`[sagaflow-participant] ${message}`),
  warn: (message) => console.warn(`[sagaflow-participant] ${message}`),
  error: (message, error) => console.error(`[sagaflow-participant] ${message}`, error ?? ''),
};

/**
 * Lets one warning through at once, then the same text again only after `everyMs`; a different text goes
 * through at once. A condition that lasts (a topic not created yet) is then reported, not repeated every poll.
 */
export class RepeatLimiter {
  private last: { readonly text: string; readonly at: number } | undefined;

  constructor(
    private readonly everyMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  allows(text: string): boolean {
    const now = this.now();
    if (this.last !== undefined && this.last.text === text && now - this.last.at < this.everyMs) return false;
    this.last = { text, at: now };
    return true;
  }

  /** The condition is over: the next occurrence is reported at once. */
  reset(): void {
    this.last = undefined;
  }
}
