// The production semantics of sdk/PRODUCTION.md that need no AIPROD server: which calls are retried
// and how (in memory), the user-agent and the attempt number interceptors see, TLS with a custom CA
// and with the default roots (a real HTTPS/2 server with a throwaway self-signed certificate).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createRouterTransport, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  AiprodClient,
  AiprodError,
  attemptKey,
  backoffMs,
  DEFAULT_RETRY,
  IccService,
  JobSchema,
  PresetService,
  RenderService,
  USER_AGENT,
  VERSION,
  googleRpc,
  watchJobEvents,
  type AttemptInfo,
  type Interceptor,
} from "@aiprod/sdk";

function clientFor(routes: (router: ConnectRouter) => void, extra: Partial<ConstructorParameters<typeof AiprodClient>[0]> = {}) {
  return new AiprodClient({
    endpoint: "http://in-memory",
    apiKey: "aiprod_test_key",
    retry: { initialBackoffMs: 1, maxBackoffMs: 2 },
    transport: (interceptors) => createRouterTransport(routes, { transport: { interceptors } }),
    ...extra,
  });
}

const unavailable = () => new ConnectError("server restarting", Code.Unavailable);
const rateLimited = (ms: number) =>
  new ConnectError("rate limited", Code.ResourceExhausted, undefined, [
    { desc: googleRpc.RetryInfoSchema, value: { retryDelay: create(DurationSchema, { nanos: ms * 1e6 }) } },
  ]);

describe("retries of unary calls", () => {
  it("retries a read on UNAVAILABLE; the hook and interceptors see every attempt", async () => {
    let calls = 0;
    const hook: AttemptInfo[] = [];
    const seenByInterceptor: number[] = [];
    const mine: Interceptor = (next) => (req) => {
      seenByInterceptor.push(req.contextValues.get(attemptKey));
      return next(req);
    };
    const client = clientFor(
      (router) =>
        router.service(RenderService, {
          getJob(req) {
            if (++calls < 3) throw unavailable();
            return { job: create(JobSchema, { jobId: req.jobId }) };
          },
        }),
      { onAttempt: (i) => hook.push(i), interceptors: [mine] },
    );
    const { job } = await client.render.getJob({ jobId: "job_1" });
    assert.equal(job?.jobId, "job_1");
    assert.deepEqual(seenByInterceptor, [1, 2, 3]);
    assert.deepEqual(
      hook.map((i) => [i.service, i.method, i.attempt, i.code]),
      [
        ["aiprod.v1.RenderService", "GetJob", 1, "UNAVAILABLE"],
        ["aiprod.v1.RenderService", "GetJob", 2, "UNAVAILABLE"],
        ["aiprod.v1.RenderService", "GetJob", 3, "OK"],
      ],
    );
    assert.ok(hook.every((i) => i.durationMs >= 0));
  });

  it("CreateJob gets one random request_id before the first attempt, reused by every retry", async () => {
    const ids: string[] = [];
    const client = clientFor((router) =>
      router.service(RenderService, {
        createJob(req) {
          ids.push(req.requestId);
          if (ids.length % 2 === 1) throw unavailable();
          return { job: create(JobSchema, { jobId: "job_1" }) };
        },
      }),
    );
    await client.render.createJob({ presetId: "quick_social", brief: "b" });
    await client.render.createJob({ presetId: "quick_social", brief: "b" });
    await client.render.createJob({ requestId: "mine-1", presetId: "quick_social", brief: "b" });
    assert.equal(ids.length, 6);
    assert.match(ids[0]!, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(ids[1], ids[0], "the retry carries the same id");
    assert.equal(ids[3], ids[2]);
    assert.notEqual(ids[2], ids[0], "a new id per call");
    assert.deepEqual(ids.slice(4), ["mine-1", "mine-1"], "the caller's id is kept");
  });

  it("does not repeat a call that is not safe to repeat on UNAVAILABLE, nor other codes", async () => {
    const counts: Record<string, number> = {};
    const client = clientFor((router) => {
      router.service(IccService, {
        approveManifest() {
          counts.approve = (counts.approve ?? 0) + 1;
          throw unavailable();
        },
      });
      router.service(RenderService, {
        getJob() {
          counts.get = (counts.get ?? 0) + 1;
          throw new ConnectError("boom", Code.Internal);
        },
        listJobs() {
          counts.list = (counts.list ?? 0) + 1;
          throw new ConnectError("quota used up", Code.ResourceExhausted); // no RetryInfo
        },
      });
    });
    await assert.rejects(client.icc.approveManifest({ jobId: "job_1", etag: "e" }), { codeName: "UNAVAILABLE" });
    await assert.rejects(client.render.getJob({ jobId: "job_1" }), { codeName: "INTERNAL" });
    await assert.rejects(client.render.listJobs({}), { codeName: "RESOURCE_EXHAUSTED" });
    assert.deepEqual(counts, { approve: 1, get: 1, list: 1 });
  });

  it("retries any call on RESOURCE_EXHAUSTED with RetryInfo, waiting at least its delay", async () => {
    const at: number[] = [];
    const client = clientFor((router) =>
      router.service(IccService, {
        approveManifest() {
          at.push(performance.now());
          if (at.length === 1) throw rateLimited(80);
          return {};
        },
      }),
    );
    await client.icc.approveManifest({ jobId: "job_1", etag: "e" });
    assert.equal(at.length, 2);
    assert.ok(at[1]! - at[0]! >= 79, `waited ${at[1]! - at[0]!} ms`);
  });

  it("stops after maxAttempts and reports the last error; maxAttempts 1 disables retries", async () => {
    let calls = 0;
    const routes = (router: ConnectRouter) =>
      router.service(PresetService, {
        listPresets() {
          calls++;
          throw unavailable();
        },
      });
    await assert.rejects(clientFor(routes, { retry: { maxAttempts: 3, initialBackoffMs: 1 } }).presets.listPresets({}), {
      codeName: "UNAVAILABLE",
    });
    assert.equal(calls, 3);
    calls = 0;
    await assert.rejects(clientFor(routes, { retry: { maxAttempts: 1 } }).presets.listPresets({}), { codeName: "UNAVAILABLE" });
    assert.equal(calls, 1);
  });

  it("backoff: full jitter within min(max, initial × 2^(n-1)), RetryInfo a floor", () => {
    for (let n = 1; n <= 10; n++) {
      for (let i = 0; i < 50; i++) {
        const b = backoffMs(n, DEFAULT_RETRY);
        assert.ok(b >= 0 && b <= Math.min(5000, 100 * 2 ** (n - 1)), `attempt ${n}: ${b}`);
      }
    }
    assert.ok(backoffMs(1, DEFAULT_RETRY, 700) >= 700);
    assert.deepEqual(DEFAULT_RETRY, { maxAttempts: 5, initialBackoffMs: 100, maxBackoffMs: 5000 });
  });

  it("errors say whether they are transient", () => {
    assert.ok(new AiprodError(Code.Unavailable, "x").isTransient());
    assert.ok(new AiprodError(Code.DeadlineExceeded, "x").retryable);
    assert.ok(!new AiprodError(Code.ResourceExhausted, "quota").retryable);
    assert.ok(AiprodError.from(rateLimited(10)).retryable);
    assert.ok(!new AiprodError(Code.InvalidArgument, "x").retryable);
  });
});

describe("watch resume window", () => {
  it("keeps reconnecting for resumeTimeoutMs of continuous failure, then throws the last error", async () => {
    let opens = 0;
    const started = performance.now();
    await assert.rejects(
      (async () => {
        const open = () => {
          opens++;
          return (async function* () {
            yield* [];
            throw unavailable();
          })();
        };
        for await (const _ of watchJobEvents(open, "job_1", { resumeTimeoutMs: 150, initialBackoffMs: 5, maxBackoffMs: 20 })) void _;
      })(),
      { codeName: "UNAVAILABLE" },
    );
    const elapsed = performance.now() - started;
    assert.ok(opens > 3, `${opens} attempts`);
    assert.ok(elapsed >= 100 && elapsed < 400, `gave up after ${elapsed} ms`);
  });
});

describe("over a real HTTP/2 connection", () => {
  let dir = "";
  let cert: Buffer;
  const userAgents: string[] = [];
  let plain: http2.Http2Server;
  let secure: http2.Http2SecureServer;
  let plainEndpoint = "";
  let secureEndpoint = "";

  before(async () => {
    const handler = connectNodeAdapter({
      grpc: true,
      connect: false,
      grpcWeb: false,
      routes: (router) =>
        router.service(PresetService, {
          listPresets(_req, ctx) {
            userAgents.push(ctx.requestHeader.get("user-agent") ?? "");
            return { presets: [] };
          },
        }),
    });
    // A throwaway self-signed certificate for 127.0.0.1, made for this run.
    dir = mkdtempSync(join(tmpdir(), "aiprod-ts-tls-"));
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
      "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
      "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
    ], { stdio: "ignore" });
    cert = readFileSync(join(dir, "cert.pem"));
    plain = http2.createServer(handler);
    secure = http2.createSecureServer({ cert, key: readFileSync(join(dir, "key.pem")), allowHTTP1: false }, handler);
    await new Promise<void>((resolve) => plain.listen(0, "127.0.0.1", resolve));
    await new Promise<void>((resolve) => secure.listen(0, "127.0.0.1", resolve));
    plainEndpoint = `http://127.0.0.1:${(plain.address() as AddressInfo).port}`;
    secureEndpoint = `https://127.0.0.1:${(secure.address() as AddressInfo).port}`;
  });

  after(async () => {
    await new Promise((resolve) => plain.close(resolve));
    await new Promise((resolve) => secure.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  it("sends the user-agent aiprod-sdk-typescript/<version> before the transport's own", async () => {
    const client = new AiprodClient({ endpoint: plainEndpoint, apiKey: "k" });
    try {
      await client.presets.listPresets({});
      assert.equal(USER_AGENT, `aiprod-sdk-typescript/${VERSION}`);
      assert.match(userAgents.at(-1)!, new RegExp(`^aiprod-sdk-typescript/${VERSION.replaceAll(".", "\\.")} connect-es/`));
    } finally {
      client.close();
    }
  });

  it("https: trusts a custom CA (caPem); without it the default roots reject a self-signed server", async () => {
    const trusted = new AiprodClient({ endpoint: secureEndpoint, apiKey: "k", caPem: cert });
    const untrusted = new AiprodClient({ endpoint: secureEndpoint, apiKey: "k", retry: { maxAttempts: 1 } });
    try {
      assert.deepEqual((await trusted.presets.listPresets({})).presets, []);
      await assert.rejects(untrusted.presets.listPresets({}), (e: unknown) => {
        assert.ok(e instanceof AiprodError);
        // Not retried (a certificate does not fix itself); the message names the cause.
        assert.equal(e.codeName, "INTERNAL");
        assert.match(e.message, /self[- ]signed certificate/i);
        return true;
      });
    } finally {
      trusted.close();
      untrusted.close();
    }
  });
});
