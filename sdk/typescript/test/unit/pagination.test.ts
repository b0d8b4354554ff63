import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AiprodError, paginateItems, paginatePages } from "@aiprod/sdk";

describe("pagination", () => {
  it("follows tokens until an empty one", async () => {
    const pages: Record<string, { items: number[]; nextPageToken: string }> = {
      "": { items: [1, 2], nextPageToken: "a" },
      a: { items: [3], nextPageToken: "b" },
      b: { items: [], nextPageToken: "" },
    };
    const asked: string[] = [];
    const fetch = async (t: string) => {
      asked.push(t);
      return pages[t]!;
    };
    const items: number[] = [];
    for await (const i of paginateItems(fetch, (p) => p.items)) items.push(i);
    assert.deepEqual(items, [1, 2, 3]);
    assert.deepEqual(asked, ["", "a", "b"]);
  });

  it("starts from a given token", async () => {
    const seen: string[] = [];
    for await (const p of paginatePages(async (t) => ({ nextPageToken: t === "x" ? "" : "x", t }), "x")) seen.push(p.t);
    assert.deepEqual(seen, ["x"]);
  });

  it("refuses a token loop", async () => {
    await assert.rejects(
      (async () => {
        for await (const _ of paginatePages(async () => ({ nextPageToken: "same" }))) void _;
      })(),
      (e: unknown) => e instanceof AiprodError,
    );
  });
});
