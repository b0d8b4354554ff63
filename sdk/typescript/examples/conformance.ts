// The AIPROD quickstart of the TypeScript SDK (the README shows the part between the markers),
// then the conformance scenario shared by all SDKs (examples/scenario.ts). Needs a server
// (scripts/test-server.sh start DIR) and AIPROD_ENDPOINT, AIPROD_API_KEY, AIPROD_OTHER_API_KEY:
//   npm run build && node dist/examples/conformance.js       (writes ./video.mp4)

// [START quickstart]
import { randomUUID } from "node:crypto";
import { AiprodClient, JobState } from "@aiprod/sdk";

const usd = (micros: bigint): string => `$${(Number(micros) / 1e6).toFixed(2)}`;
const client = new AiprodClient({
  endpoint: process.env.AIPROD_ENDPOINT ?? "http://127.0.0.1:50051",
  apiKey: process.env.AIPROD_API_KEY!,
});

// What will a 60 s brand campaign cost? Amounts are integer micro-USD (bigint).
const estimate = await client.costs.estimateCost({ presetId: "brand_campaign", durationS: 60 });
console.log(`quote ${usd(estimate.recommended!.totalMicros)}, at most ${usd(estimate.recommended!.guaranteedMaxMicros)}`);

// Create the job. request_id makes it idempotent: the SDK's retries (and yours) reuse it, so a
// retried call never creates a second job. A fresh id per job (the SDK fills one if you leave it empty).
const { job } = await client.render.createJob({
  requestId: randomUUID(),
  presetId: "brand_campaign",
  brief: "A runner laces up our new trail shoe at dawn and sprints up a misty mountain path.",
  brandId: "acme-shoes",
  durationS: 60,
});
const jobId = job!.jobId;

// Follow the job live; watchJob reconnects and resumes by itself and ends after the terminal event.
let approved = false;
for await (const event of client.watchJob(jobId)) {
  console.log(`#${event.sequence} ${JobState[event.state]} ${event.payload.case ?? ""}`);
  if (event.state === JobState.AWAITING_APPROVAL && !approved) {
    const { manifest } = await client.icc.getManifest({ jobId }); // review the shot list…
    await client.icc.approveManifest({ jobId, etag: manifest!.etag }); // …and approve it
    approved = true;
  }
}

// The certified bill never exceeds the guaranteed maximum.
const { report } = await client.costs.getJobCosts({ jobId });
console.log(`billed ${usd(report!.billedMicros)} (guaranteed max ${usd(report!.guaranteedMaxMicros)})`);

// Download the video: streamed to disk, resumed after drops, checked against its size and SHA-256.
const video = await client.downloadVideo(jobId, "video.mp4");
console.log(`video.mp4: ${video.sizeBytes} bytes, sha256 ${video.sha256}`);
client.close();
// [END quickstart]

// The conformance scenario; a stuck run (e.g. a job that never finishes) fails instead of hanging.
setTimeout(() => {
  console.error("typescript conformance: FAILED: not finished after 240 s");
  process.exit(1);
}, 240_000).unref();
const { runConformance } = await import("./scenario.js");
console.log(await runConformance());
