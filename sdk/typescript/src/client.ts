import type { DescService, MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createClient,
  createContextValues,
  type CallOptions,
  type Client,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type * as http2 from "node:http2";
import {
  downloadArtifact,
  readResourceChunks,
  shotClipOf,
  videoOf,
  type DownloadOptions,
  type OpenReadStream,
  type ReadResourceOptions,
} from "./download.js";
import { AiprodError } from "./errors.js";
import {
  attemptKey,
  backoffMs,
  DEFAULT_RETRY,
  shouldRetry,
  sleep,
  type AttemptInfo,
  type RetryOptions,
} from "./retry.js";
import { USER_AGENT } from "./version.js";
import {
  AdminService,
  type ListTenantsRequestSchema,
  type ListTenantsResponse,
  type Tenant,
} from "./gen/aiprod/v1/admin_service_pb.js";
import { CostEstimatorService } from "./gen/aiprod/v1/cost_estimator_service_pb.js";
import { IccService } from "./gen/aiprod/v1/icc_service_pb.js";
import type { Job, JobEvent, VideoArtifact } from "./gen/aiprod/v1/job_pb.js";
import { PresetService } from "./gen/aiprod/v1/preset_service_pb.js";
import {
  RenderService,
  type ListJobsRequestSchema,
  type ListJobsResponse,
} from "./gen/aiprod/v1/render_service_pb.js";
import { ByteStream } from "./gen/google/bytestream/bytestream_pb.js";
import { paginateItems, paginatePages } from "./pagination.js";
import {
  isTerminalState,
  watchJobEvents,
  type CheckFinished,
  type OpenWatchStream,
  type WatchJobOptions,
} from "./watch.js";

/** The default deadline of unary calls: 30 s. */
export const DEFAULT_TIMEOUT_MS = 30_000;

/** Options of {@link AiprodClient}. */
export interface AiprodClientOptions {
  /** Base URL of the server, e.g. "http://127.0.0.1:50051" (h2c) or "https://api.example.com" (TLS). */
  endpoint: string;
  /** Tenant API key ("aiprod_live_…" / "aiprod_test_…"), sent as `authorization: Bearer <key>`. */
  apiKey?: string;
  /** Operator token, sent as the bearer of AdminService calls instead of the API key. */
  adminToken?: string;
  /**
   * Deadline of every unary call in ms (default 30 000); a call's own `timeoutMs` overrides it.
   * 0 or Infinity disables it. Streams (WatchJob) have no default deadline.
   */
  defaultTimeoutMs?: number;
  /**
   * Extra Connect interceptors, run after the SDK's own (authorization, user-agent, hook). They see
   * every attempt: `req.contextValues.get(attemptKey)` is its number (1, 2, …).
   */
  interceptors?: Interceptor[];
  /**
   * The logging hook: called after every attempt of every call (unary attempts, and each WatchJob
   * or ByteStream stream when it ends) with the method, attempt number, code and duration.
   * It must not throw.
   */
  onAttempt?: (info: AttemptInfo) => void;
  /**
   * The retry policy of unary calls (default: 5 attempts, backoff 100 ms doubling up to 5 s with
   * full jitter). Always bounded by the call's deadline.
   */
  retry?: RetryOptions;
  /**
   * PEM certificate(s) of the CA(s) to trust for an `https://` endpoint instead of the default
   * roots (Node's bundled Mozilla roots plus NODE_EXTRA_CA_CERTS, or the OS store with
   * `--use-system-ca`).
   */
  caPem?: string | Buffer;
  /** Node HTTP/2 session options, e.g. TLS `cert`/`key` for mTLS, `servername`. */
  nodeOptions?: http2.ClientSessionOptions | http2.SecureClientSessionOptions;
  /** Default reconnect policy of {@link AiprodClient.watchJob}. */
  watch?: Omit<WatchJobOptions, "afterSequence" | "signal">;
  /**
   * Builds the transport instead of the SDK's gRPC (HTTP/2) one, e.g. Connect's in-memory
   * `createRouterTransport` in tests or a gRPC-web transport. It must apply the given interceptors
   * (they carry the authorization header).
   */
  transport?: (interceptors: Interceptor[]) => Transport;
}

/** Call options of every SDK method: Connect's, where `timeoutMs` ≤ 0 or Infinity means no deadline. */
export type AiprodCallOptions = CallOptions;

type ListJobsInit = MessageInitShape<typeof ListJobsRequestSchema>;
type ListTenantsInit = MessageInitShape<typeof ListTenantsRequestSchema>;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyFn = (...args: any[]) => any;

/** The deadline of a call in ms: its own `timeoutMs`, else the default; undefined when none. */
function timeoutOf(options: CallOptions | undefined, defaultTimeoutMs: number | undefined): number | undefined {
  const timeoutMs = options?.timeoutMs ?? defaultTimeoutMs;
  return timeoutMs === undefined || timeoutMs <= 0 || !Number.isFinite(timeoutMs) ? undefined : timeoutMs;
}

function withAttempt(options: CallOptions | undefined, attempt: number, timeoutMs: number | undefined): CallOptions {
  const out: CallOptions = { ...options };
  if (timeoutMs === undefined) delete out.timeoutMs;
  else out.timeoutMs = timeoutMs;
  out.contextValues = (options?.contextValues ?? createContextValues()).set(attemptKey, attempt);
  return out;
}

function deadlineExceeded(timeoutMs: number, last: AiprodError | undefined): AiprodError {
  const why = last === undefined ? "" : ` (last attempt: ${last.message})`;
  return new AiprodError(Code.DeadlineExceeded, `deadline of ${timeoutMs} ms exceeded${why}`, { cause: last });
}

/**
 * One unary call with the SDK's retry policy (sdk/PRODUCTION.md): retries UNAVAILABLE for
 * repeatable methods and RESOURCE_EXHAUSTED with RetryInfo for any, with full-jitter backoff,
 * within `maxAttempts` and the call's deadline, which bounds every attempt and every wait.
 */
async function callWithRetry(
  call: AnyFn,
  methodName: string,
  request: unknown,
  options: CallOptions | undefined,
  defaultTimeoutMs: number | undefined,
  policy: Required<RetryOptions>,
): Promise<unknown> {
  const timeoutMs = timeoutOf(options, defaultTimeoutMs);
  const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
  const signal = options?.signal;
  let last: AiprodError | undefined;
  for (let attempt = 1; ; attempt++) {
    const remaining = deadline === undefined ? undefined : Math.ceil(deadline - Date.now());
    if (remaining !== undefined && remaining <= 0) throw deadlineExceeded(timeoutMs!, last);
    try {
      return await call(request, withAttempt(options, attempt, remaining));
    } catch (e) {
      last = AiprodError.from(e);
    }
    if (signal?.aborted || attempt >= policy.maxAttempts || !shouldRetry(methodName, last)) throw last;
    const wait = backoffMs(attempt, policy, last.retryDelayMs);
    // A wait that would end past the deadline cannot help: report the failure now.
    if (deadline !== undefined && Date.now() + wait >= deadline) throw last;
    try {
      await sleep(wait, signal);
    } catch {
      throw AiprodError.from(signal?.reason ?? last);
    }
  }
}

async function* convertStreamErrors<T>(stream: AsyncIterable<T>): AsyncGenerator<T, void, undefined> {
  try {
    yield* stream;
  } catch (e) {
    throw AiprodError.from(e);
  }
}

/**
 * Creates a client of one service whose calls throw {@link AiprodError}, whose unary calls have
 * the default deadline and are retried by the SDK's policy. CreateJob gets a random request_id
 * when the caller left it empty, before the first attempt, so every retry carries the same one.
 */
function wrapService<T extends DescService>(
  service: T,
  transport: Transport,
  defaultTimeoutMs: number | undefined,
  policy: Required<RetryOptions>,
): Client<T> {
  const raw = createClient(service, transport) as unknown as Record<string, AnyFn>;
  const wrapped: Record<string, AnyFn> = {};
  for (const method of service.methods) {
    const call = raw[method.localName];
    if (call === undefined) continue;
    switch (method.methodKind) {
      case "unary": {
        const fillRequestId = service.typeName === RenderService.typeName && method.name === "CreateJob";
        wrapped[method.localName] = (request: Record<string, unknown> | undefined, options?: CallOptions) => {
          if (fillRequestId && !request?.["requestId"]) request = { ...request, requestId: globalThis.crypto.randomUUID() };
          return callWithRetry(call, method.name, request, options, defaultTimeoutMs, policy);
        };
        break;
      }
      case "server_streaming":
        wrapped[method.localName] = (request: unknown, options?: CallOptions) =>
          convertStreamErrors(call(request, withAttempt(options, options?.contextValues?.get(attemptKey) ?? 1, timeoutOf(options, undefined))) as AsyncIterable<unknown>);
        break;
      default:
        wrapped[method.localName] = call;
    }
  }
  return wrapped as Client<T>;
}

/** The interceptor behind {@link AiprodClientOptions.onAttempt}: times every attempt and reports its outcome. */
function attemptHook(onAttempt: (info: AttemptInfo) => void): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const report = (error: unknown): void => {
      const err = error === undefined ? undefined : AiprodError.from(error);
      onAttempt({
        service: req.service.typeName,
        method: req.method.name,
        attempt: req.contextValues.get(attemptKey),
        code: err?.codeName ?? "OK",
        durationMs: performance.now() - started,
        ...(err === undefined ? {} : { error: err }),
      });
    };
    let res;
    try {
      res = await next(req);
    } catch (e) {
      report(e);
      throw e;
    }
    if (!res.stream) {
      report(undefined);
      return res;
    }
    // A stream's outcome is known when its messages end or fail. Connect does not pass on the
    // reader's return(): a stream the caller stops reading ends by its signal (reported CANCELLED).
    let done = false;
    const onAbort = (): void => {
      if (done) return;
      done = true;
      report(req.signal.reason ?? new ConnectError("the caller stopped reading the stream", Code.Canceled));
    };
    req.signal.addEventListener("abort", onAbort, { once: true });
    const messages = res.message;
    return {
      ...res,
      message: (async function* () {
        try {
          yield* messages;
        } catch (e) {
          if (!done) {
            done = true;
            report(e);
          }
          throw e;
        } finally {
          req.signal.removeEventListener("abort", onAbort);
          if (!done) {
            done = true;
            report(undefined);
          }
        }
      })(),
    };
  };
}

/**
 * The AIPROD client: typed access to every service, plus helpers for streaming and pagination.
 *
 * ```ts
 * const client = new AiprodClient({ endpoint: "http://127.0.0.1:50051", apiKey: process.env.AIPROD_API_KEY });
 * const { presets } = await client.presets.listPresets({});
 * ```
 *
 * Every call throws {@link AiprodError}. Unary calls have a 30 s deadline unless told otherwise.
 */
export class AiprodClient {
  /** PresetService: the presets a partner can pick from. */
  readonly presets: Client<typeof PresetService>;
  /** CostEstimatorService: quotes before a job, certified costs after it. */
  readonly costs: Client<typeof CostEstimatorService>;
  /** RenderService: create, get, list, cancel and watch jobs. */
  readonly render: Client<typeof RenderService>;
  /** IccService: review, edit and approve manifests; final review; brand markers. */
  readonly icc: Client<typeof IccService>;
  /** AdminService: tenants and API keys (authorized by the admin token). */
  readonly admin: Client<typeof AdminService>;
  /** google.bytestream.ByteStream: the raw Read stream of videos, clips and posters (see {@link readResource}). */
  readonly bytestream: Client<typeof ByteStream>;
  /** The transport every call goes through. */
  readonly transport: Transport;

  private readonly sessionManager: Http2SessionManager | undefined;
  private readonly watchDefaults: Omit<WatchJobOptions, "afterSequence" | "signal">;

  constructor(options: AiprodClientOptions) {
    const { endpoint, apiKey, adminToken } = options;
    const defaultTimeoutMs = options.defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    const auth: Interceptor = (next) => async (req) => {
      const token = req.service.typeName === AdminService.typeName ? adminToken : apiKey;
      if (token !== undefined && token !== "" && !req.header.has("authorization")) {
        req.header.set("authorization", `Bearer ${token}`);
      }
      return next(req);
    };
    // The SDK's name and version first, then the transport's own ("connect-es/…").
    const userAgent: Interceptor = (next) => (req) => {
      const own = req.header.get("user-agent");
      req.header.set("user-agent", own ? `${USER_AGENT} ${own}` : USER_AGENT);
      return next(req);
    };
    const interceptors = [auth, userAgent];
    if (options.onAttempt !== undefined) interceptors.push(attemptHook(options.onAttempt));
    interceptors.push(...(options.interceptors ?? []));
    const nodeOptions = options.caPem === undefined ? options.nodeOptions : { ...options.nodeOptions, ca: options.caPem };
    if (options.transport !== undefined) {
      this.sessionManager = undefined;
      this.transport = options.transport(interceptors);
    } else {
      this.sessionManager = new Http2SessionManager(
        endpoint,
        // Keepalive: a PING every 30 s while calls are open; no answer within 10 s drops the connection.
        { pingIntervalMs: 30_000, pingTimeoutMs: 10_000, idleConnectionTimeoutMs: 5 * 60_000 },
        nodeOptions,
      );
      this.transport = createGrpcTransport({
        baseUrl: endpoint,
        interceptors,
        sessionManager: this.sessionManager,
      });
    }
    const transport = this.transport;
    const policy = { ...DEFAULT_RETRY, ...options.retry };
    this.presets = wrapService(PresetService, transport, defaultTimeoutMs, policy);
    this.costs = wrapService(CostEstimatorService, transport, defaultTimeoutMs, policy);
    this.render = wrapService(RenderService, transport, defaultTimeoutMs, policy);
    this.icc = wrapService(IccService, transport, defaultTimeoutMs, policy);
    this.admin = wrapService(AdminService, transport, defaultTimeoutMs, policy);
    this.bytestream = wrapService(ByteStream, transport, defaultTimeoutMs, policy);
    this.watchDefaults = options.watch ?? {};
  }

  /**
   * Streams a job's events after `afterSequence` (default 0: from the start) until the terminal
   * event (DELIVERED, CANCELLED, FAILED), reconnecting transparently after UNAVAILABLE, connection
   * loss or a stream reset and resuming after the last event yielded: no event is skipped or
   * yielded twice. Gives up after `maxRetries` consecutive failures and throws the last error.
   *
   * ```ts
   * for await (const event of client.watchJob(jobId)) console.log(event.sequence, JobState[event.state]);
   * ```
   */
  watchJob(jobId: string, options: WatchJobOptions = {}): AsyncGenerator<JobEvent, void, undefined> {
    const open: OpenWatchStream = (request, signal, attempt) =>
      this.render.watchJob(request, { signal, contextValues: createContextValues().set(attemptKey, attempt) });
    const checkFinished: CheckFinished = async (id, afterSequence) => {
      const { job } = await this.render.getJob({ jobId: id });
      return job !== undefined && isTerminalState(job.state) && job.lastSequence <= afterSequence;
    };
    return watchJobEvents(open, jobId, { ...this.watchDefaults, ...options }, checkFinished);
  }

  /**
   * Downloads the job's video (the final cut, `Job.video`) to `path` and returns its metadata.
   *
   * Reads `video.resource_name@sha256` (the version GetJob returned) into `path + ".part"`, hashing
   * as it writes; after UNAVAILABLE, a dropped connection, a reset stream or RESOURCE_EXHAUSTED
   * with a retry delay it waits (exponential back-off) and resumes at the bytes already written
   * (giving up after `maxRetries` failures in a row without progress). If a revision replaced the
   * file meanwhile (FAILED_PRECONDITION) it starts over once from a fresh GetJob. At the end it
   * checks the size and SHA-256 against the artifact (DATA_LOSS on a mismatch), fsyncs and renames
   * the file onto `path`. On failure the `.part` file is removed and `path` is left untouched. The
   * file is streamed to disk: memory use does not grow with its size.
   *
   * Throws {@link ArtifactNotAvailableError} (FAILED_PRECONDITION, with the job's state) when the
   * video is not assembled yet.
   *
   * ```ts
   * const video = await client.downloadVideo(jobId, "video.mp4");
   * console.log(video.sizeBytes, video.sha256);
   * ```
   */
  downloadVideo(jobId: string, path: string, options: DownloadOptions = {}): Promise<VideoArtifact> {
    return downloadArtifact(
      async (signal) => videoOf(await this.getJobForDownload(jobId, signal)),
      this.openRead,
      path,
      options,
    );
  }

  /**
   * Downloads the clip of one shot (`Job.shots[i].clip`, readable as soon as the shot renders) to
   * `path`, exactly like {@link downloadVideo}. Throws {@link ArtifactNotAvailableError} while the
   * shot has no clip, and NOT_FOUND if the job has no such shot.
   */
  downloadShotClip(jobId: string, shotId: string, path: string, options: DownloadOptions = {}): Promise<VideoArtifact> {
    return downloadArtifact(
      async (signal) => shotClipOf(await this.getJobForDownload(jobId, signal), shotId),
      this.openRead,
      path,
      options,
    );
  }

  /**
   * Yields the bytes of a ByteStream resource (`VideoArtifact.resource_name`, a poster, … with an
   * optional "@sha256" pin) from `readOffset` on, in the chunks the server sends (256 KiB).
   * Transient failures are retried and the read resumes at the first byte not yet yielded, so the
   * chunks concatenate to exactly the resource's bytes. Breaking out of the loop cancels the read.
   *
   * ```ts
   * for await (const chunk of client.readResource(job.video!.posterResourceName)) out.write(chunk);
   * ```
   */
  readResource(resourceName: string, options: ReadResourceOptions = {}): AsyncGenerator<Uint8Array, void, undefined> {
    return readResourceChunks(this.openRead, resourceName, options);
  }

  private readonly openRead: OpenReadStream = (request, signal) => this.bytestream.read(request, { signal });

  private async getJobForDownload(jobId: string, signal: AbortSignal | undefined): Promise<Job> {
    const { job } = await this.render.getJob({ jobId }, signal === undefined ? {} : { signal });
    if (job === undefined) throw new AiprodError(Code.Internal, `GetJob(${jobId}) returned no job`);
    return job;
  }

  /** Every job matching the request's filters, newest first, following next_page_token. */
  listJobs(request: ListJobsInit = {}, options?: CallOptions): AsyncGenerator<Job, void, undefined> {
    return paginateItems(
      (pageToken) => this.render.listJobs({ ...request, pageToken }, options),
      (page) => page.jobs,
      request.pageToken ?? "",
    );
  }

  /** Every page of ListJobs, following next_page_token. */
  listJobPages(request: ListJobsInit = {}, options?: CallOptions): AsyncGenerator<ListJobsResponse, void, undefined> {
    return paginatePages((pageToken) => this.render.listJobs({ ...request, pageToken }, options), request.pageToken ?? "");
  }

  /** Every tenant, oldest first, following next_page_token (admin token required). */
  listTenants(request: ListTenantsInit = {}, options?: CallOptions): AsyncGenerator<Tenant, void, undefined> {
    return paginateItems(
      (pageToken) => this.admin.listTenants({ ...request, pageToken }, options),
      (page) => page.tenants,
      request.pageToken ?? "",
    );
  }

  /** Every page of ListTenants, following next_page_token. */
  listTenantPages(
    request: ListTenantsInit = {},
    options?: CallOptions,
  ): AsyncGenerator<ListTenantsResponse, void, undefined> {
    return paginatePages((pageToken) => this.admin.listTenants({ ...request, pageToken }, options), request.pageToken ?? "");
  }

  /**
   * Drops the current HTTP/2 connection: calls in flight fail with UNAVAILABLE (watchJob resumes
   * on its own), and the next call opens a new connection. Useful after a network change.
   */
  resetConnection(): void {
    this.sessionManager?.abort(new ConnectError("connection reset by the client", Code.Unavailable));
  }

  /** Closes the connection; calls in flight fail with CANCELLED. The client may still be used afterwards. */
  close(): void {
    this.sessionManager?.abort(new ConnectError("client closed", Code.Canceled));
  }
}
