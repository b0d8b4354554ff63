// Writes every ```ts block of the SDK's README that starts with an import into snippet-N.mts in
// the current directory, so that test.sh type-checks them against the installed tarball.
import { readFileSync, writeFileSync } from "node:fs";

const readme = readFileSync(process.argv[2], "utf8");
const blocks = [...readme.matchAll(/```ts\n(import [\s\S]*?)```/g)].map((m) => m[1]);
if (blocks.length < 3) throw new Error(`expected at least 3 complete snippets, found ${blocks.length}`);
blocks.forEach((code, i) => writeFileSync(`snippet-${i + 1}.mts`, `${code}export {};\n`));
console.log(`${blocks.length} README snippets written`);
