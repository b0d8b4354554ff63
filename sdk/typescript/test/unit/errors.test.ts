import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { AiprodError, codeName, googleRpc } from "@aiprod/sdk";

/** Encodes an error the way the server does (grpc-status-details-bin) and decodes it the way the client does. */
function overTheWire(error: ConnectError): ConnectError {
  const trailers = setTrailerStatus(new Headers(), error);
  const decoded = findTrailerError(trailers);
  assert.ok(decoded, "trailers carry an error");
  return decoded;
}

describe("AiprodError.from", () => {
  it("exposes code, message and BadRequest field violations decoded from grpc-status-details-bin", () => {
    const wire = overTheWire(
      new ConnectError("invalid CreateJob request", Code.InvalidArgument, undefined, [
        {
          desc: googleRpc.BadRequestSchema,
          value: {
            fieldViolations: [
              { field: "brief", description: "must be 10-10000 characters" },
              { field: "duration_s", description: "must be 5-300", reason: "OUT_OF_RANGE" },
              { field: "request_id", description: "required" },
            ],
          },
        },
      ]),
    );
    const err = AiprodError.from(wire);
    assert.ok(err instanceof AiprodError);
    assert.ok(err instanceof Error);
    assert.equal(err.code, Code.InvalidArgument);
    assert.equal(err.codeName, "INVALID_ARGUMENT");
    assert.equal(err.rawMessage, "invalid CreateJob request");
    assert.equal(err.message, "INVALID_ARGUMENT: invalid CreateJob request");
    assert.deepEqual(err.violatedFields, ["brief", "duration_s", "request_id"]);
    assert.deepEqual(err.fieldViolations[1], { field: "duration_s", description: "must be 5-300", reason: "OUT_OF_RANGE" });
    assert.equal(err.details.length, 1);
    assert.equal(err.details[0]?.$typeName, "google.rpc.BadRequest");
    assert.equal(err.metadata.get("grpc-status"), "3");
    assert.equal(err.isTransportError, false);
    assert.equal(err.cause, wire);
  });

  it("decodes ErrorInfo, PreconditionFailure, QuotaFailure and RetryInfo", () => {
    const wire = overTheWire(
      new ConnectError("too many jobs", Code.ResourceExhausted, undefined, [
        { desc: googleRpc.ErrorInfoSchema, value: { reason: "CONCURRENT_JOBS", domain: "aiprod.dev", metadata: { limit: "2" } } },
        { desc: googleRpc.QuotaFailureSchema, value: { violations: [{ subject: "tenant:ten_1", description: "2 concurrent jobs" }] } },
        { desc: googleRpc.PreconditionFailureSchema, value: { violations: [{ type: "STATE", subject: "job_1", description: "not AWAITING_APPROVAL" }] } },
        { desc: googleRpc.RetryInfoSchema, value: { retryDelay: create(DurationSchema, { seconds: 2n, nanos: 500_000_000 }) } },
      ]),
    );
    const err = AiprodError.from(wire);
    assert.equal(err.codeName, "RESOURCE_EXHAUSTED");
    assert.deepEqual(err.errorInfo, { reason: "CONCURRENT_JOBS", domain: "aiprod.dev", metadata: { limit: "2" } });
    assert.deepEqual(err.quotaFailures, [{ subject: "tenant:ten_1", description: "2 concurrent jobs" }]);
    assert.deepEqual(err.preconditionFailures, [{ type: "STATE", subject: "job_1", description: "not AWAITING_APPROVAL" }]);
    assert.equal(err.retryDelayMs, 2500);
    assert.deepEqual(err.fieldViolations, []);
    assert.equal(err.details.length, 4);
  });

  it("keeps a plain status without details", () => {
    const err = AiprodError.from(overTheWire(new ConnectError("job not found", Code.NotFound)));
    assert.equal(err.code, Code.NotFound);
    assert.equal(err.codeName, "NOT_FOUND");
    assert.deepEqual(err.details, []);
    assert.equal(err.errorInfo, undefined);
    assert.equal(err.retryDelayMs, undefined);
  });

  it("marks client-side (transport) errors", () => {
    const err = AiprodError.from(new ConnectError("http/2 stream closed with error code CANCEL (0x8)", Code.Canceled));
    assert.equal(err.isTransportError, true);
    assert.equal(err.codeName, "CANCELLED");
  });

  it("returns an AiprodError unchanged and wraps foreign errors", () => {
    const original = new AiprodError(Code.Aborted, "stale etag");
    assert.equal(AiprodError.from(original), original);
    const foreign = AiprodError.from(new TypeError("boom"));
    assert.equal(foreign.code, Code.Unknown);
    assert.ok(foreign.cause instanceof TypeError);
    const abort = new Error("aborted");
    abort.name = "AbortError";
    assert.equal(AiprodError.from(abort).code, Code.Canceled);
  });

  it("names every code like gRPC does", () => {
    assert.equal(codeName(Code.FailedPrecondition), "FAILED_PRECONDITION");
    assert.equal(codeName(Code.DeadlineExceeded), "DEADLINE_EXCEEDED");
    assert.equal(codeName(Code.Unauthenticated), "UNAUTHENTICATED");
    assert.equal(codeName(Code.DataLoss), "DATA_LOSS");
  });
});
