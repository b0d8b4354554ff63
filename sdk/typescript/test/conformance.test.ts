// Runs examples/conformance.ts (the README's quickstart, then the conformance scenario) as a program,
// as a user would, against the real server named by AIPROD_ENDPOINT (test.sh starts one).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const skip = process.env.AIPROD_ENDPOINT ? false : "AIPROD_ENDPOINT is not set (run sdk/typescript/test.sh)";
const program = fileURLToPath(new URL("../examples/conformance.js", import.meta.url));

describe("conformance against the real server", { skip, timeout: 260_000 }, () => {
  it("runs the quickstart and the conformance scenario", async () => {
    // The quickstart downloads to ./video.mp4: run it in a scratch directory.
    const scratch = await mkdtemp(join(tmpdir(), "aiprod-ts-quickstart-"));
    try {
      const { stdout } = await promisify(execFile)(process.execPath, [program], { cwd: scratch, timeout: 250_000 });
      assert.match(stdout, /video\.mp4: \d+ bytes, sha256 [0-9a-f]{64}/);
      assert.ok((await stat(join(scratch, "video.mp4"))).size > 0, "video.mp4 downloaded");
      const summary = stdout.trim().split("\n").at(-1)!;
      assert.match(summary, /typescript conformance: 11 steps passed/);
      console.log(summary);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  });
});
