// Every protocol vector against the in-memory store: one test per vector file, named after it.
import { describe, test } from 'node:test';
import { MemoryStore } from '../src/index.js';
import { loadVector, runVector, vectorFiles } from './vector-runner.js';

describe('protocol vectors, in-memory store', () => {
  for (const file of vectorFiles()) {
    test(file, async () => {
      await runVector(loadVector(file), new MemoryStore());
    });
  }
});
