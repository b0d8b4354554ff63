// Type-checked in the fresh project: the tarball's CommonJS declarations serve a `require` user.
import sdk = require("@aiprod/sdk");

const client = new sdk.AiprodClient({ endpoint: "http://127.0.0.1:50051", apiKey: "aiprod_test_x" });
export const version: string = sdk.VERSION;
export const watch: AsyncGenerator<sdk.JobEvent, void, undefined> = client.watchJob("job_1");
