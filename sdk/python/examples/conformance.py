"""AIPROD conformance scenario for the Python SDK (also the README's quickstart).

Runs against a real server: reads AIPROD_ENDPOINT, AIPROD_API_KEY and AIPROD_OTHER_API_KEY from the
environment, or from the env file written by ``scripts/test-server.sh`` (path as the first argument
or in AIPROD_ENV_FILE). Exits non-zero on the first failed check.

    python examples/conformance.py /tmp/aiprod-server/env
"""

from __future__ import annotations

import os
import sys
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask

import aiprod
from aiprod.testing import DropProxy
from aiprod.v1 import (
    JOB_STATE_AWAITING_APPROVAL,
    JOB_STATE_DELIVERED,
    JOB_STATE_PLANNING,
    JOB_STATE_QUALITY_CHECK,
    JOB_STATE_QUEUED,
    JOB_STATE_RENDERING,
    JobEvent,
    JobState,
    Manifest,
)

BRIEF = "A 60-second spot for the acme-shoes spring line: runners at dawn, close-ups of the new sole."


def quickstart() -> None:
    # [START quickstart]
    import os
    import uuid

    import aiprod
    from aiprod.v1 import JOB_STATE_AWAITING_APPROVAL, JobState

    client = aiprod.Client(os.environ["AIPROD_ENDPOINT"], os.environ["AIPROD_API_KEY"])

    estimate = client.cost_estimator.estimate_cost(preset_id="brand_campaign", duration_s=60)
    print(f"quote ${estimate.recommended.total_micros / 1e6:.2f}, at most ${estimate.recommended.guaranteed_max_micros / 1e6:.2f}")

    job = client.render.create_job(
        request_id=str(uuid.uuid4()),  # idempotency key: retrying with it never creates a second job
        preset_id="brand_campaign",
        brief="A 60-second spot for the acme-shoes spring line: runners at dawn.",
        duration_s=60,
    ).job

    approved = False
    for event in client.watch_job(job.job_id):  # resumes by itself if the connection drops
        print(event.sequence, JobState.Name(event.state))
        if event.state == JOB_STATE_AWAITING_APPROVAL and not approved:
            manifest = client.icc.get_manifest(job_id=job.job_id).manifest
            client.icc.approve_manifest(job_id=job.job_id, etag=manifest.etag)
            approved = True

    report = client.cost_estimator.get_job_costs(job_id=job.job_id).report
    print(f"billed ${report.billed_micros / 1e6:.2f} (guaranteed max ${report.guaranteed_max_micros / 1e6:.2f})")
    client.close()
    # [END quickstart]


class CheckFailed(Exception):
    pass


def check(ok: bool, what: str) -> None:
    if not ok:
        raise CheckFailed(what)


def expect_error(code: aiprod.StatusCode, fn: Callable[..., Any], **kwargs: Any) -> aiprod.AiprodError:
    try:
        fn(**kwargs)
    except aiprod.AiprodError as err:
        check(err.code == code, f"expected {code.name}, got {err.code.name}: {err.message}")
        return err
    raise CheckFailed(f"expected {code.name}, the call succeeded")


def load_env() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AIPROD_ENV_FILE")
    if not path:
        return
    with open(path) as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                os.environ[key] = value


def scenario() -> str:
    endpoint, key = os.environ["AIPROD_ENDPOINT"], os.environ["AIPROD_API_KEY"]
    events: list[JobEvent] = []
    # Calls go through a loopback relay so that step 7 can cut the TCP connection mid-stream.
    with DropProxy(endpoint) as proxy, aiprod.Client(proxy.endpoint, key) as client:
        # 1. presets
        presets = client.presets.list_presets().presets
        check(len(presets) == 3, f"3 presets, got {len(presets)}")
        check(
            {p.preset_id for p in presets} == {"quick_social", "brand_campaign", "premium_spot"},
            f"preset ids {[p.preset_id for p in presets]}",
        )

        # 2. estimate
        est = client.cost_estimator.estimate_cost(preset_id="brand_campaign", duration_s=60)
        check(est.recommended.total_micros > 0, "recommended.total_micros > 0")
        check(est.recommended.guaranteed_max_micros >= est.recommended.total_micros, "guaranteed_max >= total")
        check(len(est.options) == 3, f"3 backend options, got {len(est.options)}")
        check(len({o.backend for o in est.options}) == 3, "one option per backend")

        # 3. create, idempotently
        request: dict[str, Any] = dict(
            request_id=f"conformance-py-{uuid.uuid4()}",
            preset_id="brand_campaign",
            brief=BRIEF,
            brand_id="acme-shoes",
            duration_s=60,
            labels={"campaign": "conformance"},
        )
        job = client.render.create_job(**request).job
        check(job.state == JOB_STATE_QUEUED, f"new job QUEUED, got {JobState.Name(job.state)}")
        again = client.render.create_job(**request).job
        check(again.job_id == job.job_id, f"same request_id, same job: {again.job_id} != {job.job_id}")

        # 4. watch until AWAITING_APPROVAL, then read the manifest
        watch = client.watch_job(job.job_id, 0, timeout=120)
        for ev in watch:
            events.append(ev)
            if ev.state == JOB_STATE_AWAITING_APPROVAL:
                break
        watch.close()
        check(bool(events) and events[-1].state == JOB_STATE_AWAITING_APPROVAL, "reached AWAITING_APPROVAL")
        last_seen = events[-1].sequence
        manifest = client.icc.get_manifest(job_id=job.job_id).manifest
        check(len(manifest.shots) > 0, "manifest has shots")
        check(manifest.etag != "" and manifest.revision == 1, f"etag set, revision 1 (got {manifest.revision})")

        # 5. edit the manifest, then try again with the stale etag
        edit = Manifest(audio_style="upbeat acoustic", shots=manifest.shots)
        edit.shots[0].description = "Close-up of the new sole hitting wet asphalt at sunrise, slow motion."
        updated = client.icc.update_manifest(
            job_id=job.job_id, manifest=edit, update_mask=FieldMask(paths=["audio_style", "shots"]), etag=manifest.etag
        )
        check(updated.manifest.revision == 2, f"revision 2, got {updated.manifest.revision}")
        check(updated.manifest.etag not in ("", manifest.etag), "a new etag")
        check(updated.HasField("quote") and updated.quote.total_micros > 0, "a new quote")
        check(updated.manifest.audio_style == "upbeat acoustic", "audio_style updated")
        expect_error(
            aiprod.StatusCode.ABORTED,
            client.icc.update_manifest,
            job_id=job.job_id,
            manifest=edit,
            update_mask=FieldMask(paths=["audio_style"]),
            etag=manifest.etag,
        )

        # 6. approve
        approved = client.icc.approve_manifest(job_id=job.job_id, etag=updated.manifest.etag).job
        check(approved.state == JOB_STATE_RENDERING, f"RENDERING after approval, got {JobState.Name(approved.state)}")

        # 7. resume the watch; after 2 events cut the connection: watch_job reconnects by itself
        connections, received = proxy.accepted, 0
        for ev in client.watch_job(job.job_id, last_seen, timeout=120):
            events.append(ev)
            received += 1
            if received == 2:
                proxy.drop_connections()
        reconnects = proxy.accepted - connections
        check(reconnects >= 1, "the watch reconnected after the dropped connection")
        seqs = [e.sequence for e in events]
        check(seqs == list(range(1, len(seqs) + 1)), f"sequences 1..N without gap or duplicate: {seqs}")
        states = list(dict.fromkeys(e.state for e in events))
        want = [
            JOB_STATE_QUEUED,
            JOB_STATE_PLANNING,
            JOB_STATE_AWAITING_APPROVAL,
            JOB_STATE_RENDERING,
            JOB_STATE_QUALITY_CHECK,
            JOB_STATE_DELIVERED,
        ]
        check(states == want, f"states in order: {[JobState.Name(s) for s in states]}")
        check(events[-1].state == JOB_STATE_DELIVERED, "last event DELIVERED")

        # 8. certified costs
        report = client.cost_estimator.get_job_costs(job_id=job.job_id).report
        check(report.certified and report.within_guarantee, "report certified and within guarantee")
        check(report.billed_micros <= report.guaranteed_max_micros, "billed <= guaranteed max")
        check(report.metered_micros > 0, "metered > 0")

        # 9. validation errors carry field violations
        err = expect_error(
            aiprod.StatusCode.INVALID_ARGUMENT,
            client.render.create_job,
            request_id="",
            preset_id="quick_social",
            brief="",
            duration_s=1000,
        )
        fields = {v.field for v in err.field_violations}
        check({"request_id", "brief", "duration_s"} <= fields, f"violations on request_id, brief, duration_s: {fields}")

        # 10. unknown and foreign jobs are NOT_FOUND alike
        expect_error(aiprod.StatusCode.NOT_FOUND, client.render.get_job, job_id="job_does_not_exist")
        with aiprod.Client(endpoint, os.environ["AIPROD_OTHER_API_KEY"]) as other:
            expect_error(aiprod.StatusCode.NOT_FOUND, other.render.get_job, job_id=job.job_id)

    return (
        f"job {job.job_id} DELIVERED after {len(events)} events ({reconnects} reconnect(s)), "
        f"billed ${report.billed_micros / 1e6:.2f} of max ${report.guaranteed_max_micros / 1e6:.2f}"
    )


def main() -> int:
    load_env()
    try:
        print("== quickstart")
        quickstart()
        print("== scenario")
        summary = scenario()
    except (CheckFailed, aiprod.AiprodError) as err:
        traceback.print_exc()
        print(f"conformance (python): FAILED: {err}", file=sys.stderr)
        return 1
    print(f"conformance (python): 10 steps passed: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
