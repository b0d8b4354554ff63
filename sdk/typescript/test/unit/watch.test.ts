import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  AiprodError,
  JobEventSchema,
  JobState,
  watchJobEvents,
  type JobEvent,
  type OpenWatchStream,
  type ReconnectInfo,
} from "@aiprod/sdk";

const STATES = [
  JobState.QUEUED,
  JobState.PLANNING,
  JobState.AWAITING_APPROVAL,
  JobState.RENDERING,
  JobState.RENDERING,
  JobState.QUALITY_CHECK,
  JobState.DELIVERED,
];

function events(states: JobState[] = STATES): JobEvent[] {
  return states.map((state, i) => create(JobEventSchema, { jobId: "job_1", sequence: BigInt(i + 1), state }));
}

/** What one fake stream does: fail after `failAfter` events with `error`, or end cleanly after `endAfter`. */
interface Script {
  failAfter?: number;
  error?: unknown;
  endAfter?: number;
  /** Replay from this sequence instead of after_sequence (a misbehaving server). */
  replayFrom?: bigint;
}

/** A fake WatchJob server: replays `all` after the requested sequence, following one script per attempt. */
function fakeServer(all: JobEvent[], scripts: Script[]) {
  const requests: bigint[] = [];
  const signals: AbortSignal[] = [];
  const open: OpenWatchStream = (request, signal) => {
    const attempt = requests.length;
    requests.push(request.afterSequence);
    signals.push(signal);
    const script = scripts[attempt] ?? {};
    return (async function* () {
      let sent = 0;
      const from = script.replayFrom ?? request.afterSequence;
      for (const event of all) {
        if (event.sequence <= from) continue;
        if (script.failAfter !== undefined && sent === script.failAfter) throw script.error;
        if (script.endAfter !== undefined && sent === script.endAfter) return;
        sent++;
        yield { event };
      }
    })();
  };
  return { open, requests, signals };
}

const unavailable = new ConnectError("server shutting down", Code.Unavailable);
const fast = { initialBackoffMs: 1, maxBackoffMs: 2 };

async function collect(it: AsyncIterable<JobEvent>): Promise<bigint[]> {
  const seen: bigint[] = [];
  for await (const e of it) seen.push(e.sequence);
  return seen;
}

describe("watchJobEvents", () => {
  it("yields every event once and stops after the terminal event", async () => {
    const server = fakeServer(events(), []);
    assert.deepEqual(await collect(watchJobEvents(server.open, "job_1", fast)), [1n, 2n, 3n, 4n, 5n, 6n, 7n]);
    assert.deepEqual(server.requests, [0n]);
  });

  it("starts after afterSequence", async () => {
    const server = fakeServer(events(), []);
    assert.deepEqual(await collect(watchJobEvents(server.open, "job_1", { ...fast, afterSequence: 4 })), [5n, 6n, 7n]);
    assert.deepEqual(server.requests, [4n]);
  });

  it("resumes after UNAVAILABLE from the last yielded sequence, without gap or duplicate", async () => {
    const server = fakeServer(events(), [{ failAfter: 2, error: unavailable }, { failAfter: 3, error: unavailable }]);
    const reconnects: ReconnectInfo[] = [];
    const seen = await collect(watchJobEvents(server.open, "job_1", { ...fast, onReconnect: (i) => reconnects.push(i) }));
    assert.deepEqual(seen, [1n, 2n, 3n, 4n, 5n, 6n, 7n]);
    assert.deepEqual(server.requests, [0n, 2n, 5n]);
    assert.deepEqual(reconnects.map((r) => [r.attempt, r.afterSequence, r.error.code]), [
      [1, 2n, Code.Unavailable],
      [1, 5n, Code.Unavailable],
    ]);
  });

  it("resumes after a transport error (stream reset / connection loss)", async () => {
    const reset = new ConnectError("http/2 stream closed with error code INTERNAL_ERROR (0x2)", Code.Internal);
    const lost = new ConnectError("read ECONNRESET", Code.Aborted);
    const server = fakeServer(events(), [{ failAfter: 1, error: reset }, { failAfter: 1, error: lost }]);
    assert.deepEqual(await collect(watchJobEvents(server.open, "job_1", fast)), [1n, 2n, 3n, 4n, 5n, 6n, 7n]);
    assert.deepEqual(server.requests, [0n, 1n, 2n]);
  });

  it("skips events replayed twice by the server", async () => {
    const server = fakeServer(events(), [{ failAfter: 3, error: unavailable }, { replayFrom: 0n }]);
    assert.deepEqual(await collect(watchJobEvents(server.open, "job_1", fast)), [1n, 2n, 3n, 4n, 5n, 6n, 7n]);
  });

  it("fails with DATA_LOSS when the server skips a sequence", async () => {
    const all = events().filter((e) => e.sequence !== 3n);
    const server = fakeServer(all, []);
    await assert.rejects(collect(watchJobEvents(server.open, "job_1", fast)), (e: unknown) => {
      assert.ok(e instanceof AiprodError);
      assert.equal(e.code, Code.DataLoss);
      return true;
    });
  });

  it("does not retry errors that are not transient", async () => {
    const notFound = new ConnectError("job not found", Code.NotFound, { "grpc-status": "5" });
    const server = fakeServer(events(), [{ failAfter: 0, error: notFound }]);
    await assert.rejects(collect(watchJobEvents(server.open, "job_1", fast)), (e: unknown) => {
      assert.ok(e instanceof AiprodError);
      assert.equal(e.code, Code.NotFound);
      return true;
    });
    assert.equal(server.requests.length, 1);
  });

  it("does not retry an INTERNAL error sent by the server", async () => {
    const internal = new ConnectError("bug", Code.Internal, { "grpc-status": "13" });
    const server = fakeServer(events(), [{ failAfter: 0, error: internal }]);
    await assert.rejects(collect(watchJobEvents(server.open, "job_1", fast)), { code: Code.Internal });
    assert.equal(server.requests.length, 1);
  });

  it("gives up after maxRetries consecutive failures", async () => {
    const always = Array.from({ length: 10 }, () => ({ failAfter: 0, error: unavailable }));
    const server = fakeServer(events(), always);
    await assert.rejects(collect(watchJobEvents(server.open, "job_1", { ...fast, maxRetries: 3 })), {
      code: Code.Unavailable,
    });
    assert.equal(server.requests.length, 4);
  });

  it("resets the retry budget after progress", async () => {
    // Each attempt yields one event then fails: 7 failures in all, but never 2 in a row.
    const scripts = Array.from({ length: 7 }, () => ({ failAfter: 1, error: unavailable }));
    const server = fakeServer(events(), scripts);
    assert.equal((await collect(watchJobEvents(server.open, "job_1", { ...fast, maxRetries: 1 }))).length, 7);
  });

  it("honours the server's RetryInfo delay", async () => {
    const withRetryInfo = new AiprodError(Code.Unavailable, "draining", { metadata: { "grpc-status": "14" } });
    Object.defineProperty(withRetryInfo, "retryDelayMs", { value: 30 });
    const server = fakeServer(events(), [{ failAfter: 1, error: withRetryInfo }]);
    const delays: number[] = [];
    await collect(watchJobEvents(server.open, "job_1", { ...fast, onReconnect: (i) => delays.push(i.delayMs) }));
    assert.deepEqual(delays, [30]);
  });

  it("reconnects when a stream ends early, and stops when the job turns out finished", async () => {
    const server = fakeServer(events(), [{ endAfter: 2 }]);
    assert.equal((await collect(watchJobEvents(server.open, "job_1", fast, async () => false))).length, 7);
    assert.deepEqual(server.requests, [0n, 2n]);

    const done = fakeServer(events(), []);
    const seen = await collect(watchJobEvents(done.open, "job_1", { ...fast, afterSequence: 7 }, async (_, after) => after === 7n));
    assert.deepEqual(seen, []);
    assert.deepEqual(done.requests, [7n]);
  });

  it("cancels the underlying stream when the consumer stops early", async () => {
    const server = fakeServer(events(), []);
    for await (const e of watchJobEvents(server.open, "job_1", fast)) {
      if (e.sequence === 2n) break;
    }
    assert.equal(server.signals[0]?.aborted, true);
  });

  it("stops with CANCELLED when the caller's signal aborts", async () => {
    const controller = new AbortController();
    const server = fakeServer(events(), [{ failAfter: 1, error: unavailable }]);
    const watch = watchJobEvents(server.open, "job_1", { initialBackoffMs: 10_000, maxBackoffMs: 10_000, signal: controller.signal });
    const first = await watch.next();
    assert.equal(first.value?.sequence, 1n);
    setTimeout(() => controller.abort(), 10);
    await assert.rejects(watch.next(), { code: Code.Canceled });
  });

  it("stops with DEADLINE_EXCEEDED when an AbortSignal.timeout fires", async () => {
    const stalled: OpenWatchStream = (_req, signal) =>
      (async function* () {
        yield { event: events()[0] };
        await new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason), { once: true }));
      })();
    const seen: bigint[] = [];
    // AbortSignal.timeout's timer is unref'd: a real stream keeps the process alive, this fake one does not.
    const keepAlive = setTimeout(() => {}, 5000);
    try {
      await assert.rejects(
        (async () => {
          for await (const e of watchJobEvents(stalled, "job_1", { signal: AbortSignal.timeout(30) })) seen.push(e.sequence);
        })(),
        { code: Code.DeadlineExceeded },
      );
    } finally {
      clearTimeout(keepAlive);
    }
    assert.deepEqual(seen, [1n]);
  });
});
