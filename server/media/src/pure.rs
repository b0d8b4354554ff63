//! The pure-Rust implementation of [`Media`].

use crate::animatic::Renderer;
use crate::codec::{DecodeStats, EncodedFrame, H264Encoder, decode_track};
use crate::frame::{Fitter, FrameRef, Yuv420, scale_rgb};
use crate::metrics::{Accumulator, frame_stats};
use crate::mp4::{self, Mp4File, MuxSample, avc_config, mux_h264, nal_types};
use crate::{Animatic, ClipInfo, Defect, Format, Measurement, Media, MediaError, frames_for};
use shiguredo_mp4::boxes::{Avc1Box, SampleEntry};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

/// Longest clip the assembler re-encodes (1 hour).
pub const MAX_CLIP_MS: u64 = 3_600_000;
/// Longest mean frame duration the assembler re-encodes (a still lasting 10 s).
pub const MAX_SAMPLE_MS: u64 = 10_000;

/// A typical bitrate at 1280×720 for [`PureMedia::with_bitrate`] (scaled by pixel count and fps
/// for other formats).
pub const DEFAULT_BITRATE_720P: u32 = 1_500_000;

/// Media in pure Rust (plus OpenH264's bundled C++): nothing to install.
///
/// The default encodes at constant quality (OpenH264's rate control off, QP 26): a 10 s animatic
/// is about 2 Mbit/s (2.5 MB) at 720p, 0.9 Mbit/s at 360p, 0.26 Mbit/s at 144p. [`PureMedia::with_bitrate`] targets a
/// bitrate instead; OpenH264 then prints one warning line to stderr per encoder it opens (frame
/// skipping is off so that no frame is ever dropped, and it logs that before its log level can be
/// set).
pub struct PureMedia {
    /// `None`: constant quality.
    bitrate_720p: Option<u32>,
    /// The `avc1` entry a fresh encoder writes for a format (the copy path's reference).
    reference: Mutex<HashMap<Format, Avc1Box>>,
}

impl Default for PureMedia {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PureMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PureMedia")
            .field("bitrate_720p", &self.bitrate_720p)
            .finish()
    }
}

/// Runs `f`, turning a panic (a bug on some malformed input) into an error instead of unwinding
/// into the caller.
fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, MediaError>) -> Result<T, MediaError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            Err(MediaError::Malformed(format!(
                "{what}: internal error: {msg}"
            )))
        }
    }
}

impl PureMedia {
    /// Constant quality (rate control off, QP 26), the default.
    pub fn new() -> Self {
        Self {
            bitrate_720p: None,
            reference: Mutex::new(HashMap::new()),
        }
    }

    /// Targets `bitrate_720p` bit/s at 1280×720 and 24 fps instead; other formats scale it by pixel
    /// count and fps (at least 200 kbit/s). E.g. [`DEFAULT_BITRATE_720P`].
    pub fn with_bitrate(bitrate_720p: u32) -> Self {
        Self {
            bitrate_720p: Some(bitrate_720p.max(50_000)),
            reference: Mutex::new(HashMap::new()),
        }
    }

    fn encoder(&self, format: Format, fast: bool) -> Result<H264Encoder, MediaError> {
        H264Encoder::new(format, self.bitrate_720p, fast)
    }

    /// The sample entry our encoder produces for `format` (cached).
    fn reference_avc1(&self, format: Format) -> Result<Avc1Box, MediaError> {
        if let Some(a) = self
            .reference
            .lock()
            .ok()
            .and_then(|m| m.get(&format).cloned())
        {
            return Ok(a);
        }
        let mut enc = self.encoder(format, false)?;
        enc.encode(
            &Yuv420::black(format.width as usize, format.height as usize),
            true,
        )?;
        let avc1 = enc.avc1()?;
        if let Ok(mut m) = self.reference.lock() {
            m.insert(format, avc1.clone());
        }
        Ok(avc1)
    }

    fn render(&self, spec: &Animatic<'_>, defect: Option<Defect>) -> Result<Vec<u8>, MediaError> {
        let format = spec.format;
        format.validate()?;
        if spec.duration_ms > MAX_CLIP_MS {
            return Err(MediaError::Encode(format!(
                "{} ms: animatics last at most {MAX_CLIP_MS} ms",
                spec.duration_ms
            )));
        }
        let frames = frames_for(spec.duration_ms, format.fps);
        if frames == 0 {
            return Err(MediaError::Encode(format!(
                "{} ms at {} fps is shorter than one frame",
                spec.duration_ms, format.fps
            )));
        }
        let (w, h) = (format.width as usize, format.height as usize);
        let mut enc = self.encoder(format, true)?;
        let timescale = format.fps * 1000;
        // Total duration in ticks: exact for complete clips, whole frames for a truncated one.
        let (count, total_ticks) = match defect {
            Some(Defect::Truncated) => {
                let n = ((u64::from(frames) * 2 + 2) / 5).clamp(1, u64::from(frames)) as u32;
                let n = if frames > 1 { n.min(frames - 1) } else { n };
                (n, u64::from(n) * 1000)
            }
            _ => (frames, spec.duration_ms * u64::from(format.fps)),
        };
        let mut encoded: Vec<EncodedFrame> = Vec::with_capacity(count as usize);
        match defect {
            Some(Defect::Black) | Some(Defect::Undecodable) => {
                let black = Yuv420::black(w, h);
                for i in 0..count {
                    encoded.push(enc.encode(&black, i == 0)?);
                }
            }
            Some(Defect::Frozen) => {
                let mut r = Renderer::new(spec, frames)?;
                let still = Yuv420::from_rgba(r.render(0), w, h);
                for i in 0..count {
                    encoded.push(enc.encode(&still, i == 0)?);
                }
            }
            None | Some(Defect::Truncated) => {
                let mut r = Renderer::new(spec, frames)?;
                let mut yuv = Yuv420::black(w, h);
                for i in 0..count {
                    yuv.fill_from_rgba(r.render(i));
                    encoded.push(enc.encode(&yuv, i == 0)?);
                }
            }
        }
        let avc1 = enc.avc1()?;
        if defect == Some(Defect::Undecodable) {
            scramble(&mut encoded, spec.seed);
        }
        let durations = frame_durations(count, total_ticks);
        let samples: Vec<MuxSample<'_>> = encoded
            .iter()
            .zip(&durations)
            .map(|(f, d)| MuxSample {
                data: &f.data,
                duration: *d,
                keyframe: f.keyframe,
            })
            .collect();
        mux_h264(&avc1, timescale, &samples)
    }

    fn measure_file(&self, file: &Mp4File<'_>) -> Result<Measurement, MediaError> {
        let mut acc = Accumulator::default();
        let stats = decode_track(file, |f| {
            acc.add(f.y, f.y_stride, f.width, f.height);
            Ok(true)
        })?;
        let (black, frozen, sharpness, contrast) = acc.finish();
        Ok(Measurement {
            info: file.info(),
            decoded_frames: stats.decoded,
            decode_errors: stats.errors,
            black_frame_ratio: black,
            frozen_frame_ratio: frozen,
            sharpness,
            contrast,
        })
    }

    fn poster_png(&self, file: &Mp4File<'_>, max_width: u32) -> Result<Vec<u8>, MediaError> {
        let middle = file.video.samples.len() / 2;
        let mut first: Option<Yuv420> = None;
        let mut chosen: Option<Yuv420> = None;
        let mut seen = 0usize;
        let stats = decode_track(file, |f| {
            seen += 1;
            let s = frame_stats(f.y, f.y_stride, f.width, f.height);
            if !s.black && s.contrast > 0.01 {
                chosen = Some(f.to_owned_even());
                return Ok(false);
            }
            if first.is_none() {
                first = Some(f.to_owned_even());
            }
            Ok(seen <= middle)
        })?;
        let frame = chosen.or(first).ok_or_else(|| {
            MediaError::Undecodable(format!(
                "no frame could be decoded ({} errors)",
                stats.errors
            ))
        })?;
        encode_png(&frame, max_width)
    }

    /// Clips that can be copied as they are: in `format`, our parameter sets, an IDR first.
    fn copyable(&self, file: &Mp4File<'_>, format: Format, reference: &Avc1Box) -> bool {
        let v = &file.video;
        let SampleEntry::Avc1(avc1) = &v.entries[0] else {
            return false;
        };
        v.entries.len() == 1
            && avc1.avcc_box.sps_list == reference.avcc_box.sps_list
            && avc1.avcc_box.pps_list == reference.avcc_box.pps_list
            && avc1.avcc_box.length_size_minus_one.get() == 3
            && (v.width, v.height) == (format.width, format.height)
            && v.timescale == format.fps * 1000
            && v.typical_delta == 1000
            && v.samples.iter().all(|s| s.cto == 0 && s.duration > 0)
            && v.samples.first().is_some_and(|s| {
                s.keyframe && nal_types(file.sample_data(s), 4).is_some_and(|t| t.contains(&5))
            })
    }

    fn assemble_clips(
        &self,
        clips: &[&[u8]],
        max_ms: &[Option<u64>],
        format: Format,
    ) -> Result<Vec<u8>, MediaError> {
        format.validate()?;
        if clips.is_empty() {
            return Err(MediaError::Encode("nothing to assemble: no clips".into()));
        }
        let files = clips
            .iter()
            .enumerate()
            .map(|(i, c)| mp4::parse(c).map_err(|e| prefix(i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let reference = self.reference_avc1(format)?;
        let mut segments: Vec<Segment<'_>> = Vec::with_capacity(files.len());
        for (i, file) in files.iter().enumerate() {
            let max = max_ms.get(i).copied().flatten();
            if self.copyable(file, format, &reference) {
                // Our own clips have no B-frames: the first N samples are a complete clip.
                let keep = max.map_or(usize::MAX, |m| frames_for(m, format.fps).max(1) as usize);
                segments.push(Segment::Copy(file, keep));
            } else {
                let frames = self
                    .reencode(file, format, &reference, max)
                    .map_err(|e| prefix(i, e))?;
                segments.push(Segment::Encoded(frames));
            }
        }
        let mut samples = Vec::new();
        for seg in &segments {
            match seg {
                Segment::Copy(file, keep) => {
                    for s in file.video.samples.iter().take(*keep) {
                        samples.push(MuxSample {
                            data: file.sample_data(s),
                            duration: s.duration,
                            keyframe: s.keyframe,
                        });
                    }
                }
                Segment::Encoded(frames) => {
                    for (f, d) in frames {
                        samples.push(MuxSample {
                            data: &f.data,
                            duration: *d,
                            keyframe: f.keyframe,
                        });
                    }
                }
            }
        }
        mux_h264(&reference, format.fps * 1000, &samples)
    }

    /// Decodes a clip, fits it into `format` and re-encodes it: `frames_for(duration)` frames, an
    /// IDR first, the nearest source frame for each output time.
    fn reencode(
        &self,
        file: &Mp4File<'_>,
        format: Format,
        reference: &Avc1Box,
        max_ms: Option<u64>,
    ) -> Result<Vec<(EncodedFrame, u32)>, MediaError> {
        let duration_ms = file.duration_ms().min(max_ms.unwrap_or(u64::MAX));
        let samples = file.video.samples.len() as u64;
        if duration_ms > MAX_CLIP_MS || duration_ms > samples * MAX_SAMPLE_MS {
            return Err(MediaError::Malformed(format!(
                "{samples} frames lasting {duration_ms} ms (at most {MAX_CLIP_MS} ms per clip and \
                 {MAX_SAMPLE_MS} ms per frame are re-encoded)"
            )));
        }
        let n = frames_for(duration_ms, format.fps).max(1);
        let total_ticks = (duration_ms * u64::from(format.fps)).max(u64::from(n - 1) * 1000 + 1);
        let ts_src = u128::from(file.video.timescale);
        let fps = u128::from(format.fps);
        // Presentation times of the decoded frames (display order), relative to the first.
        let mut pts: Vec<i128> = {
            let mut dts = 0i128;
            file.video
                .samples
                .iter()
                .map(|s| {
                    let p = dts + i128::from(s.cto);
                    dts += i128::from(s.duration);
                    p
                })
                .collect()
        };
        pts.sort_unstable();
        let p0 = pts.first().copied().unwrap_or(0);
        let (w, h) = (format.width as usize, format.height as usize);
        let mut enc = self.encoder(format, false)?;
        let mut out: Vec<EncodedFrame> = Vec::with_capacity(n as usize);
        let mut current = Yuv420::black(w, h);
        let mut have_current = false;
        let mut fitter: Option<Fitter> = None;
        let mut k = 0usize;
        let mut emit = |frame: &Yuv420, out: &mut Vec<EncodedFrame>| -> Result<(), MediaError> {
            let first = out.is_empty();
            out.push(enc.encode(frame, first)?);
            Ok(())
        };
        let stats: DecodeStats = decode_track(file, |f: &FrameRef<'_>| {
            // Source frame k applies from output index j when pts_k ≤ (j + ½) / fps.
            let rel = pts.get(k).map_or(i128::MAX, |p| p - p0).max(0) as u128;
            k += 1;
            if have_current {
                while (out.len() as u32) < n && rel * fps * 2 > (2 * out.len() as u128 + 1) * ts_src
                {
                    emit(&current, &mut out)?;
                }
            }
            if (out.len() as u32) >= n {
                return Ok(false);
            }
            if !fitter
                .as_ref()
                .is_some_and(|ft| ft.matches(f.width, f.height))
            {
                fitter = Some(Fitter::new(f.width & !1, f.height & !1, w, h));
            }
            if let Some(ft) = fitter.as_mut() {
                let even = FrameRef {
                    width: f.width & !1,
                    height: f.height & !1,
                    ..*f
                };
                ft.fit(&even, &mut current);
            }
            have_current = true;
            Ok(true)
        })?;
        if !have_current {
            return Err(MediaError::Undecodable(format!(
                "no frame could be decoded ({} errors)",
                stats.errors
            )));
        }
        if stats.errors > 0 && !stats.stopped {
            return Err(MediaError::Undecodable(format!(
                "{} of {} samples failed to decode",
                stats.errors,
                file.video.samples.len()
            )));
        }
        while (out.len() as u32) < n {
            emit(&current, &mut out)?;
        }
        match enc.avc1() {
            Ok(a)
                if a.avcc_box.sps_list == reference.avcc_box.sps_list
                    && a.avcc_box.pps_list == reference.avcc_box.pps_list => {}
            _ => {
                return Err(MediaError::Encode(
                    "the encoder's parameter sets differ between clips".into(),
                ));
            }
        }
        let durations = frame_durations(n, total_ticks);
        Ok(out.into_iter().zip(durations).collect())
    }
}

enum Segment<'a> {
    /// A clip copied sample by sample: its first N samples.
    Copy(&'a Mp4File<'a>, usize),
    Encoded(Vec<(EncodedFrame, u32)>),
}

fn prefix(i: usize, e: MediaError) -> MediaError {
    let p = |m: String| format!("clip {}: {m}", i + 1);
    match e {
        MediaError::Malformed(m) => MediaError::Malformed(p(m)),
        MediaError::Undecodable(m) => MediaError::Undecodable(p(m)),
        MediaError::Unsupported(m) => MediaError::Unsupported(p(m)),
        MediaError::Encode(m) => MediaError::Encode(p(m)),
        MediaError::Ffmpeg(m) => MediaError::Ffmpeg(p(m)),
    }
}

/// `n` frame durations of 1000 ticks, the last one adjusted so that they add up to `total`.
pub(crate) fn frame_durations(n: u32, total: u64) -> Vec<u32> {
    let mut d = vec![1000u32; n as usize];
    if let Some(last) = d.last_mut() {
        let rest = total.saturating_sub(u64::from(n - 1) * 1000).max(1);
        *last = u32::try_from(rest).unwrap_or(u32::MAX);
    }
    d
}

/// Replaces every sample's payload by deterministic garbage behind a valid NAL framing.
fn scramble(frames: &mut [EncodedFrame], seed: u64) {
    let mut state = seed ^ 0xbad_c0de;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for f in frames {
        let len = 48 + (next() % 160) as usize;
        let mut data = Vec::with_capacity(len + 4);
        data.extend_from_slice(&(len as u32).to_be_bytes());
        // A non-IDR slice header byte (nal_ref_idc 2, type 1) followed by noise.
        data.push(0x41);
        while data.len() < len + 4 {
            data.extend_from_slice(&next().to_le_bytes());
        }
        data.truncate(len + 4);
        f.data = data;
    }
}

/// PNG of a frame, scaled down to at most `max_width` (0 = as is).
fn encode_png(frame: &Yuv420, max_width: u32) -> Result<Vec<u8>, MediaError> {
    let rgb = frame.as_ref().to_rgb();
    let (w, h) = (frame.width, frame.height);
    let (dw, dh) = if max_width > 0 && w > max_width as usize {
        let dw = max_width as usize;
        (dw, ((h * dw + w / 2) / w).max(1))
    } else {
        (w, h)
    };
    let rgb = scale_rgb(&rgb, w, h, dw, dh);
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, dw as u32, dh as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc
            .write_header()
            .map_err(|e| MediaError::Encode(format!("png: {e}")))?;
        writer
            .write_image_data(&rgb)
            .map_err(|e| MediaError::Encode(format!("png: {e}")))?;
    }
    Ok(out)
}

impl Media for PureMedia {
    fn name(&self) -> &'static str {
        "pure"
    }

    fn render_animatic(
        &self,
        spec: &Animatic<'_>,
        defect: Option<Defect>,
    ) -> Result<Vec<u8>, MediaError> {
        guard("render", || self.render(spec, defect))
    }

    fn probe(&self, clip: &[u8]) -> Result<ClipInfo, MediaError> {
        guard("probe", || Ok(mp4::parse(clip)?.info()))
    }

    fn measure(&self, clip: &[u8]) -> Result<Measurement, MediaError> {
        guard("measure", || {
            let file = mp4::parse(clip)?;
            self.measure_file(&file)
        })
    }

    fn assemble(&self, clips: &[&[u8]], format: Format) -> Result<Vec<u8>, MediaError> {
        guard("assemble", || self.assemble_clips(clips, &[], format))
    }

    fn assemble_trimmed(
        &self,
        clips: &[&[u8]],
        max_ms: &[Option<u64>],
        format: Format,
    ) -> Result<Vec<u8>, MediaError> {
        guard("assemble", || self.assemble_clips(clips, max_ms, format))
    }

    fn poster(&self, clip: &[u8], max_width: u32) -> Result<Vec<u8>, MediaError> {
        guard("poster", || {
            let file = mp4::parse(clip)?;
            self.poster_png(&file, max_width)
        })
    }
}

impl PureMedia {
    /// Whether every clip is in `format` with our encoder's parameters, so that `assemble` copies
    /// samples without re-encoding anything.
    pub fn all_copyable(&self, clips: &[&[u8]], format: Format) -> bool {
        guard("assemble", || {
            if format.validate().is_err() || clips.is_empty() {
                return Ok(false);
            }
            let reference = self.reference_avc1(format)?;
            Ok(clips
                .iter()
                .all(|c| mp4::parse(c).is_ok_and(|f| self.copyable(&f, format, &reference))))
        })
        .unwrap_or(false)
    }

    /// Whether the pure decoder can read this clip (H.264 8-bit 4:2:0 in `avc1`); the error says why
    /// not.
    pub fn can_decode(&self, clip: &[u8]) -> Result<(), MediaError> {
        guard("probe", || {
            let file = mp4::parse(clip)?;
            for e in &file.video.entries {
                avc_config(e)?;
            }
            Ok(())
        })
    }
}
