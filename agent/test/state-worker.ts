// Test helper (run as a child process by concurrency.test): n locked read-change-writes.
import { StateStore } from '../state/store.js';

const [dir, prefix, n] = process.argv.slice(2) as [string, string, string];
const store = new StateStore(dir);
for (let i = 0; i < Number(n); i++) {
  await store.update((s) => {
    s.databases[`${prefix}-${i}`] = {
      name: `${prefix}-${i}`,
      image: 'x',
      createdAt: new Date().toISOString(),
      pgDatabase: 'x',
      operation: { kind: 'test', pid: process.pid, startedAt: '' },
      generation: 0,
      refreshedAt: null,
      retired: [],
      masking: null,
    };
  });
}
