//! One conformance suite for every `Media` implementation, on real bytes: PureMedia always,
//! FfmpegMedia when an `ffmpeg` is found on PATH.

use aiprod_media::{
    ANIMATIC_MIN_CONTRAST, ANIMATIC_MIN_SHARPNESS, Animatic, CameraMove, Defect, FfmpegMedia,
    Format, Media, MediaError, PureMedia, frames_for,
};
use std::time::Instant;

const TINY: Format = Format {
    width: 256,
    height: 144,
    fps: 24,
};
const PALETTE: &[[u8; 3]] = &[[200, 40, 40], [20, 40, 90], [240, 220, 200]];
const DESCRIPTION: &str = "A barista pours latte art in slow motion while morning light streams \
    through the café window; the brand logo appears on the cup.";

fn spec(format: Format, duration_ms: u64, camera: CameraMove) -> Animatic<'static> {
    Animatic {
        shot_number: 3,
        shot_count: 12,
        description: DESCRIPTION,
        duration_ms,
        camera,
        palette: PALETTE,
        format,
        seed: 42,
    }
}

fn png_size(png_bytes: &[u8]) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("PNG pixels");
    (info.width, info.height)
}

fn animatic_probe_and_measure(media: &dyn Media) {
    for (duration_ms, camera) in [(1000, CameraMove::Pan), (1100, CameraMove::Zoom)] {
        let s = spec(TINY, duration_ms, camera);
        let clip = media.render_animatic(&s, None).expect("render");
        let frames = frames_for(duration_ms, TINY.fps);
        let info = media.probe(&clip).expect("probe");
        assert_eq!((info.width, info.height), (256, 144));
        assert_eq!(info.fps, 24.0);
        assert_eq!(info.frame_count, frames);
        assert_eq!(info.duration_ms, duration_ms, "exact duration");
        assert_eq!(info.keyframes, vec![0], "one IDR, at frame 0");
        assert!(info.faststart, "moov before mdat");
        assert!(info.codec.starts_with("avc1."), "{}", info.codec);
        assert_eq!(info.mime_type, "video/mp4");
        assert!(!info.has_audio);
        let m = media.measure(&clip).expect("measure");
        assert_eq!(m.info, info);
        assert_eq!(m.decoded_frames, frames);
        assert_eq!(m.decode_errors, 0);
        assert_eq!(m.black_frame_ratio, 0.0);
        assert!(m.frozen_frame_ratio <= 0.05, "{m:?}");
        assert!(m.sharpness >= ANIMATIC_MIN_SHARPNESS, "{m:?}");
        assert!(m.contrast >= ANIMATIC_MIN_CONTRAST, "{m:?}");
    }
}

fn deterministic(media: &dyn Media) {
    let s = spec(TINY, 500, CameraMove::Orbital);
    let a = media.render_animatic(&s, None).expect("render");
    let b = media.render_animatic(&s, None).expect("render");
    assert!(a == b, "same inputs, same bytes");
    let c = media
        .render_animatic(&Animatic { seed: 43, ..s }, None)
        .expect("render");
    assert!(a != c, "the seed varies the picture");
}

fn every_move_and_palette_changes_frames(media: &dyn Media) {
    let palettes: [&[[u8; 3]]; 5] = [
        &[],
        &[[0, 0, 0]],
        &[[255, 255, 255]],
        &[[0, 0, 0], [255, 255, 255]],
        &[
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [255, 255, 0],
            [0, 255, 255],
            [255, 0, 255],
            [128, 128, 128],
            [10, 10, 10],
        ],
    ];
    let format = Format {
        width: 160,
        height: 90,
        fps: 12,
    };
    for (p, palette) in palettes.iter().enumerate() {
        for camera in [
            CameraMove::Static,
            CameraMove::Pan,
            CameraMove::Dolly,
            CameraMove::Zoom,
            CameraMove::Orbital,
        ] {
            let s = Animatic {
                palette,
                ..spec(format, 1000, camera)
            };
            let clip = media.render_animatic(&s, None).expect("render");
            let m = media.measure(&clip).expect("measure");
            let what = format!("palette {p}, {camera:?}: {m:?}");
            assert_eq!(m.decoded_frames, 12, "{what}");
            assert_eq!(m.decode_errors, 0, "{what}");
            assert_eq!(m.black_frame_ratio, 0.0, "{what}");
            assert_eq!(m.frozen_frame_ratio, 0.0, "{what}");
            assert!(m.sharpness >= ANIMATIC_MIN_SHARPNESS, "{what}");
            assert!(m.contrast >= ANIMATIC_MIN_CONTRAST, "{what}");
        }
    }
}

fn defects_are_caught(media: &dyn Media) {
    let s = spec(TINY, 1000, CameraMove::Dolly);
    let black = media
        .render_animatic(&s, Some(Defect::Black))
        .expect("render");
    let m = media.measure(&black).expect("measure");
    assert_eq!(m.decoded_frames, 24);
    assert!(m.black_frame_ratio >= 0.99, "{m:?}");

    let frozen = media
        .render_animatic(&s, Some(Defect::Frozen))
        .expect("render");
    let m = media.measure(&frozen).expect("measure");
    assert_eq!(
        (m.info.frame_count, m.decoded_frames, m.info.duration_ms),
        (24, 24, 1000)
    );
    assert_eq!(m.black_frame_ratio, 0.0);
    assert!(m.frozen_frame_ratio >= 0.95, "{m:?}");

    let truncated = media
        .render_animatic(&s, Some(Defect::Truncated))
        .expect("render");
    let m = media.measure(&truncated).expect("measure");
    assert!(m.info.frame_count < 24 && m.info.frame_count >= 8, "{m:?}");
    assert_eq!(m.decoded_frames, m.info.frame_count);
    assert_eq!(m.decode_errors, 0);
    assert_eq!(
        m.info.duration_ms,
        (u64::from(m.info.frame_count) * 1000 + 12) / 24,
        "the header matches what is there"
    );

    let undecodable = media
        .render_animatic(&s, Some(Defect::Undecodable))
        .expect("render");
    match media.measure(&undecodable) {
        Err(_) => {}
        Ok(m) => assert!(m.decode_errors > 0, "{m:?}"),
    }
}

fn assemble_by_copy(media: &dyn Media) {
    let durations = [1000u64, 500, 1250];
    let moves = [CameraMove::Pan, CameraMove::Static, CameraMove::Orbital];
    let clips: Vec<Vec<u8>> = durations
        .iter()
        .zip(moves)
        .map(|(d, c)| {
            media
                .render_animatic(&spec(TINY, *d, c), None)
                .expect("render")
        })
        .collect();
    let refs: Vec<&[u8]> = clips.iter().map(Vec::as_slice).collect();
    let t = Instant::now();
    let cut = media.assemble(&refs, TINY).expect("assemble");
    let took = t.elapsed();
    report(&format!(
        "[{}] assemble 3 clips (66 frames, 256x144) by copying samples: {:.1} ms",
        media.name(),
        took.as_secs_f64() * 1000.0
    ));
    // Copied, not re-encoded: each clip's last sample (the end of its file) is in the cut.
    for c in &clips {
        let tail = &c[c.len() - 64..];
        assert!(
            cut.windows(64).any(|w| w == tail),
            "samples copied as they are"
        );
    }
    let info = media.probe(&cut).expect("probe");
    assert_eq!((info.width, info.height, info.fps), (256, 144, 24.0));
    assert_eq!(info.frame_count, 24 + 12 + 30);
    assert_eq!(info.keyframes, vec![0, 24, 36]);
    assert!(info.duration_ms.abs_diff(2750) <= 42, "{info:?}");
    assert!(info.faststart);
    let m = media.measure(&cut).expect("measure");
    assert_eq!((m.decoded_frames, m.decode_errors), (66, 0));
    assert_eq!(m.black_frame_ratio, 0.0);
    assert!(m.frozen_frame_ratio <= 0.05, "{m:?}");
}

fn assemble_by_reencoding(media: &dyn Media) {
    let a_format = Format {
        width: 320,
        height: 240,
        fps: 16,
    };
    let a = media
        .render_animatic(&spec(a_format, 1000, CameraMove::Pan), None)
        .expect("render");
    let b = media
        .render_animatic(&spec(TINY, 1000, CameraMove::Zoom), None)
        .expect("render");
    let c_format = Format {
        width: 144,
        height: 256,
        fps: 30,
    };
    let c = media
        .render_animatic(&spec(c_format, 500, CameraMove::Dolly), None)
        .expect("render");
    let t = Instant::now();
    let cut = media.assemble(&[&a, &b, &c], TINY).expect("assemble");
    report(&format!(
        "[{}] assemble 320x240@16 + 256x144@24 + 144x256@30 into 256x144@24 (re-encode path): {:.1} ms",
        media.name(),
        t.elapsed().as_secs_f64() * 1000.0
    ));
    let info = media.probe(&cut).expect("probe");
    assert_eq!((info.width, info.height, info.fps), (256, 144, 24.0));
    assert!(info.frame_count.abs_diff(24 + 24 + 12) <= 3, "{info:?}");
    for start in [0, 24, 48] {
        let near = info.keyframes.iter().any(|k| k.abs_diff(start) <= 1);
        assert!(near, "a keyframe at each clip start: {:?}", info.keyframes);
    }
    assert!(info.duration_ms.abs_diff(2500) <= 3 * 42, "{info:?}");
    assert!(info.faststart);
    let m = media.measure(&cut).expect("measure");
    assert_eq!(m.decoded_frames, info.frame_count);
    assert_eq!(m.decode_errors, 0);
    assert_eq!(m.black_frame_ratio, 0.0);
    // 16 → 24 fps repeats every other frame of the first clip, nothing else.
    assert!(m.frozen_frame_ratio < 0.3, "{m:?}");
}

fn posters(media: &dyn Media) {
    let clip = media
        .render_animatic(&spec(TINY, 500, CameraMove::Static), None)
        .expect("render");
    let png_bytes = media.poster(&clip, 100).expect("poster");
    let (w, h) = png_size(&png_bytes);
    assert_eq!(w, 100);
    assert!((56..=57).contains(&h), "{w}x{h}");
    let native = media.poster(&clip, 0).expect("poster");
    assert_eq!(png_size(&native), (256, 144));
    let wide = media.poster(&clip, 4000).expect("poster");
    assert_eq!(png_size(&wide), (256, 144), "never scaled up");
}

fn malformed_inputs_are_errors(media: &dyn Media) {
    let clip = media
        .render_animatic(&spec(TINY, 500, CameraMove::Pan), None)
        .expect("render");
    let mut noise = vec![0u8; 4096];
    let mut x = 0x1234_5678_u32;
    for b in &mut noise {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("noise", noise),
        ("cut in the middle", clip[..clip.len() / 2].to_vec()),
        ("cut near the end", clip[..clip.len() - 3].to_vec()),
        ("header only", clip[..40].to_vec()),
    ];
    for (what, bytes) in &cases {
        assert!(media.probe(bytes).is_err(), "probe {what}");
        assert!(media.measure(bytes).is_err(), "measure {what}");
        assert!(media.poster(bytes, 64).is_err(), "poster {what}");
        assert!(
            media.assemble(&[&clip, bytes], TINY).is_err(),
            "assemble {what}"
        );
    }
    assert!(matches!(media.probe(&[]), Err(MediaError::Malformed(_))));
    assert!(media.assemble(&[], TINY).is_err());
    let odd = Format {
        width: 255,
        height: 144,
        fps: 24,
    };
    assert!(
        media
            .render_animatic(&spec(odd, 500, CameraMove::Pan), None)
            .is_err()
    );
    assert!(media.assemble(&[&clip], odd).is_err());
    assert!(
        media
            .render_animatic(&spec(TINY, 10, CameraMove::Pan), None)
            .is_err(),
        "shorter than a frame"
    );
}

fn odd_inputs_render(media: &dyn Media) {
    // The sandbox's smallest formats, a 2,000-character description with scripts and emoji.
    let long: String = "Ünïcødé ελληνικά кириллица 日本語 🎬 — "
        .chars()
        .cycle()
        .take(2500)
        .collect();
    for (w, h, fps) in [(56, 32, 8), (32, 56, 8), (32, 32, 8), (16, 16, 1)] {
        let format = Format {
            width: w,
            height: h,
            fps,
        };
        let s = Animatic {
            description: &long,
            shot_number: 12,
            shot_count: 12,
            ..spec(format, 2000, CameraMove::Orbital)
        };
        let clip = media.render_animatic(&s, None).expect("render");
        let m = media.measure(&clip).expect("measure");
        assert_eq!(m.decoded_frames, frames_for(2000, fps), "{w}x{h}");
        assert_eq!(m.decode_errors, 0);
        assert_eq!(m.black_frame_ratio, 0.0, "{w}x{h} {m:?}");
        assert_eq!(m.frozen_frame_ratio, 0.0, "{w}x{h} {m:?}");
        assert!(m.sharpness >= ANIMATIC_MIN_SHARPNESS, "{w}x{h} {m:?}");
        assert!(m.contrast >= ANIMATIC_MIN_CONTRAST, "{w}x{h} {m:?}");
    }
    let empty = Animatic {
        description: "",
        ..spec(TINY, 500, CameraMove::Static)
    };
    media
        .render_animatic(&empty, None)
        .expect("empty description");
}

/// Provider clips longer than their shot are cut to the shot; so are our own (copy path).
fn assemble_trimmed(media: &dyn Media) {
    let provider = Format {
        width: 320,
        height: 240,
        fps: 16,
    };
    let long = media
        .render_animatic(&spec(provider, 2000, CameraMove::Pan), None)
        .expect("render");
    let own = media
        .render_animatic(&spec(TINY, 2000, CameraMove::Zoom), None)
        .expect("render");
    let cut = media
        .assemble_trimmed(&[&long, &own], &[Some(1000), None], TINY)
        .expect("assemble re-encoded + copied");
    let info = media.probe(&cut).expect("probe");
    assert!(info.frame_count.abs_diff(24 + 48) <= 2, "{info:?}");
    assert!(
        info.keyframes.iter().any(|k| k.abs_diff(24) <= 1),
        "{info:?}"
    );
    let copied = media
        .assemble_trimmed(&[&own, &own], &[Some(500), Some(1000)], TINY)
        .expect("assemble copied");
    let info = media.probe(&copied).expect("probe");
    assert_eq!(info.frame_count, 12 + 24, "{info:?}");
    assert!(info.keyframes.contains(&12), "{info:?}");
    let m = media.measure(&copied).expect("measure");
    assert_eq!((m.decoded_frames, m.decode_errors), (36, 0));
    // Without limits (or with limits past the end) nothing is cut.
    let whole = media
        .assemble_trimmed(&[&own], &[Some(60_000)], TINY)
        .expect("assemble");
    assert_eq!(media.probe(&whole).unwrap().frame_count, 48);
}

fn conformance(media: &dyn Media) {
    animatic_probe_and_measure(media);
    assemble_trimmed(media);
    deterministic(media);
    every_move_and_palette_changes_frames(media);
    defects_are_caught(media);
    assemble_by_copy(media);
    assemble_by_reencoding(media);
    posters(media);
    malformed_inputs_are_errors(media);
    odd_inputs_render(media);
}

#[test]
fn pure_media_conforms() {
    let media = PureMedia::default();
    assert_eq!(media.name(), "pure");
    conformance(&media);
}

#[test]
fn ffmpeg_media_conforms_when_ffmpeg_is_installed() {
    let Some(media) = FfmpegMedia::find(None) else {
        skipped("ffmpeg not found on PATH; FfmpegMedia conformance not run");
        return;
    };
    assert_eq!(media.name(), "ffmpeg");
    conformance(&media);
}

#[test]
fn the_seam_is_object_safe_and_shareable() {
    fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<dyn Media>();
    let media: std::sync::Arc<dyn Media> = std::sync::Arc::new(PureMedia::default());
    let clip = media
        .render_animatic(&spec(TINY, 250, CameraMove::Pan), None)
        .expect("render");
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let media = media.clone();
            let clip = clip.clone();
            std::thread::spawn(move || media.measure(&clip).expect("measure").decoded_frames)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("thread"), 6);
    }
}

/// Random palettes, sizes (narrow and tall included), fps and texts: never black, never frozen,
/// above the floors.
#[test]
fn random_animatics_pass_the_checks() {
    let media = PureMedia::default();
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut r = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for case in 0..24 {
        let palette: Vec<[u8; 3]> = (0..1 + r(8))
            .map(|_| {
                let c = [r(256) as u8, r(256) as u8, r(256) as u8];
                match r(4) {
                    0 => c.map(|v| v / 8),
                    1 => c.map(|v| 255 - v / 8),
                    _ => c,
                }
            })
            .collect();
        let format = Format {
            width: 16 + 2 * r(120) as u32,
            height: 16 + 2 * r(120) as u32,
            fps: 1 + r(60) as u32,
        };
        let camera = [
            CameraMove::Static,
            CameraMove::Pan,
            CameraMove::Dolly,
            CameraMove::Zoom,
            CameraMove::Orbital,
        ][r(5) as usize];
        let duration_ms = 500 + r(1500);
        let description: String = "lorem ipsum dolor sit amet "
            .chars()
            .cycle()
            .take(r(600) as usize)
            .collect();
        let s = Animatic {
            shot_number: 1 + r(12) as u32,
            shot_count: 12,
            description: &description,
            duration_ms,
            camera,
            palette: &palette,
            format,
            seed: r(1000),
        };
        let clip = media.render_animatic(&s, None).expect("render");
        let m = media.measure(&clip).expect("measure");
        let what = format!("case {case}: {format:?} {camera:?} {palette:?}: {m:?}");
        assert_eq!(
            m.decoded_frames,
            frames_for(duration_ms, format.fps),
            "{what}"
        );
        assert_eq!(m.decode_errors, 0, "{what}");
        assert_eq!(m.black_frame_ratio, 0.0, "{what}");
        assert_eq!(m.frozen_frame_ratio, 0.0, "{what}");
        assert!(m.sharpness >= ANIMATIC_MIN_SHARPNESS, "{what}");
        assert!(m.contrast >= ANIMATIC_MIN_CONTRAST, "{what}");
    }
}

/// Says so on the real stdout (the test harness does not capture it), so that CI logs show it.
fn skipped(what: &str) {
    report(&format!("SKIPPED: {what}"));
}

/// A line on the real stdout (not captured by the test harness).
fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// The bitrate-targeting variant renders, measures and copies its own clips as well.
#[test]
fn bitrate_mode_works_too() {
    let media = PureMedia::with_bitrate(aiprod_media::DEFAULT_BITRATE_720P);
    let a = media
        .render_animatic(&spec(TINY, 1000, CameraMove::Pan), None)
        .expect("render");
    let b = media
        .render_animatic(&spec(TINY, 500, CameraMove::Zoom), None)
        .expect("render");
    let m = media.measure(&a).expect("measure");
    assert_eq!((m.decoded_frames, m.decode_errors), (24, 0));
    assert!(media.all_copyable(&[&a, &b], TINY));
    let cut = media.assemble(&[&a, &b], TINY).expect("assemble");
    let info = media.probe(&cut).expect("probe");
    assert_eq!(
        (info.frame_count, info.keyframes.clone()),
        (36, vec![0, 24])
    );
    // A constant-quality instance re-encodes them only if its parameter sets differ.
    let other = PureMedia::default();
    let cut = other.assemble(&[&a, &b], TINY).expect("assemble");
    assert_eq!(other.probe(&cut).expect("probe").frame_count, 36);
}
