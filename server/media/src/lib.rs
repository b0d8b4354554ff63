//! AIPROD's media seam: sandbox animatics, H.264 encode/decode, MP4 mux/probe/concat and posters.
//!
//! Everything is synchronous and CPU-bound (call it from `spawn_blocking`). Two implementations of
//! [`Media`] exist:
//!
//! * [`PureMedia`] (the default) needs nothing installed: drawing with `tiny-skia` + `ab_glyph` and the
//!   bundled DejaVu Sans font, H.264 with OpenH264 (its C++ source is compiled into the binary),
//!   MP4 boxes with `shiguredo_mp4`, posters with `png`.
//! * [`FfmpegMedia`] runs the `ffmpeg` command line for [`Media::assemble`] (any input codec, audio kept)
//!   and for reading clips OpenH264 cannot decode; everything else is delegated to [`PureMedia`].
//!
//! # Formats and limits
//!
//! * **Output** is always one H.264 video track in an MP4 file: `avc1` sample entry (parameter sets
//!   out of band, 4-byte NAL lengths), yuv420p 8-bit, Constrained Baseline profile from OpenH264,
//!   BT.709 limited range signalled in the VUI, constant quality (QP 26) unless
//!   [`PureMedia::with_bitrate`] asks for a bitrate, the index (`moov`) before the media data (`mdat`,
//!   "faststart"), track timescale `fps × 1000`, no timestamps or other varying metadata (same
//!   inputs → same bytes). Frame `i` lasts 1000 ticks, the last one is stretched or shortened by
//!   less than half a frame so that the duration is exact (`duration_ms` of an animatic, the sum of
//!   the clips' durations for a cut). Sizes must be even, 16..=3840 × 16..=2160 (OpenH264's limit),
//!   1..=120 fps.
//! * **Input** ([`Media::probe`] reads any ISO-BMFF/MP4 or QuickTime file with a `moov` and a video
//!   track, H.264/HEVC/AV1/VP9 alike, without decoding). The pure decoder reads **H.264 8-bit 4:2:0**
//!   (Baseline, Main, High; B-frames included) in an `avc1` sample entry. It cannot read 10-bit or
//!   4:2:2/4:4:4 H.264, HEVC (`hvc1`/`hev1`), AV1, VP8/VP9, `avc3` (in-band parameter sets) or
//!   fragmented MP4: those give [`MediaError::Unsupported`], whose message names the ffmpeg
//!   assembler ([`FfmpegMedia`]) as the way to read them. Interlaced (PAFF/MBAFF) H.264 is not
//!   supported by OpenH264 either (decode errors). Edit lists are ignored (presentation starts at
//!   the first frame). The assembler re-encodes clips of at most [`MAX_CLIP_MS`] whose frames last
//!   [`MAX_SAMPLE_MS`] or less on average (a damaged header cannot make it write hours of video).
//! * **Audio**: the pure assembler drops audio (there is no pure-Rust AAC encoder); [`ClipInfo::has_audio`]
//!   tells whether a clip had any. The ffmpeg assembler keeps it (AAC, silence under clips without).
//! * **Assembly** ([`Media::assemble`]): clips already in the target format and encoded by this crate
//!   with identical parameters (same SPS/PPS as a fresh encoder for that format produces, sync sample
//!   with an IDR first) are concatenated by copying samples; any other clip is decoded, scaled with
//!   letterbox/pillarbox bars (black), conformed to the target fps by dropping/duplicating frames
//!   (nearest frame) and re-encoded with the same encoder parameters, so copied and re-encoded clips
//!   share one sample entry. Each clip starts with an IDR frame, there are no other keyframes, and a
//!   clip lasts `frames_for(clip duration, fps)` frames.
//! * **Measurement** ([`Media::measure`], all on the luma plane of every decoded frame):
//!   * a frame is *black* when ≥ 98 % of its luma samples are < 32 (like ffmpeg `blackdetect` on
//!     limited-range video);
//!   * a frame (after the first) is *frozen* when its mean absolute luma difference to the previous
//!     frame is below 0.255 levels (ffmpeg `freezedetect`'s default −60 dB noise floor);
//!   * `sharpness` is the mean over frames of `v / (v + 100)` where `v` is the variance of the
//!     4-neighbour Laplacian of luma: 0 for a flat or blurred picture, 0.5 when the Laplacian's
//!     standard deviation is 10 levels, → 1 for dense fine detail (animatics measure 0.75–0.98);
//!   * `contrast` is the mean over frames of the RMS contrast, the standard deviation of luma / 255.
//!
//!   Animatics are drawn to stay clear of these: never black, never frozen, sharpness ≥
//!   [`ANIMATIC_MIN_SHARPNESS`] and contrast ≥ [`ANIMATIC_MIN_CONTRAST`] (checked by the tests over
//!   palettes including all-black and all-white).
//! * **Animatics** last at most [`MAX_CLIP_MS`]; text is DejaVu Sans (Latin, Greek, Cyrillic and
//!   more; characters it lacks, e.g. CJK or emoji, are drawn as boxes), wrapped and shrunk to fit,
//!   cut with "…" beyond 2,000 characters or the box. A sweep band crossing the picture, a
//!   progress bar and a timecode move in every frame, whatever the camera move.
//! * **Posters** are PNG (RGB, 8-bit): the first decoded frame that is not black (searching at most
//!   up to the middle of the clip, the first keyframe otherwise), scaled down to `max_width`.
//!
//! Licensing: OpenH264 built from source is not covered by Cisco's binary patent licence (keep the
//! codec behind this seam). The DejaVu Sans font is embedded; its licence is [`font_license`]
//! (`server/media/fonts/LICENSE-DejaVu.txt`).

#![warn(missing_docs)]

mod animatic;
mod codec;
mod ffmpeg;
mod frame;
mod metrics;
mod mp4;
mod pure;

pub use ffmpeg::FfmpegMedia;
pub use pure::{DEFAULT_BITRATE_720P, MAX_CLIP_MS, MAX_SAMPLE_MS, PureMedia};

/// Frame size and rate of a video. Width and height must be even.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Format {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

impl Format {
    /// Checks that this format can be encoded: even sizes, 16..=3840 × 16..=2160 (or the portrait
    /// equivalent, 2160 × 3840 at most), 1..=120 fps.
    pub fn validate(&self) -> Result<(), MediaError> {
        let Format { width, height, fps } = *self;
        let (long, short) = (width.max(height), width.min(height));
        if width % 2 != 0 || height % 2 != 0 {
            return Err(MediaError::Encode(format!(
                "{width}x{height}: width and height must be even"
            )));
        }
        if short < 16 || long > 3840 || short > 2160 {
            return Err(MediaError::Encode(format!(
                "{width}x{height}: sizes must be within 16..=3840 x 16..=2160"
            )));
        }
        if !(1..=120).contains(&fps) {
            return Err(MediaError::Encode(format!("{fps} fps: must be 1..=120")));
        }
        Ok(())
    }
}

/// A camera move simulated by an animatic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CameraMove {
    /// Still background (a light sweep, the progress bar and the timecode still move).
    Static,
    /// The background slides horizontally.
    Pan,
    /// The background scales in slowly from the centre.
    Dolly,
    /// The background scales in faster.
    Zoom,
    /// The background rotates about the centre while a foreground layer drifts the other way.
    Orbital,
}

/// One sandbox shot drawn as an animatic.
#[derive(Clone, Copy, Debug)]
pub struct Animatic<'a> {
    /// 1-based shot number.
    pub shot_number: u32,
    /// Number of shots in the job.
    pub shot_count: u32,
    /// Up to 2,000 characters: wrapped, and truncated with "…" when it does not fit.
    pub description: &'a str,
    /// Exact duration: `frames_for(duration_ms, fps)` frames, the file lasts `duration_ms`.
    pub duration_ms: u64,
    /// Simulated camera move.
    pub camera: CameraMove,
    /// Brand colours, 1–8 used (may contain black/white; empty = a default palette).
    pub palette: &'a [[u8; 3]],
    /// Frame size and rate.
    pub format: Format,
    /// Deterministic variation of the layout.
    pub seed: u64,
}

/// Sandbox failure injection: bad outputs that [`Media::measure`] must catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    /// Every frame is black.
    Black,
    /// Every frame is identical (still a valid clip of the right duration).
    Frozen,
    /// A valid MP4 holding only the first ~40 % of the frames (its header says so too).
    Truncated,
    /// A readable MP4 container whose samples are garbage: `measure` reports decode errors.
    Undecodable,
}

/// What the container says about a clip (read without decoding).
#[derive(Clone, Debug, PartialEq)]
pub struct ClipInfo {
    /// Width in pixels (after the SPS cropping for H.264).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second: track timescale / the most common sample duration.
    pub fps: f64,
    /// Number of video samples.
    pub frame_count: u32,
    /// Sum of the video sample durations, in milliseconds (rounded).
    pub duration_ms: u64,
    /// RFC 6381 codec string, e.g. "avc1.42c01f".
    pub codec: String,
    /// "video/mp4".
    pub mime_type: String,
    /// 0-based indices of the sync samples.
    pub keyframes: Vec<u32>,
    /// Whether the file has an audio track.
    pub has_audio: bool,
    /// Whether the `moov` box comes before the first `mdat` box.
    pub faststart: bool,
}

/// What decoding every frame of a clip showed. See the crate docs for the exact definitions.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// The container's view.
    pub info: ClipInfo,
    /// Frames the decoder produced.
    pub decoded_frames: u32,
    /// Samples that failed to decode, or the frames that never came out of the decoder if more.
    pub decode_errors: u32,
    /// Share of decoded frames that are black (≥ 98 % of luma samples < 32).
    pub black_frame_ratio: f64,
    /// Share of frames after the first whose mean absolute luma difference to the previous frame is
    /// below 0.255.
    pub frozen_frame_ratio: f64,
    /// Mean over frames of `v / (v + 100)`, `v` the variance of the luma Laplacian (0..1).
    pub sharpness: f64,
    /// Mean over frames of the standard deviation of luma / 255 (0..1).
    pub contrast: f64,
}

/// Why a media operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Not a readable MP4 (bad or truncated boxes, no video track, samples outside the file).
    #[error("not a readable MP4: {0}")]
    Malformed(String),
    /// The container is fine but the video cannot be decoded.
    #[error("cannot decode: {0}")]
    Undecodable(String),
    /// A codec or variant the pure decoder cannot read (HEVC, 10-bit, 4:4:4, …); the message says
    /// that the ffmpeg assembler can.
    #[error("unsupported input: {0}")]
    Unsupported(String),
    /// Encoding (or the requested output format) failed.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The ffmpeg command line failed.
    #[error("ffmpeg: {0}")]
    Ffmpeg(String),
}

/// The media seam. Object-safe; `Send + Sync`.
pub trait Media: Send + Sync {
    /// "pure" or "ffmpeg".
    fn name(&self) -> &'static str;
    /// Renders a sandbox shot as an H.264 MP4 of exactly `frames_for(duration_ms, fps)` frames
    /// (or a defective one).
    fn render_animatic(
        &self,
        spec: &Animatic<'_>,
        defect: Option<Defect>,
    ) -> Result<Vec<u8>, MediaError>;
    /// Reads the container (fast, no decoding).
    fn probe(&self, clip: &[u8]) -> Result<ClipInfo, MediaError>;
    /// Decodes every frame and measures it.
    fn measure(&self, clip: &[u8]) -> Result<Measurement, MediaError>;
    /// The final cut: clips in order, normalised to `format` (scale + letterbox/pad, fps conform by
    /// dropping/duplicating frames), one H.264 track, yuv420p, index at the front, a keyframe at each
    /// clip start. Clips already in `format` and encoded by us with identical parameters (same
    /// SPS/PPS) are concatenated by copying samples, without re-encoding; anything else is decoded
    /// and re-encoded.
    fn assemble(&self, clips: &[&[u8]], format: Format) -> Result<Vec<u8>, MediaError>;
    /// [`Media::assemble`] with clip `i` cut to at most `max_ms[i]` milliseconds when that is set
    /// (missing entries: not cut). Providers render fixed lengths (Runway 5 or 10 s, Veo 4–8 s):
    /// the cut keeps each shot's planned duration.
    fn assemble_trimmed(
        &self,
        clips: &[&[u8]],
        max_ms: &[Option<u64>],
        format: Format,
    ) -> Result<Vec<u8>, MediaError>;
    /// A poster: a representative frame as PNG, scaled to at most `max_width` px wide
    /// (0 = the clip's width).
    fn poster(&self, clip: &[u8], max_width: u32) -> Result<Vec<u8>, MediaError>;
}

/// Number of frames of a clip lasting `duration_ms` at `fps`: `duration_ms × fps / 1000`, rounded
/// to the nearest integer (halves up).
pub fn frames_for(duration_ms: u64, fps: u32) -> u32 {
    let frames = (u128::from(duration_ms) * u128::from(fps) + 500) / 1000;
    u32::try_from(frames).unwrap_or(u32::MAX)
}

/// The MIME type of every clip this crate writes: "video/mp4".
pub fn mime_type() -> &'static str {
    MP4_MIME_TYPE
}

/// The licence of the DejaVu Sans font embedded in the binary (Bitstream Vera licence + public
/// domain changes), to ship with it, e.g. in a third-party notices file.
pub fn font_license() -> &'static str {
    include_str!("../fonts/LICENSE-DejaVu.txt")
}

/// The MIME type of posters: "image/png".
pub fn poster_mime_type() -> &'static str {
    "image/png"
}

/// The file extension of posters: "png".
pub fn poster_extension() -> &'static str {
    "png"
}

/// The file extension of clips: "mp4".
pub fn clip_extension() -> &'static str {
    "mp4"
}

pub(crate) const MP4_MIME_TYPE: &str = "video/mp4";

/// Sharpness every animatic reaches in [`Media::measure`] (tested over palettes and moves).
pub const ANIMATIC_MIN_SHARPNESS: f64 = 0.3;
/// Contrast every animatic reaches in [`Media::measure`] (tested over palettes and moves).
pub const ANIMATIC_MIN_CONTRAST: f64 = 0.08;
