//! Renders one animatic per camera move and writes it with its poster to a directory
//! (`cargo run -p aiprod-media --example dump -- /tmp/out 320 180`).

use aiprod_media::{Animatic, CameraMove, Format, Media, PureMedia};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .cloned()
            .unwrap_or_else(|| "/tmp/animatics".into()),
    );
    let width: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(320);
    let height: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(180);
    let long: String =
        "Ünïcødé ελληνικά кириллица 日本語 🎬 — the quick brown fox jumps over the lazy dog. "
            .chars()
            .cycle()
            .take(2000)
            .collect();
    let description = if args.get(4).is_some_and(|a| a == "long") {
        long.as_str()
    } else {
        "A barista pours latte art in slow motion while morning light streams through the café window; the brand logo appears on the cup."
    };
    std::fs::create_dir_all(&dir).expect("create dir");
    let media = PureMedia::default();
    let palettes: [&[[u8; 3]]; 3] = [
        &[[200, 40, 40], [20, 40, 90], [240, 220, 200]],
        &[[0, 0, 0]],
        &[[255, 255, 255]],
    ];
    for (p, palette) in palettes.iter().enumerate() {
        for camera in [
            CameraMove::Static,
            CameraMove::Pan,
            CameraMove::Dolly,
            CameraMove::Zoom,
            CameraMove::Orbital,
        ] {
            let spec = Animatic {
                shot_number: 3,
                shot_count: 12,
                description,
                duration_ms: 2000,
                camera,
                palette,
                format: Format {
                    width,
                    height,
                    fps: 24,
                },
                seed: 7,
            };
            let clip = media.render_animatic(&spec, None).expect("render");
            let name = format!("{camera:?}-{p}").to_lowercase();
            std::fs::write(dir.join(format!("{name}.mp4")), &clip).expect("write");
            let poster = media.poster(&clip, 0).expect("poster");
            std::fs::write(dir.join(format!("{name}.png")), &poster).expect("write");
            let m = media.measure(&clip).expect("measure");
            println!(
                "{name}: {} bytes, {} frames, errors {}, black {:.3}, frozen {:.3}, sharpness {:.3}, contrast {:.3}, codec {}",
                clip.len(),
                m.decoded_frames,
                m.decode_errors,
                m.black_frame_ratio,
                m.frozen_frame_ratio,
                m.sharpness,
                m.contrast,
                m.info.codec
            );
        }
    }
}
