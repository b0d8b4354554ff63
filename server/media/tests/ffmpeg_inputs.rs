//! Provider-like inputs made with the ffmpeg command line (skipped when ffmpeg is not installed):
//! x264 High with B-frames and AAC audio, 10-bit H.264, HEVC. The pure implementation must read
//! the first and name ffmpeg for the others; FfmpegMedia must read them all.

use aiprod_media::{Animatic, CameraMove, FfmpegMedia, Format, Media, MediaError, PureMedia};
use std::path::Path;
use std::process::Command;

const TARGET: Format = Format {
    width: 256,
    height: 144,
    fps: 24,
};

/// Encodes one second of `testsrc2` (320x240 at 25 fps) with a sine tone, with these codec options.
fn make(dir: &Path, name: &str, codec_args: &[&str]) -> Option<Vec<u8>> {
    let out = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=1",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=1"])
        .args(codec_args)
        .args(["-c:a", "aac", "-shortest"])
        .arg(&out)
        .status()
        .ok()?;
    if !status.success() {
        skipped(&format!("input {name}: this ffmpeg cannot encode it"));
        return None;
    }
    std::fs::read(out).ok()
}

fn animatic(media: &dyn Media) -> Vec<u8> {
    media
        .render_animatic(
            &Animatic {
                shot_number: 2,
                shot_count: 2,
                description: "The product on a turntable.",
                duration_ms: 1000,
                camera: CameraMove::Orbital,
                palette: &[[30, 30, 160], [250, 200, 0]],
                format: TARGET,
                seed: 5,
            },
            None,
        )
        .expect("render")
}

fn unsupported_names_ffmpeg<T: std::fmt::Debug>(r: Result<T, MediaError>) {
    match r {
        Err(MediaError::Unsupported(m)) => assert!(m.contains("ffmpeg"), "{m}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn provider_like_inputs() {
    let Some(ffmpeg) = FfmpegMedia::find(None) else {
        skipped("ffmpeg not found on PATH; provider-like inputs not tested");
        return;
    };
    let pure = PureMedia::default();
    let dir = tempfile::tempdir().expect("temp dir");
    let ours = animatic(&pure);

    // x264 High, B-frames, AAC: the pure path decodes it (and drops the audio).
    let high = make(
        dir.path(),
        "high.mp4",
        &[
            "-c:v",
            "libx264",
            "-profile:v",
            "high",
            "-bf",
            "3",
            "-pix_fmt",
            "yuv420p",
        ],
    )
    .expect("libx264 is part of ffmpeg builds with an H.264 encoder");
    let info = pure.probe(&high).expect("probe");
    assert_eq!((info.width, info.height, info.frame_count), (320, 240, 25));
    assert_eq!(info.fps, 25.0);
    assert!(info.has_audio);
    assert!(info.codec.starts_with("avc1.64"), "{}", info.codec);
    let m = pure.measure(&high).expect("measure");
    assert_eq!((m.decoded_frames, m.decode_errors), (25, 0));
    assert_eq!(m.frozen_frame_ratio, 0.0, "{m:?}");
    pure.poster(&high, 160).expect("poster");

    let cut = pure
        .assemble(&[&high, &ours], TARGET)
        .expect("pure assemble");
    let info = pure.probe(&cut).expect("probe");
    assert_eq!((info.width, info.height, info.fps), (256, 144, 24.0));
    assert_eq!(info.frame_count, 48);
    assert_eq!(info.keyframes, vec![0, 24]);
    assert!(!info.has_audio, "the pure assembler drops audio");
    let m = pure.measure(&cut).expect("measure");
    assert_eq!((m.decoded_frames, m.decode_errors), (48, 0));
    assert_eq!(
        m.frozen_frame_ratio, 0.0,
        "25 → 24 fps drops, never repeats: {m:?}"
    );

    let cut = ffmpeg
        .assemble(&[&high, &ours], TARGET)
        .expect("ffmpeg assemble");
    let info = pure.probe(&cut).expect("probe");
    assert_eq!((info.width, info.height, info.fps), (256, 144, 24.0));
    assert!(info.frame_count.abs_diff(48) <= 2, "{info:?}");
    assert!(info.has_audio, "the ffmpeg assembler keeps audio");
    assert!(info.faststart);
    let m = pure.measure(&cut).expect("measure");
    assert_eq!(m.decode_errors, 0);

    // Fragmented MP4 (samples in moof boxes): only ffmpeg reads it; its audio is kept.
    let fragmented = make(
        dir.path(),
        "frag.mp4",
        &[
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "frag_keyframe+empty_moov",
        ],
    )
    .expect("fragmented MP4");
    unsupported_names_ffmpeg(pure.probe(&fragmented));
    unsupported_names_ffmpeg(pure.assemble(&[&fragmented, &ours], TARGET));
    let cut = ffmpeg
        .assemble(&[&ours, &fragmented], TARGET)
        .expect("ffmpeg assemble");
    let info = pure.probe(&cut).expect("probe");
    assert!(info.frame_count.abs_diff(48) <= 2, "{info:?}");
    assert!(info.has_audio);
    let info = ffmpeg.probe(&fragmented).expect("ffmpeg probe remuxes");
    assert_eq!((info.width, info.height, info.frame_count), (320, 240, 25));
    let m = ffmpeg.measure(&fragmented).expect("ffmpeg measure");
    assert_eq!((m.decoded_frames, m.decode_errors), (25, 0));
    ffmpeg.poster(&fragmented, 100).expect("ffmpeg poster");

    // 10-bit H.264 and HEVC: only ffmpeg reads them.
    let ten = make(
        dir.path(),
        "ten.mp4",
        &[
            "-c:v",
            "libx264",
            "-profile:v",
            "high10",
            "-pix_fmt",
            "yuv420p10le",
        ],
    );
    let hevc = make(
        dir.path(),
        "hevc.mp4",
        &[
            "-c:v",
            "libx265",
            "-tag:v",
            "hvc1",
            "-x265-params",
            "log-level=error",
        ],
    );
    for clip in [ten, hevc].into_iter().flatten() {
        let info = pure.probe(&clip).expect("probe reads the container");
        assert_eq!(info.frame_count, 25);
        unsupported_names_ffmpeg(pure.measure(&clip));
        unsupported_names_ffmpeg(pure.poster(&clip, 100));
        unsupported_names_ffmpeg(pure.assemble(&[&clip, &ours], TARGET));
        let m = ffmpeg.measure(&clip).expect("ffmpeg measure");
        assert_eq!((m.decoded_frames, m.decode_errors), (25, 0), "{m:?}");
        assert!(m.contrast > 0.05 && m.sharpness > 0.05, "{m:?}");
        let png = ffmpeg.poster(&clip, 100).expect("ffmpeg poster");
        assert!(png.starts_with(b"\x89PNG"));
        let cut = ffmpeg
            .assemble(&[&clip, &ours], TARGET)
            .expect("ffmpeg assemble");
        let m = pure.measure(&cut).expect("the cut is H.264 8-bit");
        assert!(m.info.frame_count.abs_diff(48) <= 2, "{m:?}");
        assert_eq!(m.decode_errors, 0);
    }
}

/// Says so on the real stdout (the test harness does not capture it), so that CI logs show it.
fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "SKIPPED: {what}");
}
