/** Timed waits that `wakeAll()` cuts short, so a stop does not wait for a backoff to run out. */
export class Sleeper {
  private readonly waking = new Set<() => void>();

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.waking.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.waking.add(wake);
    });
  }

  wakeAll(): void {
    for (const wake of [...this.waking]) wake();
  }
}
