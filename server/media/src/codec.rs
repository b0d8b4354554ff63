//! OpenH264 encoder and decoder wrappers.

use crate::frame::{FrameRef, Yuv420};
use crate::mp4::{AvcConfig, Mp4File, append_annexb, avc_config};
use crate::{Format, MediaError};
use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod,
    RateControlMode, UsageType, VuiConfig,
};
use openh264::formats::{YUVSlices, YUVSource};
use shiguredo_mp4::bitstream::h264::{H264SampleEntryConfig, LengthSize, build_avc1_box};
use shiguredo_mp4::boxes::Avc1Box;

/// Encoder bitrate for a format: `bitrate_720p` scaled by pixel count, at least 200 kbit/s.
pub(crate) fn bitrate_for(format: Format, bitrate_720p: u32) -> u32 {
    let pixels = u64::from(format.width) * u64::from(format.height);
    let scaled = u64::from(bitrate_720p) * pixels / (1280 * 720);
    let fps_scaled = scaled * u64::from(format.fps.max(1)) / 24;
    u32::try_from(fps_scaled.clamp(200_000, 50_000_000)).unwrap_or(50_000_000)
}

/// One encoded frame, NAL units length-prefixed (4 bytes), without SPS/PPS.
pub(crate) struct EncodedFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

/// An H.264 encoder for one clip: Constrained Baseline from OpenH264, IDR only when asked.
pub(crate) struct H264Encoder {
    encoder: Encoder,
    format: Format,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

impl H264Encoder {
    /// `fast`: OpenH264's low complexity (animatics); otherwise medium (re-encoding provider
    /// clips). Both write the same SPS/PPS, so their samples concatenate.
    /// `bitrate_720p`: `None` for constant quality (rate control off, QP 26), or a target bitrate.
    pub fn new(format: Format, bitrate_720p: Option<u32>, fast: bool) -> Result<Self, MediaError> {
        let complexity = if fast {
            Complexity::Low
        } else {
            Complexity::Medium
        };
        format.validate()?;
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .max_frame_rate(FrameRate::from_hz(format.fps as f32))
            .skip_frames(false)
            .scene_change_detect(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(0))
            .num_threads(1)
            .vui(VuiConfig::bt709())
            .complexity(complexity);
        let config = match bitrate_720p {
            // Rate control off: OpenH264's constant QP 26.
            None => config.rate_control_mode(RateControlMode::Off),
            Some(b) => config
                .rate_control_mode(RateControlMode::Bitrate)
                .bitrate(BitRate::from_bps(bitrate_for(format, b))),
        };
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| MediaError::Encode(format!("openh264 encoder: {e}")))?;
        Ok(Self {
            encoder,
            format,
            sps: None,
            pps: None,
        })
    }

    /// Encodes one frame (which must have the encoder's size).
    pub fn encode(&mut self, frame: &Yuv420, force_idr: bool) -> Result<EncodedFrame, MediaError> {
        if frame.width != self.format.width as usize || frame.height != self.format.height as usize
        {
            return Err(MediaError::Encode(format!(
                "frame is {}x{}, encoder is {}x{}",
                frame.width, frame.height, self.format.width, self.format.height
            )));
        }
        if force_idr {
            self.encoder.force_intra_frame();
        }
        let src = YUVSlices::new(
            (&frame.y, &frame.u, &frame.v),
            (frame.width, frame.height),
            (frame.width, frame.width / 2, frame.width / 2),
        );
        let bits = self
            .encoder
            .encode(&src)
            .map_err(|e| MediaError::Encode(format!("openh264: {e}")))?;
        let mut data = Vec::new();
        let mut has_idr = false;
        for l in 0..bits.num_layers() {
            let Some(layer) = bits.layer(l) else { continue };
            for n in 0..layer.nal_count() {
                let Some(nal) = layer.nal_unit(n) else {
                    continue;
                };
                let body = strip_start_code(nal);
                let Some(&header) = body.first() else {
                    continue;
                };
                match header & 0x1f {
                    7 => keep_param_set(&mut self.sps, body, "SPS")?,
                    8 => keep_param_set(&mut self.pps, body, "PPS")?,
                    9 => {} // access unit delimiter
                    t => {
                        has_idr |= t == 5;
                        data.extend_from_slice(&(body.len() as u32).to_be_bytes());
                        data.extend_from_slice(body);
                    }
                }
            }
        }
        if data.is_empty() || bits.frame_type() == FrameType::Skip {
            return Err(MediaError::Encode("openh264 skipped a frame".into()));
        }
        if force_idr && !has_idr {
            return Err(MediaError::Encode(
                "openh264 did not emit the IDR frame asked for".into(),
            ));
        }
        Ok(EncodedFrame {
            data,
            keyframe: has_idr,
        })
    }

    /// The `avc1` sample entry (after at least one frame was encoded).
    pub fn avc1(&self) -> Result<Avc1Box, MediaError> {
        let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else {
            return Err(MediaError::Encode("no SPS/PPS yet".into()));
        };
        avc1_from(sps, pps)
    }
}

pub(crate) fn avc1_from(sps: &[u8], pps: &[u8]) -> Result<Avc1Box, MediaError> {
    build_avc1_box(
        &[sps.to_vec()],
        &[pps.to_vec()],
        &H264SampleEntryConfig {
            length_size: LengthSize::FourBytes,
        },
    )
    .map_err(|e| MediaError::Encode(format!("avc1 box: {e}")))
}

fn keep_param_set(slot: &mut Option<Vec<u8>>, body: &[u8], what: &str) -> Result<(), MediaError> {
    match slot {
        None => *slot = Some(body.to_vec()),
        Some(prev) if prev.as_slice() == body => {}
        Some(_) => {
            return Err(MediaError::Encode(format!(
                "openh264 changed the {what} mid-stream"
            )));
        }
    }
    Ok(())
}

fn strip_start_code(nal: &[u8]) -> &[u8] {
    if nal.starts_with(&[0, 0, 0, 1]) {
        &nal[4..]
    } else if nal.starts_with(&[0, 0, 1]) {
        &nal[3..]
    } else {
        nal
    }
}

/// Outcome of decoding a track.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DecodeStats {
    pub decoded: u32,
    pub errors: u32,
    /// Decoding stopped early because the callback asked to.
    pub stopped: bool,
}

/// Decodes the video track in decode order and calls `on_frame` with each picture in output
/// (display) order, until it returns `Ok(false)`.
pub(crate) fn decode_track(
    file: &Mp4File<'_>,
    mut on_frame: impl FnMut(&FrameRef<'_>) -> Result<bool, MediaError>,
) -> Result<DecodeStats, MediaError> {
    let configs: Vec<Option<AvcConfig>> = file
        .video
        .entries
        .iter()
        .map(|e| avc_config(e).ok())
        .collect();
    // The first sample's entry decides whether we can read the clip at all.
    let first_entry = file.video.samples.first().map_or(0, |s| s.entry);
    let first = file
        .video
        .entries
        .get(first_entry)
        .ok_or_else(|| MediaError::Malformed("sample without a sample description".into()))?;
    avc_config(first)?;

    let mut decoder = Decoder::with_api_config(
        OpenH264API::from_source(),
        DecoderConfig::new().flush_after_decode(Flush::NoFlush),
    )
    .map_err(|e| MediaError::Undecodable(format!("openh264 decoder: {e}")))?;
    let mut stats = DecodeStats::default();
    let mut current_entry = usize::MAX;
    let mut buf = Vec::new();
    for sample in &file.video.samples {
        buf.clear();
        if sample.entry != current_entry {
            let Some(Some(cfg)) = configs.get(sample.entry) else {
                stats.errors += 1;
                continue;
            };
            for ps in cfg.sps.iter().chain(cfg.pps.iter()) {
                buf.extend_from_slice(&[0, 0, 0, 1]);
                buf.extend_from_slice(ps);
            }
            current_entry = sample.entry;
        }
        let length_size = configs[current_entry].as_ref().map_or(4, |c| c.length_size);
        if append_annexb(file.sample_data(sample), length_size, &mut buf).is_err() {
            stats.errors += 1;
            continue;
        }
        match decoder.decode(&buf) {
            Ok(Some(pic)) => {
                stats.decoded += 1;
                if !on_frame(&frame_ref(&pic))? {
                    stats.stopped = true;
                    return Ok(stats);
                }
            }
            Ok(None) => {}
            Err(_) => stats.errors += 1,
        }
    }
    match decoder.flush_remaining() {
        Ok(pics) => {
            for pic in &pics {
                stats.decoded += 1;
                if !on_frame(&frame_ref(pic))? {
                    stats.stopped = true;
                    return Ok(stats);
                }
            }
        }
        Err(_) => stats.errors += 1,
    }
    let expected = u32::try_from(file.video.samples.len()).unwrap_or(u32::MAX);
    // Frames that never came out count as errors too (a broken stream may fail silently).
    let missing = expected.saturating_sub(stats.decoded);
    stats.errors = stats.errors.max(missing);
    Ok(stats)
}

fn frame_ref<'a>(pic: &'a openh264::decoder::DecodedYUV<'a>) -> FrameRef<'a> {
    let (width, height) = pic.dimensions();
    let (ys, us, _) = pic.strides();
    FrameRef {
        width,
        height,
        y: pic.y(),
        u: pic.u(),
        v: pic.v(),
        y_stride: ys,
        uv_stride: us,
    }
}
