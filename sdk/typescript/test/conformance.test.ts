// Runs examples/conformance.ts against the real server named by AIPROD_ENDPOINT (test.sh starts one).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { exitAfter, quickstart, runConformance } from "../examples/conformance.js";

const skip = process.env.AIPROD_ENDPOINT ? false : "AIPROD_ENDPOINT is not set (run sdk/typescript/test.sh)";

// node 20's test runner cannot end a file whose stream is stuck open: exit instead of hanging.
if (!skip) exitAfter(280_000);

describe("conformance against the real server", { skip, timeout: 240_000 }, () => {
  it("runs the quickstart", async () => {
    await quickstart();
  });

  it("runs the conformance scenario", async () => {
    const summary = await runConformance();
    assert.match(summary, /10 steps passed/);
    console.log(summary);
  });
});
