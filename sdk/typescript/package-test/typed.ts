// Type-checked (tsc --noEmit, strict, NodeNext) in the fresh project: the tarball's declarations
// serve an ESM TypeScript user.
import { AiprodClient, AiprodError, Code, JobState, type AttemptInfo } from "@aiprod/sdk";

const attempts: AttemptInfo[] = [];
const client = new AiprodClient({
  endpoint: "http://127.0.0.1:50051",
  apiKey: "aiprod_test_x",
  retry: { maxAttempts: 3 },
  onAttempt: (info) => attempts.push(info),
});
export async function firstDelivered(): Promise<string | undefined> {
  try {
    for await (const job of client.listJobs({ states: [JobState.DELIVERED] })) return job.jobId;
  } catch (e) {
    if (e instanceof AiprodError && e.code === Code.Unavailable) return undefined;
    throw e;
  }
  return undefined;
}
