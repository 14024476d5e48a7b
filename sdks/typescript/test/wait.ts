// Waiting for a condition in tests: poll it until it holds, failing after a deadline (never a fixed sleep).
import assert from 'node:assert/strict';
import { setTimeout as tick } from 'node:timers/promises';

export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what = 'condition',
  deadlineMs = 5000,
): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`${what}: not met within ${deadlineMs} ms`);
    // A short pause between polls, so that waiting on a broker does not spin the CPU.
    await tick(10);
  }
}
