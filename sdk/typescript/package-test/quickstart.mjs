// Run by test.sh in a fresh npm project outside the repository, with the packed tarball installed:
// the ESM entry of @aiprod/sdk, from create to a verified video. Needs AIPROD_ENDPOINT and AIPROD_API_KEY.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { AiprodClient, JobState, VERSION } from "@aiprod/sdk";

const client = new AiprodClient({ endpoint: process.env.AIPROD_ENDPOINT, apiKey: process.env.AIPROD_API_KEY });
const { job } = await client.render.createJob({
  presetId: "quick_social", // request_id left empty: the SDK fills a fresh one
  brief: "A 15-second teaser of the acme-shoes spring line: a runner at dawn.",
  autoApprove: true,
});
let last;
for await (const event of client.watchJob(job.jobId, { signal: AbortSignal.timeout(60_000) })) last = event.state;
assert.equal(last, JobState.DELIVERED);

const video = await client.downloadVideo(job.jobId, "video.mp4");
const { job: delivered } = await client.render.getJob({ jobId: job.jobId });
const bytes = await readFile("video.mp4");
assert.equal(BigInt(bytes.length), delivered.video.sizeBytes, "size as the server says");
assert.equal(createHash("sha256").update(bytes).digest("hex"), delivered.video.sha256, "SHA-256 as the server says");
assert.equal(video.sha256, delivered.video.sha256);
client.close();
console.log(`esm: @aiprod/sdk ${VERSION}: job ${job.jobId} DELIVERED, video.mp4 ${bytes.length} bytes, sha256 ${video.sha256}`);
