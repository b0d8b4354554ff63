// The SDK's production behaviour against the everyday faults of a real server (sdk/PRODUCTION.md):
// a restart mid-call and mid-watch, a rate-limited (Bronze) tenant, and deadlines shorter than the
// retry wait. test.sh runs this file on its own, after the other suites, because it restarts the
// server they share (AIPROD_TEST_SERVER_DIR, via scripts/test-server.sh restart).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { describe, it } from "node:test";
import { AiprodClient, AiprodError, Code, JobState, type AttemptInfo, type JobEvent } from "@aiprod/sdk";

const env = process.env;
const serverDir = env.AIPROD_TEST_SERVER_DIR;
const serverScript = env.AIPROD_TEST_SERVER_SCRIPT;
const skip =
  env.AIPROD_ENDPOINT && serverDir && serverScript ? false : "needs the server test.sh starts (AIPROD_TEST_SERVER_DIR)";
const brief = "A runner laces up our new trail shoe at dawn and sprints up a misty mountain path.";
const run = `ts-faults-${Date.now()}-${process.pid}`;

/** Restarts the server (graceful stop, 1.5 s down, start on the same port); resolves when it serves again. */
function restartServer(): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(serverScript!, ["restart", serverDir!], {
      env: { ...env, AIPROD_RESTART_DOWN_MS: "1500" },
      stdio: ["ignore", "ignore", "inherit"],
    });
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`test-server.sh restart exited with ${code}`))));
  });
}

async function failure(call: () => Promise<unknown>): Promise<AiprodError> {
  try {
    await call();
  } catch (e) {
    assert.ok(e instanceof AiprodError, `expected an AiprodError, got ${String(e)}`);
    return e;
  }
  assert.fail("expected the call to fail");
}

describe("production behaviour against a real server", { skip, timeout: 150_000 }, () => {
  it("a restart mid-call: no call fails, retries are counted by the hook, CreateJob stays idempotent", async () => {
    const attempts: AttemptInfo[] = [];
    // The restart keeps the server down ≥ 1.5 s plus its stop and start: more than the default 5
    // attempts wait on average (≈ 0.75 s), so this client allows more; the 30 s deadline bounds it.
    const client = new AiprodClient({
      endpoint: env.AIPROD_ENDPOINT!,
      apiKey: env.AIPROD_API_KEY!,
      retry: { maxAttempts: 20 },
      onAttempt: (info) => attempts.push(info),
    });
    try {
      const created: string[] = [];
      let restarted = false;
      const restart = restartServer().then(() => (restarted = true));
      let rounds = 0;
      let roundsAfter = 0;
      // Loop of reads and creates until the server is back and has answered 3 more rounds.
      while (roundsAfter < 3) {
        const after = restarted;
        await client.presets.listPresets({});
        await client.costs.estimateCost({ presetId: "quick_social", durationS: 15 });
        const { job } = await client.render.createJob({ presetId: "quick_social", brief, labels: { run, kind: "restart" } });
        created.push(job!.jobId);
        await client.render.getJob({ jobId: job!.jobId });
        rounds++;
        if (after) roundsAfter++;
      }
      await restart;
      const retried = attempts.filter((a) => a.attempt > 1);
      assert.ok(retried.length > 0, "the hook saw retries");
      assert.ok(attempts.some((a) => a.code === "UNAVAILABLE"), "the hook saw UNAVAILABLE attempts");
      // One job per CreateJob that returned: a retry after a lost answer reuses the request_id.
      const listed = [];
      for await (const job of client.listJobs({ labels: { run, kind: "restart" } })) listed.push(job.jobId);
      assert.deepEqual(listed.sort(), [...new Set(created)].sort());
      assert.equal(new Set(created).size, created.length, "a new job per call");
      console.log(
        `restart mid-call: ${rounds} rounds (${created.length} CreateJob), 0 failures, ` +
          `${attempts.length} attempts of which ${retried.length} retries (${attempts.filter((a) => a.code === "UNAVAILABLE").length} UNAVAILABLE)`,
      );
    } finally {
      client.close();
    }
  });

  it("a restart mid-watch: the watch resumes without a gap and reaches DELIVERED", async () => {
    const attempts: AttemptInfo[] = [];
    const client = new AiprodClient({
      endpoint: env.AIPROD_ENDPOINT!,
      apiKey: env.AIPROD_API_KEY!,
      retry: { maxAttempts: 20 },
      onAttempt: (info) => attempts.push(info),
    });
    try {
      // brand_campaign waits for manifest approval (quick_social is fast-tracked past it).
      const { job } = await client.render.createJob({ presetId: "brand_campaign", durationS: 60, brief, labels: { run, kind: "watch" } });
      const jobId = job!.jobId;
      const events: JobEvent[] = [];
      let reconnects = 0;
      for await (const event of client.watchJob(jobId, { onReconnect: () => reconnects++, signal: AbortSignal.timeout(90_000) })) {
        events.push(event);
        // The job waits for approval with the stream open: restart the server under it, then approve.
        if (event.state === JobState.AWAITING_APPROVAL && events.at(-2)?.state !== JobState.AWAITING_APPROVAL) {
          await restartServer();
          const { manifest } = await client.icc.getManifest({ jobId });
          await client.icc.approveManifest({ jobId, etag: manifest!.etag });
        }
      }
      assert.ok(reconnects >= 1, "the watch reconnected");
      const sequences = events.map((e) => Number(e.sequence));
      assert.deepEqual(sequences, sequences.map((_, i) => i + 1), "sequences 1..N: no gap, no duplicate");
      assert.equal(events.at(-1)!.state, JobState.DELIVERED);
      const watchAttempts = attempts.filter((a) => a.method === "WatchJob");
      assert.ok(watchAttempts.length >= 2, "the hook saw every WatchJob stream");
      console.log(`restart mid-watch: ${events.length} events, ${reconnects} reconnect(s), DELIVERED`);
    } finally {
      client.close();
    }
  });

  it("a Bronze burst: 15 calls with a 20 s deadline all succeed, the hook counts the RESOURCE_EXHAUSTED retries", async () => {
    const attempts: AttemptInfo[] = [];
    const client = new AiprodClient({
      endpoint: env.AIPROD_ENDPOINT!,
      apiKey: env.AIPROD_BRONZE_API_KEY!,
      onAttempt: (info) => attempts.push(info),
    });
    try {
      // 10 requests a minute, a token every 6 s: calls 11-15 each wait for RetryInfo's delay.
      for (let i = 0; i < 15; i++) await client.presets.listPresets({}, { timeoutMs: 20_000 });
      const limited = attempts.filter((a) => a.code === "RESOURCE_EXHAUSTED");
      assert.ok(limited.length >= 5, `at least 5 RESOURCE_EXHAUSTED retries, saw ${limited.length}`);
      for (const a of limited) assert.ok(a.error!.retryDelayMs! > 0, "each carried RetryInfo");
      assert.equal(attempts.filter((a) => a.code === "OK").length, 15);
      console.log(`bronze burst: 15 calls succeeded, ${limited.length} RESOURCE_EXHAUSTED retries`);
    } finally {
      client.close();
    }
  });

  it("with maxAttempts 1 the burst fails with RESOURCE_EXHAUSTED carrying RetryInfo", async () => {
    const attempts: AttemptInfo[] = [];
    const client = new AiprodClient({
      endpoint: env.AIPROD_ENDPOINT!,
      apiKey: env.AIPROD_BRONZE_API_KEY!,
      retry: { maxAttempts: 1 },
      onAttempt: (info) => attempts.push(info),
    });
    try {
      const results = await Promise.allSettled(Array.from({ length: 15 }, () => client.presets.listPresets({}, { timeoutMs: 20_000 })));
      const rejected = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => r.reason as AiprodError);
      assert.ok(rejected.length > 0, "some calls of the burst fail");
      for (const e of rejected) {
        assert.equal(e.codeName, "RESOURCE_EXHAUSTED");
        assert.ok(e.retryDelayMs! > 0 && e.retryable && e.isTransient(), "RetryInfo, transient");
      }
      assert.ok(attempts.every((a) => a.attempt === 1), "no retry");
    } finally {
      client.close();
    }
  });

  it("a deadline shorter than the retry wait surfaces the last error at once", async () => {
    const client = new AiprodClient({ endpoint: env.AIPROD_ENDPOINT!, apiKey: env.AIPROD_BRONZE_API_KEY! });
    try {
      // The bucket is empty: the next token is seconds away, beyond the 1 s deadline.
      const started = performance.now();
      const err = await failure(() => client.presets.listPresets({}, { timeoutMs: 1000 }));
      const elapsed = performance.now() - started;
      assert.equal(err.codeName, "RESOURCE_EXHAUSTED");
      assert.ok(err.retryDelayMs! > 1000, `retry delay ${err.retryDelayMs} ms`);
      assert.ok(elapsed < 500, `failed after ${elapsed} ms, without sleeping towards the deadline`);
    } finally {
      client.close();
    }
  });

  it("a server that stays down: retries stop at the deadline, not past it", async () => {
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, "127.0.0.1", () => {
        const { port } = probe.address() as { port: number };
        probe.close(() => resolve(port));
      });
    });
    const attempts: AttemptInfo[] = [];
    const client = new AiprodClient({
      endpoint: `http://127.0.0.1:${port}`,
      apiKey: "aiprod_test_x",
      retry: { maxAttempts: 1000 },
      onAttempt: (info) => attempts.push(info),
    });
    try {
      const started = performance.now();
      const err = await failure(() => client.render.getJob({ jobId: "job_1" }, { timeoutMs: 800 }));
      const elapsed = performance.now() - started;
      assert.ok(["UNAVAILABLE", "DEADLINE_EXCEEDED"].includes(err.codeName), err.message);
      assert.ok(attempts.length > 1, "retried within the deadline");
      assert.ok(elapsed < 900, `gave up after ${elapsed} ms (deadline 800 ms)`);
    } finally {
      client.close();
    }
  });

  it("a deadline that expires is DEADLINE_EXCEEDED (call deadline and AbortSignal.timeout)", async () => {
    const client = new AiprodClient({ endpoint: env.AIPROD_ENDPOINT!, apiKey: env.AIPROD_API_KEY! });
    try {
      // A job waiting for approval: its watch stays open with nothing to say.
      const { job } = await client.render.createJob({ presetId: "brand_campaign", durationS: 30, brief, labels: { run, kind: "deadline" } });
      for await (const e of client.watchJob(job!.jobId)) if (e.state === JobState.AWAITING_APPROVAL) break;
      const raw = await failure(async () => {
        for await (const _ of client.render.watchJob({ jobId: job!.jobId }, { timeoutMs: 300 })) void _;
      });
      assert.equal(raw.code, Code.DeadlineExceeded, raw.message);
      const helper = await failure(async () => {
        for await (const _ of client.watchJob(job!.jobId, { signal: AbortSignal.timeout(300) })) void _;
      });
      assert.equal(helper.code, Code.DeadlineExceeded, helper.message);
      assert.ok(helper.retryable, "DEADLINE_EXCEEDED is transient");
    } finally {
      client.close();
    }
  });
});
