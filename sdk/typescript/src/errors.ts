import { createRegistry, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  DebugInfoSchema,
  ErrorInfoSchema,
  HelpSchema,
  LocalizedMessageSchema,
  PreconditionFailureSchema,
  QuotaFailureSchema,
  RequestInfoSchema,
  ResourceInfoSchema,
  RetryInfoSchema,
  type BadRequest,
  type DebugInfo,
  type ErrorInfo,
  type Help,
  type LocalizedMessage,
  type PreconditionFailure,
  type QuotaFailure,
  type RequestInfo,
  type ResourceInfo,
  type RetryInfo,
} from "./gen/google/rpc/error_details_pb.js";

export { Code };

/** A google.rpc detail decoded from `grpc-status-details-bin`. */
export type ErrorDetail =
  | BadRequest
  | DebugInfo
  | ErrorInfo
  | Help
  | LocalizedMessage
  | PreconditionFailure
  | QuotaFailure
  | RequestInfo
  | ResourceInfo
  | RetryInfo;

/** One invalid field of a request (from google.rpc.BadRequest). */
export interface FieldViolation {
  /** Proto field path, e.g. "brief", "duration_s", "shots[0].duration_s". */
  field: string;
  /** Why the value is invalid. */
  description: string;
  /** Machine-readable reason, if the server sent one. */
  reason: string;
}

/** Why an operation is not allowed now (from google.rpc.PreconditionFailure). */
export interface PreconditionViolation {
  type: string;
  subject: string;
  description: string;
}

/** The resource an error is about (from google.rpc.ResourceInfo). */
export interface ResourceInfoDetail {
  resourceType: string;
  resourceName: string;
  owner: string;
  description: string;
}

/** A quota or limit that was hit (from google.rpc.QuotaFailure). */
export interface QuotaViolation {
  subject: string;
  description: string;
}

/** The machine-readable cause of an error (from google.rpc.ErrorInfo). */
export interface ErrorInfoDetail {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

const detailRegistry = createRegistry(
  BadRequestSchema,
  DebugInfoSchema,
  ErrorInfoSchema,
  HelpSchema,
  LocalizedMessageSchema,
  PreconditionFailureSchema,
  QuotaFailureSchema,
  RequestInfoSchema,
  ResourceInfoSchema,
  RetryInfoSchema,
);

/** Returns the gRPC name of a status code, e.g. Code.InvalidArgument → "INVALID_ARGUMENT". */
export function codeName(code: Code): string {
  const name = Code[code] as string | undefined;
  if (name === undefined) return `CODE_${code}`;
  if (code === Code.Canceled) return "CANCELLED";
  return name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

function isErrorDetail(m: Message): m is ErrorDetail {
  return detailRegistry.getMessage(m.$typeName) !== undefined;
}

/**
 * The error every AIPROD SDK call throws: the gRPC status code, the server's message and the
 * google.rpc rich error details as plain values.
 *
 * ```ts
 * try { await client.render.createJob({...}); }
 * catch (e) {
 *   if (e instanceof AiprodError && e.code === Code.InvalidArgument) {
 *     for (const v of e.fieldViolations) console.log(v.field, v.description);
 *   }
 * }
 * ```
 */
export class AiprodError extends Error {
  override name = "AiprodError";
  /** The gRPC status code (numeric values match gRPC's). */
  readonly code: Code;
  /** The code's gRPC name, e.g. "INVALID_ARGUMENT". */
  readonly codeName: string;
  /** The message the server sent, without the code prefix of `message`. */
  readonly rawMessage: string;
  /** Every google.rpc detail the server sent, decoded (unknown detail types are skipped). */
  readonly details: ErrorDetail[];
  /** Field violations of every BadRequest detail. */
  readonly fieldViolations: FieldViolation[];
  /** Violations of every PreconditionFailure detail. */
  readonly preconditionFailures: PreconditionViolation[];
  /** Violations of every QuotaFailure detail. */
  readonly quotaFailures: QuotaViolation[];
  /** The ErrorInfo detail, if any. */
  readonly errorInfo: ErrorInfoDetail | undefined;
  /** The ResourceInfo detail, if any. */
  readonly resourceInfo: ResourceInfoDetail | undefined;
  /** The server's RetryInfo.retry_delay in milliseconds, if any. */
  readonly retryDelayMs: number | undefined;
  /** Response headers and trailers of the failed call (empty for client-side errors). */
  readonly metadata: Headers;
  /** The underlying ConnectError (or other cause). */
  override readonly cause: unknown;

  constructor(
    code: Code,
    rawMessage: string,
    options: { details?: ErrorDetail[]; metadata?: ConstructorParameters<typeof Headers>[0]; cause?: unknown } = {},
  ) {
    super(rawMessage ? `${codeName(code)}: ${rawMessage}` : codeName(code));
    this.code = code;
    this.codeName = codeName(code);
    this.rawMessage = rawMessage;
    this.details = options.details ?? [];
    this.metadata = new Headers(options.metadata);
    this.cause = options.cause;
    const fieldViolations: FieldViolation[] = [];
    const preconditionFailures: PreconditionViolation[] = [];
    const quotaFailures: QuotaViolation[] = [];
    let errorInfo: ErrorInfoDetail | undefined;
    let resourceInfo: ResourceInfoDetail | undefined;
    let retryDelayMs: number | undefined;
    for (const d of this.details) {
      switch (d.$typeName) {
        case "google.rpc.BadRequest":
          for (const v of d.fieldViolations) {
            fieldViolations.push({ field: v.field, description: v.description, reason: v.reason });
          }
          break;
        case "google.rpc.PreconditionFailure":
          for (const v of d.violations) {
            preconditionFailures.push({ type: v.type, subject: v.subject, description: v.description });
          }
          break;
        case "google.rpc.QuotaFailure":
          for (const v of d.violations) {
            quotaFailures.push({ subject: v.subject, description: v.description });
          }
          break;
        case "google.rpc.ErrorInfo":
          errorInfo ??= { reason: d.reason, domain: d.domain, metadata: { ...d.metadata } };
          break;
        case "google.rpc.ResourceInfo":
          resourceInfo ??= {
            resourceType: d.resourceType,
            resourceName: d.resourceName,
            owner: d.owner,
            description: d.description,
          };
          break;
        case "google.rpc.RetryInfo":
          if (d.retryDelay && retryDelayMs === undefined) {
            retryDelayMs = Number(d.retryDelay.seconds) * 1000 + Math.ceil(d.retryDelay.nanos / 1e6) // a floor for the wait: round up;
          }
          break;
        default:
          break;
      }
    }
    this.fieldViolations = fieldViolations;
    this.preconditionFailures = preconditionFailures;
    this.quotaFailures = quotaFailures;
    this.errorInfo = errorInfo;
    this.resourceInfo = resourceInfo;
    this.retryDelayMs = retryDelayMs;
  }

  /** The fields named by the field violations, e.g. ["brief", "duration_s"]. */
  get violatedFields(): string[] {
    return this.fieldViolations.map((v) => v.field);
  }

  /**
   * Whether trying again later may succeed: UNAVAILABLE, DEADLINE_EXCEEDED, and RESOURCE_EXHAUSTED
   * carrying RetryInfo (rate limited; without RetryInfo a quota is used up). The SDK already
   * retried what was safe to retry within the call's deadline and attempt budget.
   */
  get retryable(): boolean {
    return (
      this.code === Code.Unavailable ||
      this.code === Code.DeadlineExceeded ||
      (this.code === Code.ResourceExhausted && this.retryDelayMs !== undefined)
    );
  }

  /** Same as {@link retryable}, as a method (the name the other AIPROD SDKs use). */
  isTransient(): boolean {
    return this.retryable;
  }

  /** True when the underlying error came from the transport (connection loss, reset), not the server. */
  get isTransportError(): boolean {
    return this.cause instanceof ConnectError && !this.metadata.has("grpc-status");
  }

  /**
   * Converts anything thrown by a call into an AiprodError: a ConnectError keeps its code,
   * message, metadata and decoded details; an AiprodError is returned as is; anything else
   * becomes UNKNOWN (CANCELLED for an AbortError, DEADLINE_EXCEEDED for a TimeoutError).
   */
  static from(reason: unknown): AiprodError {
    if (reason instanceof AiprodError) return reason;
    if (reason instanceof ConnectError) {
      let details: ErrorDetail[] = [];
      try {
        details = reason.findDetails(detailRegistry).filter(isErrorDetail);
      } catch {
        details = [];
      }
      return new AiprodError(reason.code, reason.rawMessage, {
        details,
        metadata: reason.metadata,
        cause: reason,
      });
    }
    if (reason instanceof Error && reason.name === "AbortError") {
      return new AiprodError(Code.Canceled, reason.message, { cause: reason });
    }
    if (reason instanceof Error && reason.name === "TimeoutError") {
      return new AiprodError(Code.DeadlineExceeded, reason.message, { cause: reason });
    }
    const ce = ConnectError.from(reason);
    return new AiprodError(ce.code, ce.rawMessage, { metadata: ce.metadata, cause: reason });
  }
}
