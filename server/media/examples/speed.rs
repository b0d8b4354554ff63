//! Speed figures of the pure implementation: animatic render + encode per size and camera move,
//! measure, poster, and assembly of a 12-shot cut (sample copy) and of provider-like clips
//! (decode, fit, re-encode). Times are CPU seconds of the calling thread, so they hold on a busy
//! machine (wall time where /proc/thread-self/schedstat does not exist).
//!
//! `cargo run --release -p aiprod-media --example speed [seconds per clip, default 10]`

use aiprod_media::{Animatic, CameraMove, Format, Media, PureMedia};

struct Clock {
    wall: std::time::Instant,
    cpu: Option<f64>,
}

fn cpu_now() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

impl Clock {
    fn start() -> Self {
        Self {
            wall: std::time::Instant::now(),
            cpu: cpu_now(),
        }
    }
    fn secs(&self) -> f64 {
        match (self.cpu, cpu_now()) {
            (Some(a), Some(b)) => b - a,
            _ => self.wall.elapsed().as_secs_f64(),
        }
    }
}

fn spec(format: Format, duration_ms: u64, camera: CameraMove, n: u32) -> Animatic<'static> {
    Animatic {
        shot_number: n,
        shot_count: 12,
        description: "A barista pours latte art in slow motion while morning light streams \
                      through the café window; the brand logo appears on the cup.",
        duration_ms,
        camera,
        palette: &[[200, 40, 40], [20, 40, 90], [240, 220, 200]],
        format,
        seed: 7,
    }
}

fn main() {
    let media = PureMedia::default();
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let frames = secs * 24;
    println!("aiprod-media speed (CPU time of one thread), {secs} s clips at 24 fps");
    println!("render + encode (camera Pan):");
    for (w, h) in [(256, 144), (640, 360), (854, 480), (1280, 720)] {
        let format = Format {
            width: w,
            height: h,
            fps: 24,
        };
        let t = Clock::start();
        let clip = media
            .render_animatic(&spec(format, secs * 1000, CameraMove::Pan, 1), None)
            .expect("render");
        let el = t.secs();
        let t = Clock::start();
        let m = media.measure(&clip).expect("measure");
        let mel = t.secs();
        let t = Clock::start();
        media.poster(&clip, 320).expect("poster");
        let pel = t.secs();
        println!(
            "  {w}x{h}: {:>5.0} frames/s, {:>5} kB ({:.2} Mbit/s); measure {:>5.0} frames/s; poster {:.1} ms",
            frames as f64 / el,
            clip.len() / 1000,
            clip.len() as f64 * 8.0 / secs as f64 / 1e6,
            frames as f64 / mel,
            pel * 1000.0,
        );
        assert_eq!(m.decode_errors, 0);
    }
    println!("render + encode at 1280x720 per camera move:");
    let hd = Format {
        width: 1280,
        height: 720,
        fps: 24,
    };
    let mut hd_clips = Vec::new();
    for (n, camera) in [
        CameraMove::Static,
        CameraMove::Pan,
        CameraMove::Dolly,
        CameraMove::Zoom,
        CameraMove::Orbital,
    ]
    .into_iter()
    .enumerate()
    {
        let t = Clock::start();
        let clip = media
            .render_animatic(&spec(hd, secs * 1000, camera, n as u32 + 1), None)
            .expect("render");
        println!("  {camera:?}: {:.0} frames/s", frames as f64 / t.secs());
        hd_clips.push(clip);
    }

    println!("assembly:");
    for format in [
        Format {
            width: 640,
            height: 360,
            fps: 24,
        },
        hd,
    ] {
        let (w, h) = (format.width, format.height);
        let base: Vec<Vec<u8>> = if format == hd {
            hd_clips[..3].to_vec()
        } else {
            (1..=3)
                .map(|n| {
                    media
                        .render_animatic(&spec(format, secs * 1000, CameraMove::Dolly, n), None)
                        .expect("render")
                })
                .collect()
        };
        // 12 shots (the three clips four times): the premium_spot cut.
        let refs: Vec<&[u8]> = (0..12).map(|i| base[i % 3].as_slice()).collect();
        let t = Clock::start();
        let cut = media.assemble(&refs, format).expect("assemble");
        let copy = t.secs();
        // Provider-like clips: another size and 30 fps, decoded, fitted and re-encoded.
        let other = Format {
            width: w - 64,
            height: h,
            fps: 30,
        };
        let odd: Vec<Vec<u8>> = (1..=3)
            .map(|n| {
                media
                    .render_animatic(&spec(other, secs * 1000, CameraMove::Zoom, n), None)
                    .expect("render")
            })
            .collect();
        let refs: Vec<&[u8]> = odd.iter().map(Vec::as_slice).collect();
        let t = Clock::start();
        let cut2 = media.assemble(&refs, format).expect("assemble");
        let re = t.secs();
        println!(
            "  {w}x{h}: copy 12 x {secs} s = {} frames in {:.1} ms ({} kB); re-encode 3 x {secs} s from {}x{}@30 in {:.2} s ({:.0} output frames/s, {} kB)",
            12 * frames,
            copy * 1000.0,
            cut.len() / 1000,
            other.width,
            other.height,
            re,
            (3 * frames) as f64 / re,
            cut2.len() / 1000,
        );
    }
}
