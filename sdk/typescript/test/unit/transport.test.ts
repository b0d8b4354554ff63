// The SDK over a real HTTP/2 gRPC connection to an in-process fake server (connect-node), to test
// what only a real connection shows: rich error details in grpc-status-details-bin, and watchJob
// resuming after the connection is really dropped (by the client or by the server) mid-stream.
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AiprodClient, AiprodError, JobEventSchema, JobSchema, JobState, RenderService, googleRpc, type JobEvent } from "@aiprod/sdk";

const STATES = [
  JobState.QUEUED,
  JobState.PLANNING,
  JobState.AWAITING_APPROVAL,
  JobState.RENDERING,
  JobState.RENDERING,
  JobState.RENDERING,
  JobState.RENDERING,
  JobState.QUALITY_CHECK,
  JobState.DELIVERED,
];
const EVENTS = STATES.map((state, i) => create(JobEventSchema, { jobId: "job_1", sequence: BigInt(i + 1), state }));

describe("AiprodClient over HTTP/2 gRPC", () => {
  let server: http2.Http2Server;
  let endpoint = "";
  const sessions = new Set<http2.ServerHttp2Session>();
  const watchRequests: bigint[] = [];
  let dropServerSideAfter: number | undefined;
  let authorization: string | undefined;

  before(async () => {
    const handler = connectNodeAdapter({
      grpc: true,
      connect: false,
      grpcWeb: false,
      routes: (router) =>
        router.service(RenderService, {
          createJob(_req, ctx) {
            authorization = ctx.requestHeader.get("authorization") ?? undefined;
            throw new ConnectError("invalid CreateJob request", Code.InvalidArgument, undefined, [
              {
                desc: googleRpc.BadRequestSchema,
                value: {
                  fieldViolations: [
                    { field: "request_id", description: "required" },
                    { field: "brief", description: "must be 10-10000 characters" },
                    { field: "duration_s", description: "must be 5-300 and at most the preset's maximum" },
                  ],
                },
              },
              { desc: googleRpc.ErrorInfoSchema, value: { reason: "INVALID_REQUEST", domain: "aiprod" } },
            ]);
          },
          getJob: (req) => ({ job: create(JobSchema, { jobId: req.jobId, state: JobState.RENDERING }) }),
          async *watchJob(req, ctx) {
            watchRequests.push(req.afterSequence);
            let sent = 0;
            for (const event of EVENTS) {
              if (event.sequence <= req.afterSequence) continue;
              if (dropServerSideAfter !== undefined && sent === dropServerSideAfter) {
                dropServerSideAfter = undefined;
                for (const s of sessions) s.destroy();
              }
              await sleep(15, undefined, { signal: ctx.signal });
              sent++;
              yield { event };
            }
          },
        }),
    });
    server = http2.createServer(handler);
    server.on("session", (s) => {
      sessions.add(s);
      s.on("close", () => sessions.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    for (const s of sessions) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  it("decodes the status details sent in grpc-status-details-bin", async () => {
    const client = new AiprodClient({ endpoint, apiKey: "aiprod_test_secret" });
    try {
      await assert.rejects(client.render.createJob({ presetId: "quick_social", durationS: 1000 }), (e: unknown) => {
        assert.ok(e instanceof AiprodError);
        assert.equal(e.codeName, "INVALID_ARGUMENT");
        assert.equal(e.rawMessage, "invalid CreateJob request");
        assert.deepEqual(e.violatedFields, ["request_id", "brief", "duration_s"]);
        assert.deepEqual(e.errorInfo, { reason: "INVALID_REQUEST", domain: "aiprod", metadata: {} });
        return true;
      });
      assert.equal(authorization, "Bearer aiprod_test_secret");
    } finally {
      client.close();
    }
  });

  async function watchAll(client: AiprodClient, onEvent: (e: JobEvent, n: number) => void) {
    const seen: bigint[] = [];
    for await (const e of client.watchJob("job_1")) {
      seen.push(e.sequence);
      onEvent(e, seen.length);
    }
    return seen;
  }

  it("watchJob resumes after the client drops the connection mid-stream", async () => {
    watchRequests.length = 0;
    let reconnects = 0;
    const client = new AiprodClient({ endpoint, apiKey: "k", watch: { initialBackoffMs: 5, onReconnect: () => reconnects++ } });
    try {
      const seen = await watchAll(client, (_, n) => {
        if (n === 2) client.resetConnection();
      });
      assert.deepEqual(seen, EVENTS.map((e) => e.sequence));
      assert.equal(reconnects, 1);
      assert.deepEqual(watchRequests, [0n, 2n]);
    } finally {
      client.close();
    }
  });

  it("watchJob resumes after the server drops the connection mid-stream", async () => {
    watchRequests.length = 0;
    dropServerSideAfter = 3;
    const errors: string[] = [];
    const client = new AiprodClient({
      endpoint,
      apiKey: "k",
      watch: { initialBackoffMs: 5, onReconnect: (i) => errors.push(i.error.codeName) },
    });
    try {
      const seen = await watchAll(client, () => {});
      assert.deepEqual(seen, EVENTS.map((e) => e.sequence));
      assert.equal(errors.length, 1, `one reconnect, got ${errors.join(",")}`);
      assert.deepEqual(watchRequests, [0n, 3n]);
    } finally {
      client.close();
    }
  });
});
