// Downloads over a real HTTP/2 gRPC connection to an in-process fake ByteStream server
// (connect-node): the HTTP/2 stream reset by the server (RST_STREAM), the connection dropped by
// the server and by the client, each mid-download. The download resumes at the bytes already
// written and ends with the artifact's SHA-256.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFile, mkdtemp, readdir, rm } from "node:fs/promises";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  AiprodClient,
  ByteStream,
  JobSchema,
  JobState,
  RenderService,
  VideoArtifactSchema,
  type ReadRetryInfo,
} from "@aiprod/sdk";

const CHUNK = 256 * 1024; // the real server's chunk size
const BYTES = randomBytes(24 * CHUNK + 4321);
const SHA256 = createHash("sha256").update(BYTES).digest("hex");
const NAME = "jobs/job_1/video";

describe("downloads over HTTP/2 gRPC with real connection drops", () => {
  let server: http2.Http2Server;
  let endpoint = "";
  let dir = "";
  const sessions = new Set<http2.ServerHttp2Session>();
  const streams = new Set<http2.ServerHttp2Stream>();
  const reads: bigint[] = [];
  /** Runs before the server sends chunk `chunk` of read `read`. */
  let onChunk: (read: number, chunk: number) => void = () => {};

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "aiprod-ts-download-h2-"));
    const handler = connectNodeAdapter({
      grpc: true,
      connect: false,
      grpcWeb: false,
      routes: (router) => {
        router.service(RenderService, {
          getJob: (req) => ({
            job: create(JobSchema, {
              jobId: req.jobId,
              state: JobState.DELIVERED,
              video: create(VideoArtifactSchema, {
                resourceName: NAME,
                sizeBytes: BigInt(BYTES.length),
                sha256: SHA256,
                mimeType: "video/mp4",
              }),
            }),
          }),
        });
        router.service(ByteStream, {
          async *read(req, ctx) {
            const index = reads.length;
            reads.push(req.readOffset);
            if (req.resourceName !== `${NAME}@${SHA256}`) throw new ConnectError("not found", Code.NotFound);
            for (let pos = Number(req.readOffset), n = 0; pos < BYTES.length; pos += CHUNK, n++) {
              onChunk(index, n);
              await sleep(1, undefined, { signal: ctx.signal });
              yield { data: BYTES.subarray(pos, pos + CHUNK) };
            }
          },
        });
      },
    });
    server = http2.createServer(handler);
    server.on("session", (s) => {
      sessions.add(s);
      s.on("close", () => sessions.delete(s));
    });
    server.on("stream", (s) => {
      streams.add(s);
      s.on("close", () => streams.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    for (const s of sessions) s.destroy();
    await new Promise((resolve) => server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  /** Downloads the video; returns the retries and the offsets of the reads. */
  async function download(client: AiprodClient, file: string, onProgress: (written: number) => void = () => {}) {
    reads.length = 0;
    const retries: ReadRetryInfo[] = [];
    const path = join(dir, file);
    try {
      const video = await client.downloadVideo("job_1", path, {
        initialBackoffMs: 5,
        onRetry: (i) => retries.push(i),
        onProgress: (p) => onProgress(p.bytesWritten),
      });
      assert.equal(video.sha256, SHA256);
    } finally {
      client.close();
      onChunk = () => {};
    }
    const written = await readFile(path);
    assert.equal(written.length, BYTES.length);
    assert.equal(createHash("sha256").update(written).digest("hex"), SHA256);
    assert.deepEqual((await readdir(dir)).filter((f) => f.endsWith(".part")), []);
    return { retries, reads: [...reads] };
  }

  /** One retry, from an offset in the middle made of whole chunks, and the second read starts there. */
  function assertResumedOnce(retries: ReadRetryInfo[], offsets: bigint[]) {
    assert.equal(retries.length, 1, `one retry, got ${retries.map((r) => r.error.message).join("; ")}`);
    const resumeAt = retries[0]!.readOffset;
    assert.ok(resumeAt > 0n && resumeAt < BigInt(BYTES.length), `resumed mid-way at ${resumeAt}`);
    assert.equal(resumeAt % BigInt(CHUNK), 0n);
    assert.deepEqual(offsets, [0n, resumeAt]);
  }

  it("resumes after the server resets the HTTP/2 stream", async () => {
    onChunk = (read, chunk) => {
      if (read === 0 && chunk === 6) for (const s of streams) s.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    };
    const { retries, reads: offsets } = await download(new AiprodClient({ endpoint, apiKey: "k" }), "reset.mp4");
    assertResumedOnce(retries, offsets);
  });

  it("resumes after the server drops the connection", async () => {
    onChunk = (read, chunk) => {
      if (read === 0 && chunk === 9) for (const s of sessions) s.destroy();
    };
    const { retries, reads: offsets } = await download(new AiprodClient({ endpoint, apiKey: "k" }), "server-drop.mp4");
    assertResumedOnce(retries, offsets);
    assert.equal(retries[0]!.error.isTransportError, true);
  });

  it("resumes after the client drops the connection", async () => {
    const client = new AiprodClient({ endpoint, apiKey: "k" });
    let dropped = false;
    const { retries, reads: offsets } = await download(client, "client-drop.mp4", (written) => {
      if (!dropped && written >= 5 * CHUNK) {
        dropped = true;
        client.resetConnection();
      }
    });
    assertResumedOnce(retries, offsets);
    assert.equal(retries[0]!.error.codeName, "UNAVAILABLE");
  });
});
