// downloadVideo / downloadShotClip / readResource against an in-memory fake of RenderService.GetJob
// and google.bytestream.ByteStream/Read (Connect's router transport): resuming after dropped
// streams, the retry budget, version pinning and restarts, verification and the clear errors.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import {
  AiprodClient,
  AiprodError,
  ArtifactNotAvailableError,
  ByteStream,
  JobSchema,
  JobState,
  RenderService,
  ShotStatusSchema,
  VideoArtifactSchema,
  googleBytestream,
  googleRpc,
  type Job,
  type ReadRetryInfo,
  type VideoArtifact,
} from "@aiprod/sdk";

const CHUNK = 64 * 1024;
const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

interface Read {
  resourceName: string;
  readOffset: bigint;
  readLimit: bigint;
  authorization: string | null;
}

/**
 * A fake server: a job whose video (and shot clips) are byte buffers served by ByteStream.Read in
 * 64 KiB chunks. `onChunk(readIndex, chunkIndex)` runs before each chunk: throw there to fail the
 * stream mid-way.
 */
class FakeServer {
  job: Job;
  /** The current bytes of each resource (without version). */
  files = new Map<string, Uint8Array>();
  /** Bytes served instead of the stored ones (to corrupt a download). */
  served = new Map<string, Uint8Array>();
  reads: Read[] = [];
  getJobs = 0;
  onChunk: (read: number, chunk: number) => void = () => {};
  onGetJob: (n: number) => void = () => {};

  constructor(state = JobState.DELIVERED) {
    this.job = create(JobSchema, { jobId: "job_1", state });
  }

  /** Stores `bytes` as the job's video and returns the artifact GetJob reports. */
  setVideo(bytes: Uint8Array): VideoArtifact {
    const video = artifact("jobs/job_1/video", bytes);
    this.files.set(video.resourceName, bytes);
    this.job.video = video;
    return video;
  }

  setClip(shotId: string, bytes: Uint8Array | undefined): void {
    const clip = bytes === undefined ? undefined : artifact(`jobs/job_1/shots/${shotId}/clip`, bytes);
    if (clip !== undefined && bytes !== undefined) this.files.set(clip.resourceName, bytes);
    const shots = this.job.shots.filter((s) => s.shotId !== shotId);
    shots.push(create(ShotStatusSchema, { shotId, durationS: 5, rendered: clip !== undefined, attempts: 1, clip }));
    this.job.shots = shots;
  }

  routes = (router: ConnectRouter): void => {
    router.service(RenderService, {
      getJob: (req) => {
        this.getJobs++;
        this.onGetJob(this.getJobs);
        if (req.jobId !== this.job.jobId) throw new ConnectError("job not found", Code.NotFound);
        return { job: this.job };
      },
    });
    router.service(ByteStream, { read: (req, ctx) => this.read(req, ctx) });
  };

  async *read(req: googleBytestream.ReadRequest, ctx: HandlerContext): AsyncGenerator<{ data: Uint8Array }> {
    const index = this.reads.length;
    this.reads.push({
      resourceName: req.resourceName,
      readOffset: req.readOffset,
      readLimit: req.readLimit,
      authorization: ctx.requestHeader.get("authorization"),
    });
    const [name = "", pin] = req.resourceName.split("@");
    const stored = this.files.get(name);
    if (stored === undefined) throw new ConnectError(`${name} not found`, Code.NotFound);
    if (pin !== undefined && pin !== sha256(stored)) {
      throw new ConnectError(`${name} was replaced by a revision`, Code.FailedPrecondition);
    }
    const bytes = this.served.get(name) ?? stored;
    const offset = Number(req.readOffset);
    if (offset < 0 || offset > bytes.length) throw new ConnectError("read_offset out of range", Code.OutOfRange);
    const end = req.readLimit > 0n ? Math.min(bytes.length, offset + Number(req.readLimit)) : bytes.length;
    for (let pos = offset, n = 0; pos < end; pos += CHUNK, n++) {
      this.onChunk(index, n);
      yield { data: bytes.subarray(pos, Math.min(end, pos + CHUNK)) };
    }
  }
}

function artifact(resourceName: string, bytes: Uint8Array): VideoArtifact {
  return create(VideoArtifactSchema, {
    resourceName,
    uri: resourceName,
    sizeBytes: BigInt(bytes.length),
    sha256: sha256(bytes),
    mimeType: "video/mp4",
    frameCount: 120,
  });
}

function clientFor(server: FakeServer): AiprodClient {
  return new AiprodClient({
    endpoint: "http://in-memory",
    apiKey: "aiprod_test_key",
    transport: (interceptors) => createRouterTransport(server.routes, { transport: { interceptors } }),
  });
}

const fast = { initialBackoffMs: 1, maxBackoffMs: 4 };

async function rejection(p: Promise<unknown>): Promise<AiprodError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof AiprodError, `expected an AiprodError, got ${String(e)}`);
    return e;
  }
  assert.fail("expected a failure");
}

describe("downloads", () => {
  let dir = "";
  let n = 0;
  const target = (): string => join(dir, `video-${++n}.mp4`);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "aiprod-ts-download-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** The directory holds no leftover .part file. */
  async function assertNoPartFiles(): Promise<void> {
    const parts = (await readdir(dir)).filter((f) => f.endsWith(".part"));
    assert.deepEqual(parts, []);
  }

  it("downloads the video, pinned to its version, with the API key", async () => {
    const server = new FakeServer();
    const bytes = randomBytes(5 * CHUNK + 123);
    const video = server.setVideo(bytes);
    const path = target();
    const progress: number[] = [];
    const got = await clientFor(server).downloadVideo("job_1", path, {
      onProgress: (p) => {
        assert.equal(p.totalBytes, bytes.length);
        progress.push(p.bytesWritten);
      },
    });
    assert.equal(got.sha256, video.sha256);
    assert.equal(got.sizeBytes, BigInt(bytes.length));
    assert.deepEqual(await readFile(path), bytes);
    assert.deepEqual(
      server.reads.map((r) => [r.resourceName, r.readOffset, r.readLimit, r.authorization]),
      [[`jobs/job_1/video@${video.sha256}`, 0n, 0n, "Bearer aiprod_test_key"]],
    );
    assert.equal(progress.length, 6);
    assert.equal(progress.at(-1), bytes.length);
    await assertNoPartFiles();
  });

  it("resumes at the bytes written after the stream drops mid-way, with the same hash", async () => {
    const server = new FakeServer();
    const bytes = randomBytes(8 * CHUNK + 7);
    const video = server.setVideo(bytes);
    // The first read fails after 3 chunks, the second after 2 more (UNAVAILABLE, as when the server stops).
    server.onChunk = (read, chunk) => {
      if ((read === 0 && chunk === 3) || (read === 1 && chunk === 2)) throw new ConnectError("shutting down", Code.Unavailable);
    };
    const retries: ReadRetryInfo[] = [];
    const path = target();
    const got = await clientFor(server).downloadVideo("job_1", path, { ...fast, onRetry: (i) => retries.push(i) });
    assert.deepEqual(server.reads.map((r) => r.readOffset), [0n, BigInt(3 * CHUNK), BigInt(5 * CHUNK)]);
    assert.deepEqual(retries.map((r) => [r.attempt, r.readOffset, r.error.codeName]), [
      [1, BigInt(3 * CHUNK), "UNAVAILABLE"],
      [1, BigInt(5 * CHUNK), "UNAVAILABLE"],
    ]);
    assert.equal(sha256(await readFile(path)), video.sha256);
    assert.equal(got.sha256, video.sha256);
    await assertNoPartFiles();
  });

  it("the retry budget resets on progress and runs out without it", async () => {
    const server = new FakeServer();
    const bytes = randomBytes(10 * CHUNK);
    const video = server.setVideo(bytes);
    // Every read delivers one chunk, then drops: 10 failures in all, but each retry makes progress.
    server.onChunk = (_read, chunk) => {
      if (chunk === 1) throw new ConnectError("flaky", Code.Unavailable);
    };
    const path = target();
    await clientFor(server).downloadVideo("job_1", path, { ...fast, maxRetries: 2 });
    assert.equal(sha256(await readFile(path)), video.sha256);
    assert.equal(server.reads.length, 10);

    // A read that never makes progress: 1 attempt + maxRetries retries, then the last error.
    server.reads = [];
    server.onChunk = () => {
      throw new ConnectError("down", Code.Unavailable);
    };
    const failed = target();
    const err = await rejection(clientFor(server).downloadVideo("job_1", failed, { ...fast, maxRetries: 3 }));
    assert.equal(err.codeName, "UNAVAILABLE");
    assert.equal(server.reads.length, 4);
    assert.equal(existsSync(failed), false);
    await assertNoPartFiles();
  });

  it("retries RESOURCE_EXHAUSTED with RetryInfo, not without", async () => {
    const server = new FakeServer();
    const bytes = randomBytes(3 * CHUNK);
    server.setVideo(bytes);
    const limited = (withRetryInfo: boolean) =>
      new ConnectError(
        "rate limited",
        Code.ResourceExhausted,
        undefined,
        withRetryInfo ? [{ desc: googleRpc.RetryInfoSchema, value: { retryDelay: { seconds: 0n, nanos: 20_000_000 } } }] : [],
      );
    server.onChunk = (read, chunk) => {
      if (read === 0 && chunk === 1) throw limited(true);
    };
    const retries: ReadRetryInfo[] = [];
    const path = target();
    await clientFor(server).downloadVideo("job_1", path, { ...fast, onRetry: (i) => retries.push(i) });
    assert.deepEqual(await readFile(path), bytes);
    assert.equal(retries.length, 1);
    assert.ok(retries[0]!.delayMs >= 20, "waits at least the RetryInfo delay");

    server.reads = [];
    server.onChunk = (read, chunk) => {
      if (read === 0 && chunk === 1) throw limited(false);
    };
    const err = await rejection(clientFor(server).downloadVideo("job_1", target(), fast));
    assert.equal(err.codeName, "RESOURCE_EXHAUSTED");
    assert.equal(server.reads.length, 1);
    await assertNoPartFiles();
  });

  it("detects a hash mismatch: DATA_LOSS, the .part file is removed and the target untouched", async () => {
    const server = new FakeServer();
    const bytes = randomBytes(4 * CHUNK);
    server.setVideo(bytes);
    const corrupt = Buffer.from(bytes);
    corrupt[CHUNK + 5] = (corrupt[CHUNK + 5]! + 1) % 256;
    server.served.set("jobs/job_1/video", corrupt);
    const path = target();
    await writeFile(path, "the previous download");
    const err = await rejection(clientFor(server).downloadVideo("job_1", path, fast));
    assert.equal(err.codeName, "DATA_LOSS");
    assert.match(err.message, /SHA-256/);
    assert.equal(await readFile(path, "utf8"), "the previous download");
    await assertNoPartFiles();
  });

  it("detects a size mismatch (a shorter or a longer file)", async () => {
    const server = new FakeServer();
    const bytes = randomBytes(4 * CHUNK);
    server.setVideo(bytes);
    server.served.set("jobs/job_1/video", bytes.subarray(0, 3 * CHUNK));
    const short = await rejection(clientFor(server).downloadVideo("job_1", target(), fast));
    assert.equal(short.codeName, "DATA_LOSS");
    assert.match(short.message, /downloaded 196608 bytes, but size_bytes is 262144/);

    server.served.set("jobs/job_1/video", Buffer.concat([bytes, Buffer.from("extra")]));
    const long = await rejection(clientFor(server).downloadVideo("job_1", target(), fast));
    assert.equal(long.codeName, "DATA_LOSS");
    assert.match(long.message, /more than the 262144 bytes/);
    await assertNoPartFiles();
  });

  it("starts over once from a fresh GetJob when a revision replaced the file", async () => {
    const server = new FakeServer();
    const first = randomBytes(4 * CHUNK);
    const second = randomBytes(6 * CHUNK + 1);
    const old = server.setVideo(first);
    // The revision lands while the first read is under way.
    server.onChunk = (read, chunk) => {
      if (read === 0 && chunk === 2) server.setVideo(second);
      if (read === 0 && chunk === 2) throw new ConnectError("replaced", Code.FailedPrecondition);
    };
    const path = target();
    const got = await clientFor(server).downloadVideo("job_1", path, fast);
    assert.equal(got.sha256, sha256(second));
    assert.deepEqual(await readFile(path), second);
    assert.equal(server.getJobs, 2);
    assert.deepEqual(server.reads.map((r) => [r.resourceName, r.readOffset]), [
      [`jobs/job_1/video@${old.sha256}`, 0n],
      [`jobs/job_1/video@${sha256(second)}`, 0n],
    ]);

    // Replaced again during the second attempt: the error is thrown.
    server.reads = [];
    server.getJobs = 0;
    server.onChunk = (_read, chunk) => {
      if (chunk === 1) throw new ConnectError("replaced", Code.FailedPrecondition);
    };
    const err = await rejection(clientFor(server).downloadVideo("job_1", target(), fast));
    assert.equal(err.codeName, "FAILED_PRECONDITION");
    assert.equal(server.reads.length, 2);
    assert.equal(server.getJobs, 2);
    await assertNoPartFiles();
  });

  it("retries a transient GetJob failure", async () => {
    const server = new FakeServer();
    const bytes = randomBytes(CHUNK);
    server.setVideo(bytes);
    server.onGetJob = (n) => {
      if (n === 1) throw new ConnectError("restarting", Code.Unavailable);
    };
    const path = target();
    await clientFor(server).downloadVideo("job_1", path, fast);
    assert.deepEqual(await readFile(path), bytes);
    assert.equal(server.getJobs, 2);
  });

  it("a video that is not assembled yet is a clear error with the job's state", async () => {
    const server = new FakeServer(JobState.RENDERING);
    const path = target();
    const err = await rejection(clientFor(server).downloadVideo("job_1", path));
    assert.ok(err instanceof ArtifactNotAvailableError);
    assert.equal(err.codeName, "FAILED_PRECONDITION");
    assert.equal(err.jobState, JobState.RENDERING);
    assert.equal(err.jobId, "job_1");
    assert.match(err.message, /video of job job_1 is not available yet \(job state RENDERING\)/);
    assert.equal(server.reads.length, 0);
    assert.equal(existsSync(path), false);
    await assertNoPartFiles();

    server.job.state = JobState.FAILED;
    const failed = await rejection(clientFor(server).downloadVideo("job_1", target()));
    assert.ok(failed instanceof ArtifactNotAvailableError);
    assert.match(failed.message, /job job_1 has no video: it is FAILED/);
  });

  it("downloads a shot clip; a clip not rendered yet and an unknown shot are clear errors", async () => {
    const server = new FakeServer(JobState.AWAITING_APPROVAL);
    const client = clientFor(server);
    const noShots = await rejection(client.downloadShotClip("job_1", "shot_1", target()));
    assert.ok(noShots instanceof ArtifactNotAvailableError);
    assert.match(noShots.message, /clip of shot shot_1 of job job_1 is not available yet \(job state AWAITING_APPROVAL\)/);

    server.job.state = JobState.RENDERING;
    const clip = randomBytes(2 * CHUNK + 9);
    server.setClip("shot_1", clip);
    server.setClip("shot_2", undefined);
    const pending = await rejection(client.downloadShotClip("job_1", "shot_2", target()));
    assert.ok(pending instanceof ArtifactNotAvailableError);
    assert.equal(pending.shotId, "shot_2");
    assert.equal(pending.jobState, JobState.RENDERING);
    assert.match(pending.message, /not available yet \(job state RENDERING, shot rendered: false/);

    const unknown = await rejection(client.downloadShotClip("job_1", "shot_9", target()));
    assert.equal(unknown.codeName, "NOT_FOUND");
    assert.match(unknown.message, /job job_1 has no shot shot_9 \(shots: shot_1, shot_2\)/);

    server.onChunk = (read, chunk) => {
      if (read === 0 && chunk === 1) throw new ConnectError("reset", Code.Unavailable);
    };
    const path = target();
    const got = await client.downloadShotClip("job_1", "shot_1", path, fast);
    assert.equal(got.resourceName, "jobs/job_1/shots/shot_1/clip");
    assert.deepEqual(await readFile(path), clip);
    assert.deepEqual(server.reads.map((r) => r.readOffset), [0n, BigInt(CHUNK)]);
    await assertNoPartFiles();
  });

  it("NOT_FOUND from Read is thrown at once", async () => {
    const server = new FakeServer();
    server.setVideo(randomBytes(CHUNK));
    server.files.clear();
    const err = await rejection(clientFor(server).downloadVideo("job_1", target(), fast));
    assert.equal(err.codeName, "NOT_FOUND");
    assert.equal(server.reads.length, 1);
    await assertNoPartFiles();
  });

  it("a cancelled download throws CANCELLED (DEADLINE_EXCEEDED on timeout) and removes the .part file", async () => {
    const server = new FakeServer();
    server.setVideo(randomBytes(6 * CHUNK));
    const controller = new AbortController();
    const err = await rejection(
      clientFor(server).downloadVideo("job_1", target(), {
        signal: controller.signal,
        onProgress: (p) => {
          if (p.bytesWritten >= 2 * CHUNK) controller.abort();
        },
      }),
    );
    assert.equal(err.codeName, "CANCELLED");
    await assertNoPartFiles();

    server.onChunk = () => {
      throw new ConnectError("down", Code.Unavailable);
    };
    const timedOut = await rejection(
      clientFor(server).downloadVideo("job_1", target(), { timeoutMs: 50, initialBackoffMs: 20, maxRetries: 100 }),
    );
    assert.equal(timedOut.codeName, "DEADLINE_EXCEEDED");
    await assertNoPartFiles();
  });

  it("readResource yields the bytes from an offset, up to a limit, across a dropped stream", async () => {
    const server = new FakeServer();
    const bytes = randomBytes(5 * CHUNK);
    server.setVideo(bytes);
    server.onChunk = (read, chunk) => {
      if (read === 0 && chunk === 2) throw new ConnectError("reset", Code.Unavailable);
    };
    const chunks: Uint8Array[] = [];
    const offset = 1000;
    const limit = 3 * CHUNK;
    for await (const chunk of clientFor(server).readResource("jobs/job_1/video", { readOffset: offset, readLimit: limit, ...fast })) {
      chunks.push(chunk);
    }
    assert.deepEqual(Buffer.concat(chunks), bytes.subarray(offset, offset + limit));
    assert.deepEqual(server.reads.map((r) => [r.readOffset, r.readLimit]), [
      [1000n, BigInt(limit)],
      [BigInt(offset + 2 * CHUNK), BigInt(CHUNK)],
    ]);

    const err = await rejection(
      (async () => {
        for await (const _ of clientFor(server).readResource("jobs/job_1/video@0000")) void _;
      })(),
    );
    assert.equal(err.codeName, "FAILED_PRECONDITION");
  });
});
