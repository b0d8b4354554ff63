import { Code } from "@connectrpc/connect";
import { AiprodError } from "./errors.js";

/** A page of a list RPC: anything with a next_page_token. */
export interface Page {
  nextPageToken: string;
}

/**
 * Yields every page of a paginated list, following next_page_token from `pageToken` until a page
 * comes back with an empty token.
 */
export async function* paginatePages<P extends Page>(
  fetchPage: (pageToken: string) => Promise<P>,
  pageToken = "",
): AsyncGenerator<P, void, undefined> {
  const seen = new Set<string>();
  let token = pageToken;
  for (;;) {
    const page = await fetchPage(token);
    yield page;
    if (page.nextPageToken === "") return;
    if (seen.has(page.nextPageToken)) {
      throw new AiprodError(Code.Internal, `the server returned page token ${page.nextPageToken} twice`);
    }
    seen.add(page.nextPageToken);
    token = page.nextPageToken;
  }
}

/** Yields every item of every page (see {@link paginatePages}). */
export async function* paginateItems<P extends Page, T>(
  fetchPage: (pageToken: string) => Promise<P>,
  items: (page: P) => T[],
  pageToken = "",
): AsyncGenerator<T, void, undefined> {
  for await (const page of paginatePages(fetchPage, pageToken)) {
    yield* items(page);
  }
}
