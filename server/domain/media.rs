//! What the service knows about media files, as plain data: stored artifacts (their metadata read
//! from the bytes), the technical measurements of a clip, the checks a clip must pass, and the frame
//! format of a job. The media work itself (encode, decode, mux) lives behind the `aiprod-media` seam.

use super::manifest::AspectRatio;
use serde::{Deserialize, Serialize};

/// A file in the artifact store: a shot clip, a final cut or a poster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// Key in the artifact store (content-addressed).
    pub key: String,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    pub size: u64,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub frame_count: u32,
    pub duration_ms: u64,
    /// RFC 6381 codec string ("avc1.42c01f").
    pub codec: String,
    pub mime_type: String,
    /// The poster (PNG) of the file.
    pub poster: Option<Poster>,
}

/// A poster image of an artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Poster {
    pub key: String,
    pub sha256: String,
    pub size: u64,
    pub mime_type: String,
}

/// What was measured on a clip's decoded frames, and which technical checks it failed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub decodable: bool,
    pub decoded_frames: u32,
    pub expected_frames: u32,
    pub duration_ms: u64,
    pub width: u32,
    pub height: u32,
    pub black_frame_ratio: f64,
    pub frozen_frame_ratio: f64,
    pub sharpness: f64,
    pub contrast: f64,
    /// Failed checks (see [`Check`]); empty when the clip passed.
    pub failures: Vec<String>,
}

impl Measurement {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// A clip that could not be read at all.
    pub fn undecodable(expected_frames: u32) -> Measurement {
        Measurement {
            expected_frames,
            failures: vec![Check::Undecodable.as_str().into()],
            ..Measurement::default()
        }
    }
}

/// The technical checks of a clip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Undecodable,
    Duration,
    Resolution,
    BlackFrames,
    FrozenFrames,
    Sharpness,
    Contrast,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Undecodable => "undecodable",
            Check::Duration => "duration",
            Check::Resolution => "resolution",
            Check::BlackFrames => "black_frames",
            Check::FrozenFrames => "frozen_frames",
            Check::Sharpness => "sharpness",
            Check::Contrast => "contrast",
        }
    }
}

/// Limits of the technical checks (config `[quality]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityLimits {
    /// Most black frames a clip may have, as a share of its frames.
    pub max_black_frame_ratio: f64,
    /// Most frozen frames (identical to the one before), as a share.
    pub max_frozen_frame_ratio: f64,
    /// Least mean sharpness (normalised Laplacian variance of luma).
    pub min_sharpness: f64,
    /// Least mean RMS contrast of luma.
    pub min_contrast: f64,
    /// Least width and height a clip may have, in pixels.
    pub min_short_side: u32,
}

impl Default for QualityLimits {
    fn default() -> Self {
        QualityLimits {
            max_black_frame_ratio: 0.5,
            max_frozen_frame_ratio: 0.5,
            min_sharpness: 0.0005,
            min_contrast: 0.02,
            min_short_side: 64,
        }
    }
}

/// What a clip is expected to be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Expected {
    pub duration_ms: u64,
    /// The exact frame size and duration, when the backend renders to ours (sandbox); provider
    /// clips need only the minimum size and at least the shot's duration.
    pub size: Option<(u32, u32)>,
}

/// Raw figures of a decoded clip, before the checks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figures {
    pub frame_count: u32,
    pub decoded_frames: u32,
    pub decode_errors: u32,
    pub fps: f64,
    pub duration_ms: u64,
    pub width: u32,
    pub height: u32,
    pub black_frame_ratio: f64,
    pub frozen_frame_ratio: f64,
    pub sharpness: f64,
    pub contrast: f64,
}

/// Applies the technical checks: a clip passes when it decodes completely, lasts the shot's
/// duration within one frame, has the expected size, is not mostly black or frozen, and is sharp
/// and contrasted enough.
pub fn check(figures: &Figures, expected: &Expected, limits: &QualityLimits) -> Measurement {
    let fps = if figures.fps.is_finite() && figures.fps > 0.0 {
        figures.fps
    } else {
        24.0
    };
    let expected_frames = (expected.duration_ms as f64 * fps / 1000.0).round() as u32;
    let mut failures = Vec::new();
    let decodable = figures.decode_errors == 0
        && figures.decoded_frames > 0
        && figures.decoded_frames == figures.frame_count;
    if !decodable {
        failures.push(Check::Undecodable);
    }
    let frame_ms = 1000.0 / fps;
    let off_ms = figures.duration_ms as f64 - expected.duration_ms as f64;
    let duration_ok = if expected.size.is_some() {
        // Our own renders: exactly the shot, within one frame.
        off_ms.abs() <= frame_ms + 0.5 && figures.decoded_frames.abs_diff(expected_frames) <= 1
    } else {
        // Providers render fixed lengths (e.g. 5 or 10 s): at least the shot, trimmed at assembly.
        off_ms >= -(frame_ms + 0.5) && figures.decoded_frames + 1 >= expected_frames
    };
    if !duration_ok {
        failures.push(Check::Duration);
    }
    let size_ok = match expected.size {
        Some((w, h)) => figures.width == w && figures.height == h,
        None => figures.width.min(figures.height) >= limits.min_short_side,
    };
    if !size_ok {
        failures.push(Check::Resolution);
    }
    if figures.black_frame_ratio > limits.max_black_frame_ratio {
        failures.push(Check::BlackFrames);
    }
    if figures.frozen_frame_ratio > limits.max_frozen_frame_ratio {
        failures.push(Check::FrozenFrames);
    }
    // Black or frozen clips are already failed; a flat frame is not also "blurry".
    if figures.sharpness < limits.min_sharpness && figures.black_frame_ratio < 1.0 {
        failures.push(Check::Sharpness);
    }
    if figures.contrast < limits.min_contrast && figures.black_frame_ratio < 1.0 {
        failures.push(Check::Contrast);
    }
    Measurement {
        decodable,
        decoded_frames: figures.decoded_frames,
        expected_frames,
        duration_ms: figures.duration_ms,
        width: figures.width,
        height: figures.height,
        black_frame_ratio: round4(figures.black_frame_ratio),
        frozen_frame_ratio: round4(figures.frozen_frame_ratio),
        sharpness: round4(figures.sharpness),
        contrast: round4(figures.contrast),
        failures: failures
            .into_iter()
            .map(|c| c.as_str().to_string())
            .collect(),
    }
}

fn round4(x: f64) -> f64 {
    if x.is_finite() {
        (x * 10_000.0).round() / 10_000.0
    } else {
        0.0
    }
}

/// The frame size of a job at a given short side: the aspect ratio's long side, both even.
pub fn frame_size(aspect: AspectRatio, short_side: u32) -> (u32, u32) {
    let even = |x: f64| ((x / 2.0).round() as u32).max(1) * 2;
    let s = f64::from(short_side);
    match aspect {
        AspectRatio::Landscape16x9 => (even(s * 16.0 / 9.0), even(s)),
        AspectRatio::Portrait9x16 => (even(s), even(s * 16.0 / 9.0)),
        AspectRatio::Square1x1 => (even(s), even(s)),
        // 4:5 portrait: the short side is the width.
        AspectRatio::Portrait4x5 => (even(s), even(s * 5.0 / 4.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn good() -> Figures {
        Figures {
            frame_count: 120,
            decoded_frames: 120,
            decode_errors: 0,
            fps: 24.0,
            duration_ms: 5000,
            width: 256,
            height: 144,
            black_frame_ratio: 0.0,
            frozen_frame_ratio: 0.05,
            sharpness: 0.02,
            contrast: 0.2,
        }
    }

    fn expected() -> Expected {
        Expected {
            duration_ms: 5000,
            size: Some((256, 144)),
        }
    }

    #[test]
    fn a_good_clip_passes_and_each_defect_names_its_check() {
        let limits = QualityLimits::default();
        let m = check(&good(), &expected(), &limits);
        assert!(m.passed(), "{:?}", m.failures);
        assert_eq!(m.expected_frames, 120);
        type Spoil = fn(&mut Figures);
        let cases: [(Spoil, &str); 6] = [
            (|f| f.decode_errors = 3, "undecodable"),
            (
                |f| {
                    f.frame_count = 48;
                    f.decoded_frames = 48;
                    f.duration_ms = 2000;
                },
                "duration",
            ),
            (|f| f.width = 320, "resolution"),
            (|f| f.black_frame_ratio = 1.0, "black_frames"),
            (|f| f.frozen_frame_ratio = 0.99, "frozen_frames"),
            (|f| f.contrast = 0.001, "contrast"),
        ];
        for (spoil, name) in cases {
            let mut f = good();
            spoil(&mut f);
            let m = check(&f, &expected(), &limits);
            assert!(
                m.failures.iter().any(|x| x == name),
                "{name}: {:?}",
                m.failures
            );
        }
    }

    #[test]
    fn frame_sizes_keep_the_aspect_and_are_even() {
        assert_eq!(frame_size(AspectRatio::Landscape16x9, 720), (1280, 720));
        assert_eq!(frame_size(AspectRatio::Portrait9x16, 720), (720, 1280));
        assert_eq!(frame_size(AspectRatio::Square1x1, 720), (720, 720));
        assert_eq!(frame_size(AspectRatio::Portrait4x5, 720), (720, 900));
        assert_eq!(frame_size(AspectRatio::Landscape16x9, 144), (256, 144));
    }

    #[test]
    fn provider_clips_may_be_longer_but_not_shorter() {
        let limits = QualityLimits::default();
        let provider = Expected {
            duration_ms: 5000,
            size: None,
        };
        let mut f = good();
        (f.frame_count, f.decoded_frames, f.duration_ms) = (240, 240, 10_000);
        assert!(
            check(&f, &provider, &limits).passed(),
            "a 10 s clip for a 5 s shot"
        );
        (f.frame_count, f.decoded_frames, f.duration_ms) = (96, 96, 4000);
        assert!(
            !check(&f, &provider, &limits).passed(),
            "a 4 s clip for a 5 s shot"
        );
        f = good();
        (f.width, f.height) = (48, 27);
        assert!(!check(&f, &provider, &limits).passed(), "too small");
    }

    proptest! {
        /// Within one frame of the duration passes; two frames off fails.
        #[test]
        fn duration_is_checked_within_one_frame(secs in 1u64..=10, off in -3i64..=3) {
            let mut f = good();
            let frames = (secs * 24) as i64 + off;
            f.frame_count = frames as u32;
            f.decoded_frames = frames as u32;
            f.duration_ms = (frames as f64 * 1000.0 / 24.0).round() as u64;
            let m = check(&f, &Expected { duration_ms: secs * 1000, size: Some((256, 144)) }, &QualityLimits::default());
            prop_assert_eq!(m.failures.iter().any(|x| x == "duration"), off.abs() > 1);
        }

        /// The verdict never panics and "passed" means no failure, whatever the figures.
        #[test]
        fn any_figures_give_a_verdict(
            frames in 0u32..500, decoded in 0u32..500, errors in 0u32..3, fps in -1.0f64..120.0,
            black in 0.0f64..=1.0, frozen in 0.0f64..=1.0, sharp in 0.0f64..1.0, contrast in 0.0f64..1.0,
        ) {
            let f = Figures { frame_count: frames, decoded_frames: decoded, decode_errors: errors, fps, duration_ms: u64::from(frames) * 40, width: 256, height: 144, black_frame_ratio: black, frozen_frame_ratio: frozen, sharpness: sharp, contrast };
            let m = check(&f, &expected(), &QualityLimits::default());
            prop_assert_eq!(m.passed(), m.failures.is_empty());
            if errors > 0 { prop_assert!(!m.passed()); }
            if black > 0.5 { prop_assert!(!m.passed()); }
        }
    }
}
