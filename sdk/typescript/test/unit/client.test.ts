import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport, type ConnectRouter } from "@connectrpc/connect";
import {
  AdminService,
  AiprodClient,
  AiprodError,
  JobEventSchema,
  JobSchema,
  JobState,
  PresetSchema,
  PresetService,
  RenderService,
  TenantSchema,
  googleRpc,
  type JobEvent,
} from "@aiprod/sdk";

const STATES = [JobState.QUEUED, JobState.PLANNING, JobState.RENDERING, JobState.QUALITY_CHECK, JobState.DELIVERED];
const EVENTS: JobEvent[] = STATES.map((state, i) =>
  create(JobEventSchema, { jobId: "job_1", sequence: BigInt(i + 1), state }),
);

/** An AiprodClient talking to an in-memory server made of `routes`. */
function clientFor(routes: (router: ConnectRouter) => void, extra: Partial<ConstructorParameters<typeof AiprodClient>[0]> = {}) {
  return new AiprodClient({
    endpoint: "http://in-memory",
    apiKey: "aiprod_test_key",
    adminToken: "admin-token",
    transport: (interceptors) => createRouterTransport(routes, { transport: { interceptors } }),
    ...extra,
  });
}

describe("AiprodClient", () => {
  it("sends the API key as bearer, and the admin token to AdminService", async () => {
    const seen: Record<string, string | null> = {};
    const client = clientFor((router) => {
      router.service(PresetService, {
        listPresets(_req, ctx) {
          seen.presets = ctx.requestHeader.get("authorization");
          return { presets: [create(PresetSchema, { presetId: "quick_social" })] };
        },
      });
      router.service(AdminService, {
        getTenant(req, ctx) {
          seen.admin = ctx.requestHeader.get("authorization");
          return { tenant: create(TenantSchema, { tenantId: req.tenantId }) };
        },
      });
    });
    const { presets } = await client.presets.listPresets({});
    assert.equal(presets[0]?.presetId, "quick_social");
    await client.admin.getTenant({ tenantId: "ten_1" });
    assert.deepEqual(seen, { presets: "Bearer aiprod_test_key", admin: "Bearer admin-token" });
  });

  it("applies the default deadline to unary calls, lets a call override it, and not to streams", async () => {
    const timeouts: Record<string, number | undefined> = {};
    const client = clientFor(
      (router) =>
        router.service(RenderService, {
          getJob(req, ctx) {
            timeouts[req.jobId] = ctx.timeoutMs();
            return { job: create(JobSchema, { jobId: req.jobId }) };
          },
          async *watchJob(_req, ctx) {
            timeouts.watch = ctx.timeoutMs();
            yield { event: EVENTS[4] };
          },
        }),
      { defaultTimeoutMs: 5000 },
    );
    await client.render.getJob({ jobId: "default" });
    await client.render.getJob({ jobId: "override" }, { timeoutMs: 1000 });
    await client.render.getJob({ jobId: "none" }, { timeoutMs: 0 });
    for await (const _ of client.render.watchJob({ jobId: "job_1" })) void _;
    assert.ok(timeouts.default !== undefined && timeouts.default > 4000 && timeouts.default <= 5000);
    assert.ok(timeouts.override !== undefined && timeouts.override <= 1000);
    assert.equal(timeouts.none, undefined);
    assert.equal(timeouts.watch, undefined);
  });

  it("throws AiprodError with the server's field violations", async () => {
    const client = clientFor((router) =>
      router.service(RenderService, {
        createJob() {
          throw new ConnectError("invalid request", Code.InvalidArgument, undefined, [
            {
              desc: googleRpc.BadRequestSchema,
              value: { fieldViolations: [{ field: "brief", description: "too short" }, { field: "duration_s", description: "over 300" }] },
            },
          ]);
        },
      }),
    );
    await assert.rejects(client.render.createJob({ requestId: "r1", presetId: "quick_social" }), (e: unknown) => {
      assert.ok(e instanceof AiprodError);
      assert.equal(e.codeName, "INVALID_ARGUMENT");
      assert.equal(e.rawMessage, "invalid request");
      assert.deepEqual(e.violatedFields, ["brief", "duration_s"]);
      return true;
    });
  });

  it("throws AiprodError from streams", async () => {
    const client = clientFor((router) =>
      router.service(RenderService, {
        // eslint-disable-next-line require-yield
        async *watchJob() {
          throw new ConnectError("no such job", Code.NotFound);
        },
      }),
    );
    await assert.rejects(
      (async () => {
        for await (const _ of client.render.watchJob({ jobId: "nope" })) void _;
      })(),
      (e: unknown) => e instanceof AiprodError && e.code === Code.NotFound,
    );
    await assert.rejects(
      (async () => {
        for await (const _ of client.watchJob("nope")) void _;
      })(),
      (e: unknown) => e instanceof AiprodError && e.code === Code.NotFound,
    );
  });

  it("watchJob resumes after the server drops the stream", async () => {
    const requests: bigint[] = [];
    const client = clientFor(
      (router) =>
        router.service(RenderService, {
          async *watchJob(req) {
            requests.push(req.afterSequence);
            let sent = 0;
            for (const event of EVENTS) {
              if (event.sequence <= req.afterSequence) continue;
              if (requests.length === 1 && sent === 2) throw new ConnectError("shutting down", Code.Unavailable);
              sent++;
              yield { event };
            }
          },
        }),
      { watch: { initialBackoffMs: 1, maxBackoffMs: 5 } },
    );
    const seen: bigint[] = [];
    for await (const e of client.watchJob("job_1")) seen.push(e.sequence);
    assert.deepEqual(seen, [1n, 2n, 3n, 4n, 5n]);
    assert.deepEqual(requests, [0n, 2n]);
  });

  it("watchJob ends at once for a finished job watched from its last sequence", async () => {
    const client = clientFor((router) =>
      router.service(RenderService, {
        async *watchJob() {},
        getJob: (req) => ({ job: create(JobSchema, { jobId: req.jobId, state: JobState.DELIVERED, lastSequence: 5n }) }),
      }),
    );
    const seen: JobEvent[] = [];
    for await (const e of client.watchJob("job_1", { afterSequence: 5n })) seen.push(e);
    assert.equal(seen.length, 0);
  });

  it("listJobs and listTenants follow next_page_token", async () => {
    const tokens: string[] = [];
    const client = clientFor((router) => {
      router.service(RenderService, {
        listJobs(req) {
          tokens.push(req.pageToken);
          const page = req.pageToken === "" ? 0 : Number(req.pageToken);
          const jobs = [0, 1].map((i) => create(JobSchema, { jobId: `job_${page * 2 + i}`, presetId: req.presetId }));
          return { jobs, nextPageToken: page < 2 ? String(page + 1) : "" };
        },
      });
      router.service(AdminService, {
        listTenants: (req) =>
          req.pageToken === ""
            ? { tenants: [create(TenantSchema, { tenantId: "ten_a" })], nextPageToken: "p2" }
            : { tenants: [create(TenantSchema, { tenantId: "ten_b" })], nextPageToken: "" },
      });
    });
    const ids: string[] = [];
    for await (const job of client.listJobs({ presetId: "quick_social", pageSize: 2 })) ids.push(job.jobId);
    assert.deepEqual(ids, ["job_0", "job_1", "job_2", "job_3", "job_4", "job_5"]);
    assert.deepEqual(tokens, ["", "1", "2"]);
    let pages = 0;
    for await (const page of client.listJobPages({})) pages += page.jobs.length > 0 ? 1 : 0;
    assert.equal(pages, 3);
    const tenants: string[] = [];
    for await (const t of client.listTenants()) tenants.push(t.tenantId);
    assert.deepEqual(tenants, ["ten_a", "ten_b"]);
  });
});
