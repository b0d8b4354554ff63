//! Speed figures: render+encode frames/s per size, measure, assembly (copy and re-encode paths).
//! `cargo run --release -p aiprod-media --example speed`

use aiprod_media::{Animatic, CameraMove, Format, Media, PureMedia};

/// CPU time of this thread in seconds (/proc/thread-self/schedstat), so that the figures hold on a
/// busy machine; wall time is used where that file does not exist.
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
    /// Seconds of CPU (or wall) time since `start`.
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
        description: "A barista pours latte art in slow motion while morning light streams through the café window; the brand logo appears on the cup.",
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
        .unwrap_or(4);
    println!("CPU time of one thread; render + encode, {secs} s clips at 24 fps, camera Pan:");
    for (w, h) in [(256, 144), (640, 360), (854, 480), (1280, 720)] {
        let w = w & !1;
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
        let frames = secs * 24;
        let t = Clock::start();
        let m = media.measure(&clip).expect("measure");
        let mel = t.secs();
        println!(
            "  {w}x{h}: {:.0} frames/s render+encode ({el:.2} s for {frames} frames), {:.0} kB ({:.2} Mbit/s); measure {:.0} frames/s; sharpness {:.3} contrast {:.3}",
            frames as f64 / el,
            clip.len() as f64 / 1000.0,
            clip.len() as f64 * 8.0 / secs as f64 / 1e6,
            frames as f64 / mel,
            m.sharpness,
            m.contrast,
        );
    }
    for (w, h) in [(640u32, 360u32), (1280, 720)] {
        let format = Format {
            width: w,
            height: h,
            fps: 24,
        };
        let clips: Vec<Vec<u8>> = (1..=3)
            .map(|n| {
                media
                    .render_animatic(&spec(format, secs * 1000, CameraMove::Dolly, n), None)
                    .expect("render")
            })
            .collect();
        let refs: Vec<&[u8]> = clips.iter().map(|c| c.as_slice()).collect();
        let t = Clock::start();
        let cut = media.assemble(&refs, format).expect("assemble");
        let copy = t.secs();
        let other = Format {
            width: w / 2 * 2 - 64,
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
        let refs: Vec<&[u8]> = odd.iter().map(|c| c.as_slice()).collect();
        let t = Clock::start();
        let cut2 = media.assemble(&refs, format).expect("assemble");
        let re = t.secs();
        let t = Clock::start();
        let poster = media.poster(&cut, 320).expect("poster");
        let p = t.secs();
        println!(
            "  assemble 3 x {secs} s at {w}x{h}: copy path {:.1} ms ({} kB); re-encode path from {}x{}@30 {:.2} s ({:.0} output frames/s, {} kB); poster 320 px {:.1} ms ({} B)",
            copy * 1000.0,
            cut.len() / 1000,
            other.width,
            other.height,
            re,
            (3 * secs * 24) as f64 / re,
            cut2.len() / 1000,
            p * 1000.0,
            poster.len()
        );
    }
}
