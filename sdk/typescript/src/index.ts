/**
 * @aiprod/sdk: the TypeScript SDK of the AIPROD video production API (package aiprod.v1).
 *
 * Start with {@link AiprodClient}; every message, enum and service of aiprod.v1 is re-exported, and
 * google.bytestream as `ByteStream` / `googleBytestream`.
 */
export { AiprodClient, DEFAULT_TIMEOUT_MS, type AiprodClientOptions, type AiprodCallOptions } from "./client.js";
export { attemptKey, backoffMs, DEFAULT_RETRY, isRepeatable, shouldRetry, type AttemptInfo, type RetryOptions } from "./retry.js";
export { USER_AGENT, VERSION } from "./version.js";
export {
  AiprodError,
  Code,
  codeName,
  type ErrorDetail,
  type ErrorInfoDetail,
  type FieldViolation,
  type PreconditionViolation,
  type QuotaViolation,
  type ResourceInfoDetail,
} from "./errors.js";
export {
  isResumableError,
  isTerminalState,
  watchJobEvents,
  type CheckFinished,
  type OpenWatchStream,
  type ReconnectInfo,
  type WatchJobOptions,
} from "./watch.js";
export {
  ArtifactNotAvailableError,
  downloadArtifact,
  isRetryableReadError,
  pinnedResourceName,
  readResourceChunks,
  type DownloadOptions,
  type DownloadProgress,
  type FetchArtifact,
  type OpenReadStream,
  type ReadResourceOptions,
  type ReadRetryInfo,
  type ReadRetryOptions,
} from "./download.js";
export { paginateItems, paginatePages, type Page } from "./pagination.js";
export { create, fromBinary, toBinary, toJson, fromJson, type MessageInitShape } from "@bufbuild/protobuf";
export { ConnectError, type CallOptions, type Interceptor } from "@connectrpc/connect";
export * from "./gen/aiprod/v1/common_pb.js";
export * from "./gen/aiprod/v1/preset_pb.js";
export * from "./gen/aiprod/v1/manifest_pb.js";
export * from "./gen/aiprod/v1/job_pb.js";
export * from "./gen/aiprod/v1/preset_service_pb.js";
export * from "./gen/aiprod/v1/cost_estimator_service_pb.js";
export * from "./gen/aiprod/v1/render_service_pb.js";
export * from "./gen/aiprod/v1/icc_service_pb.js";
export * from "./gen/aiprod/v1/admin_service_pb.js";
export * as googleRpc from "./gen/google/rpc/error_details_pb.js";
export * as googleBytestream from "./gen/google/bytestream/bytestream_pb.js";
export { ByteStream } from "./gen/google/bytestream/bytestream_pb.js";
