import type { DescService, MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createClient,
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
  /** Extra interceptors, run after the SDK's authorization interceptor. */
  interceptors?: Interceptor[];
  /** Node HTTP/2 session options, e.g. TLS `ca`/`cert`/`key` for https endpoints. */
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

function withDeadline(options: CallOptions | undefined, defaultTimeoutMs: number | undefined): CallOptions {
  const timeoutMs = options?.timeoutMs ?? defaultTimeoutMs;
  const out: CallOptions = { ...options };
  if (timeoutMs === undefined || timeoutMs <= 0 || !Number.isFinite(timeoutMs)) {
    delete out.timeoutMs;
  } else {
    out.timeoutMs = timeoutMs;
  }
  return out;
}

async function* convertStreamErrors<T>(stream: AsyncIterable<T>): AsyncGenerator<T, void, undefined> {
  try {
    yield* stream;
  } catch (e) {
    throw AiprodError.from(e);
  }
}

/**
 * Creates a client of one service whose calls throw {@link AiprodError} and whose unary calls have
 * the default deadline.
 */
function wrapService<T extends DescService>(
  service: T,
  transport: Transport,
  defaultTimeoutMs: number | undefined,
): Client<T> {
  const raw = createClient(service, transport) as unknown as Record<string, AnyFn>;
  const wrapped: Record<string, AnyFn> = {};
  for (const method of service.methods) {
    const call = raw[method.localName];
    if (call === undefined) continue;
    switch (method.methodKind) {
      case "unary":
        wrapped[method.localName] = async (request: unknown, options?: CallOptions): Promise<unknown> => {
          try {
            return await call(request, withDeadline(options, defaultTimeoutMs));
          } catch (e) {
            throw AiprodError.from(e);
          }
        };
        break;
      case "server_streaming":
        wrapped[method.localName] = (request: unknown, options?: CallOptions) =>
          convertStreamErrors(call(request, withDeadline(options, undefined)) as AsyncIterable<unknown>);
        break;
      default:
        wrapped[method.localName] = call;
    }
  }
  return wrapped as Client<T>;
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
    const interceptors = [auth, ...(options.interceptors ?? [])];
    if (options.transport !== undefined) {
      this.sessionManager = undefined;
      this.transport = options.transport(interceptors);
    } else {
      this.sessionManager = new Http2SessionManager(
        endpoint,
        { pingIntervalMs: 30_000, pingTimeoutMs: 15_000, idleConnectionTimeoutMs: 5 * 60_000 },
        options.nodeOptions,
      );
      this.transport = createGrpcTransport({
        baseUrl: endpoint,
        interceptors,
        sessionManager: this.sessionManager,
      });
    }
    const transport = this.transport;
    this.presets = wrapService(PresetService, transport, defaultTimeoutMs);
    this.costs = wrapService(CostEstimatorService, transport, defaultTimeoutMs);
    this.render = wrapService(RenderService, transport, defaultTimeoutMs);
    this.icc = wrapService(IccService, transport, defaultTimeoutMs);
    this.admin = wrapService(AdminService, transport, defaultTimeoutMs);
    this.bytestream = wrapService(ByteStream, transport, defaultTimeoutMs);
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
    const open: OpenWatchStream = (request, signal) => this.render.watchJob(request, { signal });
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
