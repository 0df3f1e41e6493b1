import { Counter, Gauge, Histogram } from 'prom-client';
import { processRegistry } from '../engine/metrics.js';

/** The router's metrics (GET /metrics), by branch `<db>/<branch>` where there is one. */

const registers = [processRegistry];

export const proxyMetrics = {
  open: new Gauge({
    name: 'bpg_proxy_connections_open',
    help: 'Client connections open through the router, by branch',
    labelNames: ['branch'] as const,
    registers,
  }),
  total: new Counter({
    name: 'bpg_proxy_connections_total',
    help: 'Client connections the router relayed to a branch, by branch',
    labelNames: ['branch'] as const,
    registers,
  }),
  bytes: new Counter({
    name: 'bpg_proxy_bytes_total',
    help: 'Bytes relayed, by branch and direction (to_branch: from clients; to_client: from the branch)',
    labelNames: ['branch', 'direction'] as const,
    registers,
  }),
  refused: new Counter({
    name: 'bpg_proxy_refused_total',
    help: 'Connections the router refused, by reason (no_tls, unknown, busy, stopped, too_many, protocol, timeout, unreachable, wake_failed)',
    labelNames: ['reason'] as const,
    registers,
  }),
  wakes: new Counter({
    name: 'bpg_proxy_wakes_total',
    help: 'Idle-stopped branches the router started for a connecting client, by result',
    labelNames: ['result'] as const,
    registers,
  }),
  wakeSeconds: new Histogram({
    name: 'bpg_proxy_wake_duration_seconds',
    help: 'From a client asking for an idle-stopped branch to the branch being ready',
    buckets: [0.25, 0.5, 1, 2, 5, 10, 30, 120],
    registers,
  }),
  cancels: new Counter({
    name: 'bpg_proxy_cancel_requests_total',
    help: 'Cancel requests received, by result (forwarded, unknown)',
    labelNames: ['result'] as const,
    registers,
  }),
};

export type RefusalReason =
  'no_tls' | 'unknown' | 'busy' | 'stopped' | 'too_many' | 'protocol' | 'timeout' | 'unreachable' | 'wake_failed';
