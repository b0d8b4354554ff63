"""AIPROD conformance scenario for the Python SDK (also the README's quickstart).

Runs against a real server (the quickstart in a temporary directory, where it saves video.mp4):
reads AIPROD_ENDPOINT, AIPROD_API_KEY and AIPROD_OTHER_API_KEY from the
environment, or from the env file written by ``scripts/test-server.sh`` (path as the first argument
or in AIPROD_ENV_FILE). Exits non-zero on the first failed check.

    python examples/conformance.py /tmp/aiprod-server/env
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import tempfile
import traceback
import uuid
from collections.abc import Callable

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
    CreateJobRequest,
    JobEvent,
    JobState,
    Manifest,
    VideoArtifact,
)

BRIEF = "A 60-second spot for the acme-shoes spring line: runners at dawn, close-ups of the new sole."


def quickstart() -> None:
    # [START quickstart]
    import hashlib
    import os

    import aiprod
    from aiprod.v1 import JOB_STATE_DELIVERED, JobState

    with aiprod.Client(os.environ["AIPROD_ENDPOINT"], os.environ["AIPROD_API_KEY"]) as client:
        estimate = client.cost_estimator.estimate_cost(preset_id="quick_social", duration_s=15)
        print(f"quote ${estimate.recommended.total_micros / 1e6:.2f}")

        # The SDK fills request_id (the idempotency key) once, so a retried CreateJob never makes two jobs.
        job = client.render.create_job(
            preset_id="quick_social",
            brief="A 15-second teaser for the acme-shoes spring line: runners at dawn.",
            duration_s=15,
            auto_approve=True,  # skip the manifest review (AWAITING_APPROVAL)
        ).job

        for event in client.watch_job(job.job_id):  # resumes by itself across drops and restarts
            print(event.sequence, JobState.Name(event.state))

        job = client.render.get_job(job_id=job.job_id).job
        assert job.state == JOB_STATE_DELIVERED, JobState.Name(job.state)
        video = client.download_video(job.job_id, "video.mp4")  # resumes after drops, verifies the SHA-256
        with open("video.mp4", "rb") as f:
            sha256 = hashlib.sha256(f.read()).hexdigest()
        assert os.path.getsize("video.mp4") == job.video.size_bytes and sha256 == job.video.sha256
        print(f"video.mp4: {video.size_bytes} bytes, {video.width}x{video.height}, sha256 {sha256}")
    # [END quickstart]


class CheckFailed(Exception):
    pass


def check(ok: bool, what: str) -> None:
    if not ok:
        raise CheckFailed(what)


def expect_error(code: aiprod.StatusCode, fn: Callable[[], object]) -> aiprod.AiprodError:
    try:
        fn()
    except aiprod.AiprodError as err:
        check(err.code == code, f"expected {code.name}, got {err.code.name}: {err.message}")
        return err
    raise CheckFailed(f"expected {code.name}, the call succeeded")


def read_all(client: aiprod.Client, resource_name: str) -> bytes:
    return b"".join(client.read_resource(resource_name))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_download(path: str, got: VideoArtifact, want: VideoArtifact, what: str) -> None:
    """The file at ``path`` is ``want`` (from GetJob): same size and SHA-256, an MP4 with frames."""
    check(got.resource_name == want.resource_name, f"{what}: resource {got.resource_name} != {want.resource_name}")
    check(got.sha256 == want.sha256, f"{what}: downloaded version {got.sha256} != GetJob's {want.sha256}")
    size = os.path.getsize(path)
    check(size == want.size_bytes and size > 0, f"{what}: {size} bytes on disk, size_bytes {want.size_bytes}")
    check(file_sha256(path) == want.sha256, f"{what}: SHA-256 of the file != {want.sha256}")
    with open(path, "rb") as f:
        head = f.read(8)
    check(head[4:8] == b"ftyp", f"{what}: an MP4 (ftyp at bytes 4..8), got {head!r}")
    check(want.frame_count > 0, f"{what}: frame_count > 0, got {want.frame_count}")
    check(want.mime_type == "video/mp4", f"{what}: mime_type video/mp4, got {want.mime_type!r}")


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

        # 3. create, idempotently (a typed request message: the same request_id twice is one job)
        request = CreateJobRequest(
            request_id=f"conformance-py-{uuid.uuid4()}",
            preset_id="brand_campaign",
            brief=BRIEF,
            brand_id="acme-shoes",
            duration_s=60,
            labels={"campaign": "conformance"},
        )
        job = client.render.create_job(request).job
        check(job.state == JOB_STATE_QUEUED, f"new job QUEUED, got {JobState.Name(job.state)}")
        again = client.render.create_job(request).job
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
            lambda: client.icc.update_manifest(
                job_id=job.job_id, manifest=edit, update_mask=FieldMask(paths=["audio_style"]), etag=manifest.etag
            ),
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

        # 9. validation errors carry field violations (an empty request_id would be filled by the SDK)
        err = expect_error(
            aiprod.StatusCode.INVALID_ARGUMENT,
            lambda: client.render.create_job(
                request_id="not valid!", preset_id="quick_social", brief="", duration_s=1000
            ),
        )
        fields = {v.field for v in err.field_violations}
        check({"request_id", "brief", "duration_s"} <= fields, f"violations on request_id, brief, duration_s: {fields}")

        # 10. unknown and foreign jobs are NOT_FOUND alike
        expect_error(aiprod.StatusCode.NOT_FOUND, lambda: client.render.get_job(job_id="job_does_not_exist"))
        with aiprod.Client(endpoint, os.environ["AIPROD_OTHER_API_KEY"]) as other:
            expect_error(aiprod.StatusCode.NOT_FOUND, lambda: other.render.get_job(job_id=job.job_id))

        # 11. download the final cut and one shot's clip (ByteStream Read, verified); another tenant's
        # read of the same resource is NOT_FOUND
        delivered = client.render.get_job(job_id=job.job_id).job
        check(delivered.HasField("video") and delivered.video.resource_name != "", "a DELIVERED job has a video")
        check(len(delivered.shots) > 0, "a DELIVERED job lists its shots")
        shot = delivered.shots[0]
        check(shot.rendered and shot.HasField("clip"), f"shot {shot.shot_id} has a clip")
        with tempfile.TemporaryDirectory() as tmp:
            video_path = os.path.join(tmp, "video.mp4")
            video = client.download_video(job.job_id, video_path, timeout=120)
            check_download(video_path, video, delivered.video, "video")
            clip_path = os.path.join(tmp, "clip.mp4")
            clip = client.download_shot_clip(job.job_id, shot.shot_id, clip_path, timeout=120)
            check_download(clip_path, clip, shot.clip, f"clip of {shot.shot_id}")
            check(sorted(os.listdir(tmp)) == ["clip.mp4", "video.mp4"], f"no .part file left: {os.listdir(tmp)}")
        head = b"".join(client.read_resource(video.resource_name, read_limit=8))
        check(head[4:8] == b"ftyp", f"read_resource with read_limit 8: {head!r}")
        with aiprod.Client(endpoint, os.environ["AIPROD_OTHER_API_KEY"]) as other:
            for name in (video.resource_name, f"{video.resource_name}@{video.sha256}", clip.resource_name):
                expect_error(aiprod.StatusCode.NOT_FOUND, functools.partial(read_all, other, name))

    return (
        f"job {job.job_id} DELIVERED after {len(events)} events ({reconnects} reconnect(s)), "
        f"billed ${report.billed_micros / 1e6:.2f} of max ${report.guaranteed_max_micros / 1e6:.2f}, "
        f"video {video.size_bytes} bytes {video.width}x{video.height} {video.frame_count} frames"
    )


def main() -> int:
    load_env()
    try:
        print("== quickstart")
        cwd = os.getcwd()
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)  # the quickstart saves video.mp4 in the current directory
            try:
                quickstart()
                check(os.path.getsize("video.mp4") > 0, "the quickstart saved video.mp4")
                check(os.listdir(".") == ["video.mp4"], f"no .part file left: {os.listdir('.')}")
            finally:
                os.chdir(cwd)
        print("== scenario")
        summary = scenario()
    except (CheckFailed, aiprod.AiprodError) as err:
        traceback.print_exc()
        print(f"conformance (python): FAILED: {err}", file=sys.stderr)
        return 1
    print(f"conformance (python): 11 steps passed: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
