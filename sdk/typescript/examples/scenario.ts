// The conformance scenario shared by all AIPROD SDKs, with checks (run by examples/conformance.ts
// after its quickstart). Needs AIPROD_ENDPOINT, AIPROD_API_KEY and AIPROD_OTHER_API_KEY.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, open, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AiprodClient, AiprodError, Code, codeName, JobState, type JobEvent, type VideoArtifact } from "@aiprod/sdk";

const dollars = (micros: bigint): string => `$${(Number(micros) / 1e6).toFixed(2)}`;

/** Expects `call` to fail with `code`; returns the error. */
async function expectError(code: Code, call: () => Promise<unknown>): Promise<AiprodError> {
  try {
    await call();
  } catch (e) {
    assert.ok(e instanceof AiprodError, `expected an AiprodError, got ${String(e)}`);
    assert.equal(e.codeName, codeName(code), `unexpected error ${e.message}`);
    return e;
  }
  assert.fail(`expected ${codeName(code)}, but the call succeeded`);
}

/** Checks a downloaded file against its artifact: size, SHA-256 (read back from disk) and an MP4 `ftyp` box. */
async function checkDownloaded(path: string, artifact: VideoArtifact): Promise<void> {
  assert.equal(BigInt((await stat(path)).size), artifact.sizeBytes, `${path}: size_bytes`);
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  assert.equal(hash.digest("hex"), artifact.sha256, `${path}: sha256`);
  const file = await open(path, "r");
  try {
    const head = Buffer.alloc(8);
    await file.read(head, 0, 8, 0);
    assert.equal(head.subarray(4, 8).toString("latin1"), "ftyp", `${path}: an MP4 (ftyp at bytes 4..8)`);
  } finally {
    await file.close();
  }
  assert.equal(artifact.mimeType, "video/mp4");
  assert.ok(artifact.frameCount > 0, `${path}: frame_count > 0`);
}

/** Runs the scenario's eleven steps; returns the one-line summary. */
export async function runConformance(env: NodeJS.ProcessEnv = process.env, timeoutMs = 120_000): Promise<string> {
  const deadline = AbortSignal.timeout(timeoutMs); // bounds the watches: a stuck job fails the run
  const endpoint = env.AIPROD_ENDPOINT;
  const apiKey = env.AIPROD_API_KEY;
  const otherKey = env.AIPROD_OTHER_API_KEY;
  assert.ok(endpoint && apiKey && otherKey, "set AIPROD_ENDPOINT, AIPROD_API_KEY and AIPROD_OTHER_API_KEY");
  const client = new AiprodClient({ endpoint, apiKey });
  const other = new AiprodClient({ endpoint, apiKey: otherKey });
  const events: JobEvent[] = [];
  const downloads = await mkdtemp(join(tmpdir(), "aiprod-ts-conformance-"));
  try {
    // 1. Presets.
    const { presets } = await client.presets.listPresets({});
    assert.deepEqual(presets.map((p) => p.presetId).sort(), ["brand_campaign", "premium_spot", "quick_social"]);

    // 2. Estimate.
    const estimate = await client.costs.estimateCost({ presetId: "brand_campaign", durationS: 60 });
    const quote = estimate.recommended!;
    assert.ok(quote.totalMicros > 0n, "recommended.total_micros > 0");
    assert.ok(quote.guaranteedMaxMicros >= quote.totalMicros, "guaranteed_max >= total");
    assert.equal(estimate.options.length, 3, "one option per backend");

    // 3. Create, twice with the same request_id.
    const request = {
      requestId: `conformance-ts-${Date.now()}-${process.pid}`,
      presetId: "brand_campaign",
      brief: "A runner laces up our new trail shoe at dawn and sprints up a misty mountain path.",
      brandId: "acme-shoes",
      durationS: 60,
      labels: { campaign: "conformance" },
    };
    const { job } = await client.render.createJob(request);
    assert.equal(job!.state, JobState.QUEUED);
    const jobId = job!.jobId;
    const again = await client.render.createJob(request);
    assert.equal(again.job!.jobId, jobId, "same request_id → same job");

    // 4. Watch until AWAITING_APPROVAL, then read the manifest.
    for await (const event of client.watchJob(jobId, { afterSequence: 0, signal: deadline })) {
      events.push(event);
      if (event.state === JobState.AWAITING_APPROVAL) break;
    }
    const remembered = events.at(-1)!.sequence;
    const { manifest } = await client.icc.getManifest({ jobId });
    assert.ok(manifest!.shots.length > 0, "manifest has shots");
    assert.ok(manifest!.etag !== "", "manifest has an etag");
    assert.equal(manifest!.revision, 1);

    // 5. Edit the manifest, then try again with the stale etag.
    const shots = manifest!.shots.map((s, i) => (i === 0 ? { ...s, description: `${s.description} Slow motion.` } : s));
    const updated = await client.icc.updateManifest({
      jobId,
      manifest: { audioStyle: "upbeat acoustic", shots },
      updateMask: { paths: ["audio_style", "shots"] },
      etag: manifest!.etag,
    });
    assert.equal(updated.manifest!.revision, 2);
    assert.ok(updated.manifest!.etag !== "" && updated.manifest!.etag !== manifest!.etag, "new etag");
    assert.ok(updated.quote !== undefined, "a new quote");
    await expectError(Code.Aborted, () =>
      client.icc.updateManifest({
        jobId,
        manifest: { audioStyle: "calm piano" },
        updateMask: { paths: ["audio_style"] },
        etag: manifest!.etag,
      }),
    );

    // 6. Approve.
    const approved = await client.icc.approveManifest({ jobId, etag: updated.manifest!.etag });
    assert.equal(approved.job!.state, JobState.RENDERING);

    // 7. Resume the watch; after 2 events drop the connection: watchJob reconnects and resumes.
    let reconnects = 0;
    let received = 0;
    const watch = client.watchJob(jobId, {
      afterSequence: remembered,
      signal: deadline,
      initialBackoffMs: 50,
      onReconnect: () => reconnects++,
    });
    for await (const event of watch) {
      events.push(event);
      if (++received === 2) client.resetConnection();
    }
    assert.ok(reconnects >= 1, "watchJob reconnected after the forced disconnect");
    const sequences = events.map((e) => Number(e.sequence));
    assert.deepEqual(sequences, sequences.map((_, i) => i + 1), "sequences are exactly 1..N");
    const states = [...new Set(events.map((e) => JobState[e.state]))];
    assert.deepEqual(states, ["QUEUED", "PLANNING", "AWAITING_APPROVAL", "RENDERING", "QUALITY_CHECK", "DELIVERED"]);
    assert.equal(events.at(-1)!.state, JobState.DELIVERED);

    // 8. Costs.
    const { report } = await client.costs.getJobCosts({ jobId });
    assert.ok(report!.certified && report!.withinGuarantee, "certified and within the guarantee");
    assert.ok(report!.billedMicros <= report!.guaranteedMaxMicros, "billed <= guaranteed max");
    assert.ok(report!.meteredMicros > 0n, "metered > 0");

    // 9. Validation errors list every field.
    // (An empty request_id would be filled by the SDK: send a malformed one.)
    const invalid = await expectError(Code.InvalidArgument, () =>
      client.render.createJob({ requestId: "not a valid id!", presetId: "quick_social", brief: "", durationS: 1000 }),
    );
    for (const field of ["request_id", "brief", "duration_s"]) {
      assert.ok(invalid.violatedFields.includes(field), `violation of ${field} in ${JSON.stringify(invalid.violatedFields)}`);
    }

    // 10. Unknown jobs and other tenants' jobs are NOT_FOUND alike.
    await expectError(Code.NotFound, () => client.render.getJob({ jobId: "job_does_not_exist" }));
    await expectError(Code.NotFound, () => other.render.getJob({ jobId }));

    // 11. Download the delivered video and one shot clip (ByteStream Read), verified; another
    // tenant reading the video's resource name gets NOT_FOUND.
    const { job: delivered } = await client.render.getJob({ jobId });
    const expected = delivered!.video;
    assert.ok(expected !== undefined && expected.resourceName !== "", "a delivered job has its video");
    const videoPath = join(downloads, "video.mp4");
    const video = await client.downloadVideo(jobId, videoPath, { signal: deadline });
    assert.equal(video.resourceName, expected.resourceName);
    assert.equal(video.sha256, expected.sha256);
    assert.equal(video.sizeBytes, expected.sizeBytes);
    await checkDownloaded(videoPath, expected);
    const shot = delivered!.shots[0];
    assert.ok(shot?.clip !== undefined && shot.clip.resourceName !== "", "the first shot has its clip");
    const clipPath = join(downloads, `${shot.shotId}.mp4`);
    const clip = await client.downloadShotClip(jobId, shot.shotId, clipPath, { signal: deadline });
    assert.equal(clip.sha256, shot.clip.sha256);
    await checkDownloaded(clipPath, clip);
    await expectError(Code.NotFound, async () => {
      for await (const _ of other.readResource(expected.resourceName, { signal: deadline })) void _;
    });

    return (
      `typescript conformance: 11 steps passed (job ${jobId}, ${events.length} events, ` +
      `${reconnects} reconnect(s), billed ${dollars(report!.billedMicros)} of max ${dollars(report!.guaranteedMaxMicros)}, ` +
      `video ${video.sizeBytes} bytes ${video.width}x${video.height} ${video.frameCount} frames sha256 ${video.sha256.slice(0, 12)}…)`
    );
  } finally {
    client.close();
    other.close();
    await rm(downloads, { recursive: true, force: true });
  }
}
