// SDK features beyond the conformance scenario, against the real server named by AIPROD_ENDPOINT:
// pagination, the admin token, the rich error details the protos promise, and ByteStream downloads.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { AiprodClient, AiprodError, ApiKeyMode, Code, JobState, Tier, type ReadRetryInfo } from "@aiprod/sdk";

const env = process.env;
const skip = env.AIPROD_ENDPOINT ? false : "AIPROD_ENDPOINT is not set (run sdk/typescript/test.sh)";
const brief = "A runner laces up our new trail shoe at dawn and sprints up a misty mountain path.";

async function failure(call: () => Promise<unknown>): Promise<AiprodError> {
  try {
    await call();
  } catch (e) {
    assert.ok(e instanceof AiprodError, `expected an AiprodError, got ${String(e)}`);
    return e;
  }
  assert.fail("expected the call to fail");
}

describe("AiprodClient against the real server", { skip, timeout: 120_000 }, () => {
  let client: AiprodClient;
  let admin: AiprodClient;
  const run = `ts-${Date.now()}-${process.pid}`;

  before(() => {
    client = new AiprodClient({ endpoint: env.AIPROD_ENDPOINT!, apiKey: env.AIPROD_API_KEY! });
    admin = new AiprodClient({ endpoint: env.AIPROD_ENDPOINT!, adminToken: env.AIPROD_ADMIN_TOKEN! });
  });
  after(() => {
    client.close();
    admin.close();
  });

  it("listJobs follows next_page_token across pages, newest first", async () => {
    const created: string[] = [];
    for (let i = 0; i < 5; i++) {
      const { job } = await client.render.createJob({
        requestId: `${run}-page-${i}`,
        presetId: "quick_social",
        brief,
        labels: { run, kind: "page" },
      });
      created.push(job!.jobId);
    }
    const pages: number[] = [];
    for await (const page of client.listJobPages({ pageSize: 2, labels: { run, kind: "page" } })) pages.push(page.jobs.length);
    assert.deepEqual(pages, [2, 2, 1]);
    const listed: string[] = [];
    for await (const job of client.listJobs({ pageSize: 2, labels: { run, kind: "page" } })) listed.push(job.jobId);
    assert.deepEqual(listed, [...created].reverse());
  });

  it("sends the admin token to AdminService and lists tenants page by page", async () => {
    const names: string[] = [];
    for await (const tenant of admin.listTenants({ pageSize: 1 })) names.push(tenant.name);
    assert.ok(names.includes("acme") && names.includes("globex"), `tenants: ${names.join(", ")}`);
    const denied = await failure(() => client.admin.listTenants({}));
    assert.equal(denied.codeName, "UNAUTHENTICATED");
  });

  it("UNAUTHENTICATED for a bad key, with ErrorInfo", async () => {
    const stranger = new AiprodClient({ endpoint: env.AIPROD_ENDPOINT!, apiKey: "aiprod_test_notakey" });
    try {
      const err = await failure(() => stranger.presets.listPresets({}));
      assert.equal(err.codeName, "UNAUTHENTICATED");
      assert.ok(err.errorInfo, "ErrorInfo detail");
    } finally {
      stranger.close();
    }
  });

  it("PERMISSION_DENIED with ErrorInfo for a preset outside the tier", async () => {
    const { tenant } = await admin.admin.createTenant({ name: `${run}-bronze`, tier: Tier.BRONZE });
    const { secret } = await admin.admin.createApiKey({ tenantId: tenant!.tenantId, mode: ApiKeyMode.TEST, name: "ts" });
    // One attempt per call: this test wants to see the rate limit, not the SDK's retries past it.
    const bronze = new AiprodClient({ endpoint: env.AIPROD_ENDPOINT!, apiKey: secret, retry: { maxAttempts: 1 } });
    try {
      const err = await failure(() =>
        bronze.render.createJob({ requestId: `${run}-tier`, presetId: "premium_spot", brief }),
      );
      assert.equal(err.codeName, "PERMISSION_DENIED");
      assert.equal(err.errorInfo?.reason, "PRESET_NOT_IN_TIER");
      // Bronze allows 10 requests per minute: the next ones are RESOURCE_EXHAUSTED with a retry delay.
      let limited: AiprodError | undefined;
      for (let i = 0; i < 15 && limited === undefined; i++) {
        try {
          await bronze.presets.listPresets({});
        } catch (e) {
          limited = AiprodError.from(e);
        }
      }
      assert.ok(limited, "rate limited within 15 requests");
      assert.equal(limited.codeName, "RESOURCE_EXHAUSTED");
      assert.ok(limited.quotaFailures.length > 0, "QuotaFailure detail");
      assert.ok(limited.retryDelayMs !== undefined && limited.retryDelayMs > 0, "RetryInfo detail");
    } finally {
      bronze.close();
    }
  });

  it("GetUsage reports the tenant's month-to-date usage", async () => {
    const usage = await client.costs.getUsage({});
    assert.equal(usage.tier, Tier.PLATINUM);
    assert.ok(usage.jobs > 0, "jobs created this month");
    assert.ok(usage.requestsPerMinute > 0, "requests_per_minute");
  });

  it("RESOURCE_EXHAUSTED with QuotaFailure when the job quota is used up", async () => {
    const { tenant } = await admin.admin.createTenant({ name: `${run}-quota`, tier: Tier.GOLD, jobQuota: 1 });
    const { secret } = await admin.admin.createApiKey({ tenantId: tenant!.tenantId, mode: ApiKeyMode.TEST, name: "ts" });
    const limited = new AiprodClient({ endpoint: env.AIPROD_ENDPOINT!, apiKey: secret });
    try {
      await limited.render.createJob({ requestId: `${run}-q1`, presetId: "quick_social", brief });
      const err = await failure(() => limited.render.createJob({ requestId: `${run}-q2`, presetId: "quick_social", brief }));
      assert.equal(err.codeName, "RESOURCE_EXHAUSTED");
      assert.ok(err.quotaFailures.length > 0, "QuotaFailure detail");
    } finally {
      limited.close();
    }
  });

  it("FAILED_PRECONDITION with PreconditionFailure when cancelling a delivered job", async () => {
    const { job } = await client.render.createJob({ requestId: `${run}-fast`, presetId: "quick_social", brief, autoApprove: true });
    let last = JobState.UNSPECIFIED;
    for await (const e of client.watchJob(job!.jobId, { signal: AbortSignal.timeout(60_000) })) last = e.state;
    assert.equal(last, JobState.DELIVERED);
    const err = await failure(() => client.render.cancelJob({ jobId: job!.jobId, reason: "too late" }));
    assert.equal(err.codeName, "FAILED_PRECONDITION");
    assert.ok(err.preconditionFailures.length > 0, "PreconditionFailure detail");
    // Watching a finished job from its last sequence ends at once.
    const { job: done } = await client.render.getJob({ jobId: job!.jobId });
    let more = 0;
    for await (const _ of client.watchJob(job!.jobId, { afterSequence: done!.lastSequence, signal: AbortSignal.timeout(10_000) })) more++;
    assert.equal(more, 0);
  });

  it("downloads resume after a dropped connection; ByteStream Read honours offsets, limits and version pins", async () => {
    const { job } = await client.render.createJob({ requestId: `${run}-download`, presetId: "quick_social", brief, autoApprove: true });
    const jobId = job!.jobId;
    for await (const _ of client.watchJob(jobId, { signal: AbortSignal.timeout(60_000) })) void _;
    const dir = await mkdtemp(join(tmpdir(), "aiprod-ts-server-download-"));
    try {
      // Drop the connection after the first chunk: the download resumes at the bytes written.
      const retries: ReadRetryInfo[] = [];
      let dropped = false;
      const path = join(dir, "video.mp4");
      const video = await client.downloadVideo(jobId, path, {
        initialBackoffMs: 10,
        onRetry: (i) => retries.push(i),
        onProgress: ({ bytesWritten }) => {
          if (!dropped) {
            dropped = true;
            client.resetConnection();
          }
          assert.ok(bytesWritten > 0);
        },
      });
      const bytes = await readFile(path);
      assert.equal(BigInt(bytes.length), video.sizeBytes);
      assert.equal(createHash("sha256").update(bytes).digest("hex"), video.sha256);
      assert.ok(bytes.length > 256 * 1024, "more than one chunk");
      assert.equal(retries.length, 1, "one retry after the dropped connection");
      const resumedAt = retries[0]!.readOffset;
      assert.ok(resumedAt > 0n && resumedAt < video.sizeBytes && resumedAt % (256n * 1024n) === 0n, `resumed mid-way at ${resumedAt}`);

      // A slice, read with offset and limit.
      const slice: Uint8Array[] = [];
      for await (const chunk of client.readResource(`${video.resourceName}@${video.sha256}`, { readOffset: 1000, readLimit: 300_000 })) {
        slice.push(chunk);
      }
      assert.deepEqual(Buffer.concat(slice), bytes.subarray(1000, 301_000));

      // An offset beyond the end is OUT_OF_RANGE; another version is FAILED_PRECONDITION.
      const readAll = async (name: string, readOffset = 0n) => {
        for await (const _ of client.readResource(name, { readOffset })) void _;
      };
      assert.equal((await failure(() => readAll(video.resourceName, video.sizeBytes + 1n))).codeName, "OUT_OF_RANGE");
      assert.equal((await failure(() => readAll(`${video.resourceName}@${"0".repeat(64)}`))).codeName, "FAILED_PRECONDITION");
      assert.equal((await failure(() => readAll("jobs/job_does_not_exist/video"))).codeName, "NOT_FOUND");
      assert.equal((await failure(() => readAll(`jobs/${jobId}/shots/no_such_shot/clip`))).codeName, "NOT_FOUND");

      // The poster is a PNG.
      const poster: Uint8Array[] = [];
      for await (const chunk of client.readResource(video.posterResourceName)) poster.push(chunk);
      assert.equal(Buffer.concat(poster).subarray(1, 4).toString("latin1"), "PNG");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("INVALID_ARGUMENT when after_sequence is beyond the job's last sequence", async () => {
    const { job } = await client.render.getJob({ jobId: (await client.listJobs({ labels: { run } }).next()).value!.jobId });
    const err = await failure(async () => {
      for await (const _ of client.render.watchJob({ jobId: job!.jobId, afterSequence: job!.lastSequence + 1000n })) void _;
    });
    assert.equal(err.codeName, "INVALID_ARGUMENT");
    assert.equal(Code[err.code], "InvalidArgument");
  });
});
