// Run by test.sh in a fresh npm project outside the repository, with the packed tarball installed:
// the CommonJS entry of @aiprod/sdk (require), from create to a verified video.
const assert = require("node:assert/strict");
const { createHash } = require("node:crypto");
const { readFileSync } = require("node:fs");
const { AiprodClient, AiprodError, JobState, VERSION } = require("@aiprod/sdk");

async function main() {
  const client = new AiprodClient({ endpoint: process.env.AIPROD_ENDPOINT, apiKey: process.env.AIPROD_API_KEY });
  const { job } = await client.render.createJob({
    presetId: "quick_social",
    brief: "A 15-second teaser of the acme-shoes spring line: a runner at dawn.",
    autoApprove: true,
  });
  let last;
  for await (const event of client.watchJob(job.jobId, { signal: AbortSignal.timeout(60_000) })) last = event.state;
  assert.equal(last, JobState.DELIVERED);

  const video = await client.downloadVideo(job.jobId, "video-cjs.mp4");
  const { job: delivered } = await client.render.getJob({ jobId: job.jobId });
  const bytes = readFileSync("video-cjs.mp4");
  assert.equal(BigInt(bytes.length), delivered.video.sizeBytes, "size as the server says");
  assert.equal(createHash("sha256").update(bytes).digest("hex"), delivered.video.sha256, "SHA-256 as the server says");

  // Errors are AiprodError from the CommonJS build too, with their decoded details.
  await assert.rejects(client.render.getJob({ jobId: "job_does_not_exist" }), (e) => e instanceof AiprodError && e.codeName === "NOT_FOUND");
  client.close();
  console.log(`cjs: @aiprod/sdk ${VERSION}: job ${job.jobId} DELIVERED, video-cjs.mp4 ${bytes.length} bytes, sha256 ${video.sha256}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
