// Runs examples/conformance.ts against the real server named by AIPROD_ENDPOINT (test.sh starts one).
import assert from "node:assert/strict";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { exitAfter, quickstart, runConformance } from "../examples/conformance.js";

const skip = process.env.AIPROD_ENDPOINT ? false : "AIPROD_ENDPOINT is not set (run sdk/typescript/test.sh)";

// node 20's test runner cannot end a file whose stream is stuck open: exit instead of hanging.
if (!skip) exitAfter(280_000);

describe("conformance against the real server", { skip, timeout: 240_000 }, () => {
  it("runs the quickstart", async () => {
    // The quickstart downloads to ./video.mp4: run it in a scratch directory.
    const cwd = process.cwd();
    const scratch = await mkdtemp(join(tmpdir(), "aiprod-ts-quickstart-"));
    process.chdir(scratch);
    try {
      await quickstart();
      assert.ok((await stat(join(scratch, "video.mp4"))).size > 0, "video.mp4 downloaded");
    } finally {
      process.chdir(cwd);
      await rm(scratch, { recursive: true, force: true });
    }
  });

  it("runs the conformance scenario", async () => {
    const summary = await runConformance();
    assert.match(summary, /11 steps passed/);
    console.log(summary);
  });
});
