//! MP4 reading (top-level box scan + `moov` through `shiguredo_mp4`) and writing (faststart).

use crate::{ClipInfo, MP4_MIME_TYPE, MediaError};
use shiguredo_mp4::aux::SampleTableAccessor;
use shiguredo_mp4::boxes::{Avc1Box, HdlrBox, MoovBox, SampleEntry};
use shiguredo_mp4::mux::{
    Mp4FileMuxer, Mp4FileMuxerOptions, Sample, estimate_maximum_moov_box_size,
};
use shiguredo_mp4::{Decode, TrackKind};
use std::num::NonZeroU32;

/// One video sample of a parsed file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SampleRef {
    pub offset: usize,
    pub size: usize,
    pub duration: u32,
    pub keyframe: bool,
    /// Composition time offset (PTS − DTS) in track ticks.
    pub cto: i64,
    /// Index into [`VideoTrack::entries`].
    pub entry: usize,
}

/// The first video track of a file.
#[derive(Debug)]
pub(crate) struct VideoTrack {
    pub entries: Vec<SampleEntry>,
    pub timescale: u32,
    pub samples: Vec<SampleRef>,
    /// Sum of the sample durations, in ticks.
    pub total_ticks: u64,
    /// The most common sample duration, in ticks.
    pub typical_delta: u32,
    pub width: u32,
    pub height: u32,
    pub codec: String,
}

/// A parsed MP4 file (borrowing its bytes).
#[derive(Debug)]
pub(crate) struct Mp4File<'a> {
    pub data: &'a [u8],
    pub faststart: bool,
    pub has_audio: bool,
    pub video: VideoTrack,
}

impl Mp4File<'_> {
    pub fn sample_data(&self, s: &SampleRef) -> &[u8] {
        &self.data[s.offset..s.offset + s.size]
    }

    pub fn duration_ms(&self) -> u64 {
        let v = &self.video;
        let ms = (u128::from(v.total_ticks) * 1000 + u128::from(v.timescale) / 2)
            / u128::from(v.timescale);
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    pub fn info(&self) -> ClipInfo {
        let v = &self.video;
        let fps = if v.typical_delta == 0 {
            0.0
        } else {
            f64::from(v.timescale) / f64::from(v.typical_delta)
        };
        ClipInfo {
            width: v.width,
            height: v.height,
            fps,
            frame_count: u32::try_from(v.samples.len()).unwrap_or(u32::MAX),
            duration_ms: self.duration_ms(),
            codec: v.codec.clone(),
            mime_type: MP4_MIME_TYPE.to_string(),
            keyframes: v
                .samples
                .iter()
                .enumerate()
                .filter(|(_, s)| s.keyframe)
                .map(|(i, _)| i as u32)
                .collect(),
            has_audio: self.has_audio,
            faststart: self.faststart,
        }
    }
}

fn malformed(msg: impl Into<String>) -> MediaError {
    MediaError::Malformed(msg.into())
}

struct TopLevel {
    moov: Option<(usize, usize)>,
    first_mdat: Option<usize>,
}

/// Walks the top-level boxes, checking that each one lies inside the data.
fn scan_top_level(data: &[u8]) -> Result<TopLevel, MediaError> {
    if data.is_empty() {
        return Err(malformed("empty input"));
    }
    let mut pos = 0usize;
    let mut out = TopLevel {
        moov: None,
        first_mdat: None,
    };
    let mut count = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < 8 {
            return Err(malformed(format!(
                "truncated box header at byte {pos} ({} bytes left)",
                rest.len()
            )));
        }
        let size32 = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let kind: [u8; 4] = [rest[4], rest[5], rest[6], rest[7]];
        if !kind.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return Err(malformed(format!(
                "no MP4 box at byte {pos} (type bytes {kind:02x?})"
            )));
        }
        let (size, header) = match size32 {
            0 => (rest.len(), 8),
            1 => {
                if rest.len() < 16 {
                    return Err(malformed(format!(
                        "truncated 64-bit box header at byte {pos}"
                    )));
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&rest[8..16]);
                let s = u64::from_be_bytes(b);
                (usize::try_from(s).unwrap_or(usize::MAX), 16)
            }
            s => (s as usize, 8),
        };
        let name = String::from_utf8_lossy(&kind).into_owned();
        if size < header {
            return Err(malformed(format!(
                "box '{name}' at byte {pos} has an invalid size {size}"
            )));
        }
        if size > rest.len() {
            return Err(malformed(format!(
                "truncated: box '{name}' at byte {pos} declares {size} bytes but only {} remain",
                rest.len()
            )));
        }
        if count == 0
            && !matches!(
                &kind,
                b"ftyp"
                    | b"moov"
                    | b"mdat"
                    | b"free"
                    | b"skip"
                    | b"wide"
                    | b"styp"
                    | b"pnot"
                    | b"uuid"
            )
        {
            return Err(malformed(format!(
                "does not start with an MP4 box (found '{name}')"
            )));
        }
        match &kind {
            b"moov" if out.moov.is_none() => out.moov = Some((pos, size)),
            b"mdat" if out.first_mdat.is_none() => out.first_mdat = Some(pos),
            _ => {}
        }
        pos += size;
        count += 1;
    }
    Ok(out)
}

const UNSUPPORTED_HINT: &str = "configure the ffmpeg assembler (FfmpegMedia) to read it";

/// Parses the file's structure and its first video track's sample table.
pub(crate) fn parse(data: &[u8]) -> Result<Mp4File<'_>, MediaError> {
    let top = scan_top_level(data)?;
    let (moov_pos, moov_size) = top.moov.ok_or_else(|| malformed("no 'moov' box"))?;
    let faststart = top.first_mdat.is_none_or(|m| moov_pos < m);
    let (moov, _) = MoovBox::decode(&data[moov_pos..moov_pos + moov_size])
        .map_err(|e| malformed(format!("bad 'moov' box: {e}")))?;
    let has_audio = moov
        .trak_boxes
        .iter()
        .any(|t| t.mdia_box.hdlr_box.handler_type == HdlrBox::HANDLER_TYPE_SOUN);
    let fragmented = moov.mvex_box.is_some();
    let trak = moov
        .trak_boxes
        .into_iter()
        .find(|t| t.mdia_box.hdlr_box.handler_type == HdlrBox::HANDLER_TYPE_VIDE)
        .ok_or_else(|| malformed("no video track"))?;
    let timescale = trak.mdia_box.mdhd_box.timescale.get();
    let stbl = trak.mdia_box.minf_box.stbl_box;
    let entries = stbl.stsd_box.entries.clone();
    let first_entry = entries
        .first()
        .ok_or_else(|| malformed("video track without a sample description"))?;

    // Most common sample duration, straight from the stts entries.
    let mut deltas: Vec<(u32, u64)> = Vec::new();
    for e in &stbl.stts_box.entries {
        match deltas.iter_mut().find(|(d, _)| *d == e.sample_delta) {
            Some((_, n)) => *n += u64::from(e.sample_count),
            None => deltas.push((e.sample_delta, u64::from(e.sample_count))),
        }
    }
    let typical_delta = deltas
        .iter()
        .max_by_key(|(d, n)| (*n, std::cmp::Reverse(*d)))
        .map_or(0, |(d, _)| *d);

    let declared: u64 = stbl
        .stts_box
        .entries
        .iter()
        .map(|e| u64::from(e.sample_count))
        .sum();
    if declared > data.len() as u64 {
        return Err(malformed(format!(
            "{declared} samples declared in a {}-byte file",
            data.len()
        )));
    }
    let table =
        SampleTableAccessor::new(stbl).map_err(|e| malformed(format!("bad sample table: {e}")))?;
    let mut samples = Vec::with_capacity(table.sample_count() as usize);
    let mut total_ticks = 0u64;
    for s in table.samples() {
        let offset = usize::try_from(s.data_offset()).unwrap_or(usize::MAX);
        let size = s.data_size() as usize;
        if offset.checked_add(size).is_none_or(|end| end > data.len()) {
            return Err(malformed(format!(
                "sample {} ({size} bytes at {offset}) lies outside the {}-byte file (truncated?)",
                samples.len(),
                data.len()
            )));
        }
        total_ticks += u64::from(s.duration());
        samples.push(SampleRef {
            offset,
            size,
            duration: s.duration(),
            keyframe: s.is_sync_sample(),
            cto: s.composition_time_offset().unwrap_or(0),
            entry: s.chunk().sample_entry_index(),
        });
    }
    if samples.is_empty() {
        if fragmented {
            return Err(MediaError::Unsupported(format!(
                "fragmented MP4 (samples in 'moof' boxes); {UNSUPPORTED_HINT}"
            )));
        }
        return Err(malformed("the video track has no samples"));
    }

    let codec = shiguredo_mp4::codec_string::from_sample_entry(first_entry).unwrap_or_else(|_| {
        match first_entry {
            SampleEntry::Unknown(b) => b.box_type.to_string(),
            _ => "unknown".to_string(),
        }
    });
    let (mut width, mut height) = first_entry
        .video_resolution()
        .map_or((0, 0), |(w, h)| (u32::from(w), u32::from(h)));
    if let SampleEntry::Avc1(avc1) = first_entry
        && let Some(sps) = avc1.avcc_box.sps_list.first()
        && let Ok(sps) = shiguredo_mp4::bitstream::h264::parse_sps(sps)
    {
        width = u32::from(sps.width);
        height = u32::from(sps.height);
    }
    if width == 0 || height == 0 {
        width = (trak.tkhd_box.width.integer.max(0)) as u32;
        height = (trak.tkhd_box.height.integer.max(0)) as u32;
    }

    Ok(Mp4File {
        data,
        faststart,
        has_audio,
        video: VideoTrack {
            entries,
            timescale,
            samples,
            total_ticks,
            typical_delta,
            width,
            height,
            codec,
        },
    })
}

/// An H.264 sample entry the pure decoder can read, with what decoding needs.
#[derive(Debug, Clone)]
pub(crate) struct AvcConfig {
    pub length_size: usize,
    pub sps: Vec<Vec<u8>>,
    pub pps: Vec<Vec<u8>>,
}

/// Checks that a sample entry is H.264 8-bit 4:2:0 in `avc1` and returns its parameter sets.
pub(crate) fn avc_config(entry: &SampleEntry) -> Result<AvcConfig, MediaError> {
    let unsupported = |what: &str| {
        MediaError::Unsupported(format!(
            "{what}: the pure decoder (OpenH264) reads H.264 8-bit 4:2:0 only; {UNSUPPORTED_HINT}"
        ))
    };
    let avc1 = match entry {
        SampleEntry::Avc1(b) => b,
        SampleEntry::Hev1(_) | SampleEntry::Hvc1(_) => return Err(unsupported("HEVC video")),
        SampleEntry::Av01(_) => return Err(unsupported("AV1 video")),
        SampleEntry::Vp08(_) | SampleEntry::Vp09(_) => return Err(unsupported("VP8/VP9 video")),
        SampleEntry::Unknown(b) => {
            return Err(unsupported(&format!("'{}' video", b.box_type)));
        }
        _ => return Err(malformed("the video track has a non-video sample entry")),
    };
    let avcc = &avc1.avcc_box;
    if avcc.bit_depth_luma_minus8.is_some_and(|b| b.get() != 0)
        || avcc.bit_depth_chroma_minus8.is_some_and(|b| b.get() != 0)
    {
        return Err(unsupported("high bit depth (e.g. 10-bit) H.264"));
    }
    if avcc.chroma_format.is_some_and(|c| c.get() != 1) {
        return Err(unsupported("H.264 with 4:2:2/4:4:4/monochrome chroma"));
    }
    let sps = avcc
        .sps_list
        .first()
        .ok_or_else(|| MediaError::Undecodable("avcC without an SPS".into()))?;
    let parsed = shiguredo_mp4::bitstream::h264::parse_sps(sps)
        .map_err(|e| MediaError::Undecodable(format!("bad SPS: {e}")))?;
    if parsed.bit_depth_luma_minus8 != 0 || parsed.bit_depth_chroma_minus8 != 0 {
        return Err(unsupported(&format!(
            "{}-bit H.264",
            8 + parsed.bit_depth_luma_minus8
        )));
    }
    if parsed.chroma_format_idc != 1 {
        return Err(unsupported(match parsed.chroma_format_idc {
            0 => "monochrome H.264",
            2 => "4:2:2 H.264",
            _ => "4:4:4 H.264",
        }));
    }
    if avcc.pps_list.is_empty() {
        return Err(MediaError::Undecodable("avcC without a PPS".into()));
    }
    Ok(AvcConfig {
        length_size: usize::from(avcc.length_size_minus_one.get()) + 1,
        sps: avcc.sps_list.clone(),
        pps: avcc.pps_list.clone(),
    })
}

/// Appends a length-prefixed sample as Annex B (start codes). Fails on a broken NAL framing.
pub(crate) fn append_annexb(
    sample: &[u8],
    length_size: usize,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if !matches!(length_size, 1 | 2 | 4) {
        return Err(format!("invalid NAL length size {length_size}"));
    }
    let mut pos = 0;
    while pos < sample.len() {
        if sample.len() - pos < length_size {
            return Err("truncated NAL length".into());
        }
        let mut len = 0usize;
        for b in &sample[pos..pos + length_size] {
            len = (len << 8) | usize::from(*b);
        }
        pos += length_size;
        if len == 0 || len > sample.len() - pos {
            return Err(format!("NAL length {len} does not fit the sample"));
        }
        let nal = &sample[pos..pos + len];
        if nal[0] & 0x80 != 0 {
            return Err("NAL with forbidden_zero_bit set".into());
        }
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        pos += len;
    }
    Ok(())
}

/// NAL unit types of a length-prefixed sample (None when the framing is broken).
pub(crate) fn nal_types(sample: &[u8], length_size: usize) -> Option<Vec<u8>> {
    let mut pos = 0;
    let mut types = Vec::new();
    while pos < sample.len() {
        if sample.len() - pos < length_size {
            return None;
        }
        let mut len = 0usize;
        for b in &sample[pos..pos + length_size] {
            len = (len << 8) | usize::from(*b);
        }
        pos += length_size;
        if len == 0 || len > sample.len() - pos {
            return None;
        }
        types.push(sample[pos] & 0x1f);
        pos += len;
    }
    Some(types)
}

/// A sample to write.
pub(crate) struct MuxSample<'a> {
    pub data: &'a [u8],
    pub duration: u32,
    pub keyframe: bool,
}

fn mux_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::Encode(format!("mp4 mux: {e}"))
}

/// Initial bytes, the patches to apply (offset, bytes), whether faststart, the moov size.
type MuxPass = (Vec<u8>, Vec<(u64, Vec<u8>)>, bool, usize);

fn mux_pass(
    entry: &SampleEntry,
    timescale: NonZeroU32,
    samples: &[MuxSample<'_>],
    reserved: usize,
) -> Result<MuxPass, MediaError> {
    let mut muxer = Mp4FileMuxer::with_options(Mp4FileMuxerOptions {
        reserved_moov_box_size: reserved,
        ..Default::default()
    })
    .map_err(mux_err)?;
    let initial = muxer.initial_boxes_bytes().to_vec();
    let mut offset = initial.len() as u64;
    for (i, s) in samples.iter().enumerate() {
        muxer
            .append_sample(&Sample {
                track_kind: TrackKind::Video,
                sample_entry: (i == 0).then(|| entry.clone()),
                keyframe: s.keyframe,
                timescale,
                duration: s.duration,
                composition_time_offset: None,
                data_offset: offset,
                data_size: s.data.len(),
            })
            .map_err(mux_err)?;
        offset += s.data.len() as u64;
    }
    let fin = muxer.finalize().map_err(mux_err)?;
    let patches = fin
        .offset_and_bytes_pairs()
        .map(|(o, b)| (o, b.to_vec()))
        .collect();
    Ok((
        initial,
        patches,
        fin.is_faststart_enabled(),
        fin.moov_box_size(),
    ))
}

/// Writes one H.264 track as a faststart MP4 (moov before mdat), all in memory.
pub(crate) fn mux_h264(
    avc1: &Avc1Box,
    timescale: u32,
    samples: &[MuxSample<'_>],
) -> Result<Vec<u8>, MediaError> {
    mux_entry(&SampleEntry::Avc1(avc1.clone()), timescale, samples)
}

/// Writes one video track with this sample entry as a faststart MP4.
pub(crate) fn mux_entry(
    entry: &SampleEntry,
    timescale: u32,
    samples: &[MuxSample<'_>],
) -> Result<Vec<u8>, MediaError> {
    if samples.is_empty() {
        return Err(MediaError::Encode("no frames to write".into()));
    }
    let timescale =
        NonZeroU32::new(timescale).ok_or_else(|| MediaError::Encode("timescale 0".into()))?;
    // Pass 1 learns the exact moov size; pass 2 reserves exactly that much (no padding left).
    let estimate = estimate_maximum_moov_box_size(&[samples.len()]);
    let (_, _, _, moov_size) = mux_pass(entry, timescale, samples, estimate)?;
    let (mut initial, mut patches, mut faststart, _) =
        mux_pass(entry, timescale, samples, moov_size)?;
    if !faststart {
        (initial, patches, faststart, _) = mux_pass(entry, timescale, samples, estimate)?;
    }
    if !faststart {
        return Err(MediaError::Encode(
            "mp4 mux: moov did not fit before mdat".into(),
        ));
    }
    let total: usize = initial.len() + samples.iter().map(|s| s.data.len()).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&initial);
    for s in samples {
        out.extend_from_slice(s.data);
    }
    for (offset, bytes) in patches {
        let offset = offset as usize;
        let end = offset + bytes.len();
        if end > out.len() {
            out.resize(end, 0);
        }
        out[offset..end].copy_from_slice(&bytes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Media, PureMedia};
    use shiguredo_mp4::Uint;
    use shiguredo_mp4::boxes::{Hvc1Box, HvccBox, HvccNalUintArray, VisualSampleEntryFields};

    fn visual(width: u16, height: u16) -> VisualSampleEntryFields {
        VisualSampleEntryFields {
            data_reference_index: VisualSampleEntryFields::DEFAULT_DATA_REFERENCE_INDEX,
            width,
            height,
            horizresolution: VisualSampleEntryFields::DEFAULT_HORIZRESOLUTION,
            vertresolution: VisualSampleEntryFields::DEFAULT_VERTRESOLUTION,
            frame_count: VisualSampleEntryFields::DEFAULT_FRAME_COUNT,
            compressorname: VisualSampleEntryFields::NULL_COMPRESSORNAME,
            depth: VisualSampleEntryFields::DEFAULT_DEPTH,
        }
    }

    fn file_with(entry: SampleEntry) -> Vec<u8> {
        let payload = [0u8, 0, 0, 4, 0x26, 0x01, 0xaf, 0x00];
        let samples: Vec<MuxSample<'_>> = (0..5)
            .map(|i| MuxSample {
                data: &payload,
                duration: 1000,
                keyframe: i == 0,
            })
            .collect();
        mux_entry(&entry, 24_000, &samples).expect("mux")
    }

    /// A real 256x144 avc1 entry from our encoder.
    fn our_avc1() -> Avc1Box {
        let clip = PureMedia::default()
            .render_animatic(
                &crate::Animatic {
                    shot_number: 1,
                    shot_count: 1,
                    description: "x",
                    duration_ms: 100,
                    camera: crate::CameraMove::Static,
                    palette: &[],
                    format: crate::Format {
                        width: 256,
                        height: 144,
                        fps: 24,
                    },
                    seed: 1,
                },
                None,
            )
            .expect("render");
        let file = parse(&clip).expect("parse");
        match &file.video.entries[0] {
            SampleEntry::Avc1(a) => a.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn assert_unsupported(bytes: &[u8], codec_prefix: &str) {
        let media = PureMedia::default();
        let info = media.probe(bytes).expect("probe reads any codec");
        assert!(info.codec.starts_with(codec_prefix), "{}", info.codec);
        assert_eq!(info.frame_count, 5);
        assert_eq!(info.fps, 24.0);
        for err in [
            media.measure(bytes).map(|_| ()),
            media.poster(bytes, 64).map(|_| ()),
            media
                .assemble(
                    &[bytes],
                    crate::Format {
                        width: 256,
                        height: 144,
                        fps: 24,
                    },
                )
                .map(|_| ()),
            media.can_decode(bytes),
        ] {
            match err {
                Err(MediaError::Unsupported(m)) => assert!(m.contains("ffmpeg"), "{m}"),
                other => panic!("expected Unsupported, got {other:?}"),
            }
        }
    }

    #[test]
    fn hevc_is_probed_but_unsupported() {
        let hvcc = HvccBox {
            general_profile_space: Uint::new(0),
            general_tier_flag: Uint::new(0),
            general_profile_idc: Uint::new(2),
            general_profile_compatibility_flags: 0x2000_0000,
            general_constraint_indicator_flags: Uint::new(0),
            general_level_idc: 93,
            min_spatial_segmentation_idc: Uint::new(0),
            parallelism_type: Uint::new(0),
            chroma_format_idc: Uint::new(1),
            bit_depth_luma_minus8: Uint::new(2),
            bit_depth_chroma_minus8: Uint::new(2),
            avg_frame_rate: 0,
            constant_frame_rate: Uint::new(0),
            num_temporal_layers: Uint::new(1),
            temporal_id_nested: Uint::new(1),
            length_size_minus_one: Uint::new(3),
            nalu_arrays: vec![HvccNalUintArray {
                array_completeness: Uint::new(1),
                nal_unit_type: Uint::new(32),
                nalus: vec![vec![0x40, 0x01, 0x0c]],
            }],
        };
        let bytes = file_with(SampleEntry::Hvc1(Hvc1Box {
            visual: visual(256, 144),
            hvcc_box: hvcc,
            unknown_boxes: Vec::new(),
        }));
        assert_unsupported(&bytes, "hvc1.");
        let info = PureMedia::default().probe(&bytes).expect("probe");
        assert_eq!((info.width, info.height), (256, 144));
    }

    #[test]
    fn ten_bit_and_444_h264_are_unsupported() {
        let base = our_avc1();
        let mut ten = base.clone();
        ten.avcc_box.avc_profile_indication = 110;
        ten.avcc_box.chroma_format = Some(Uint::new(1));
        ten.avcc_box.bit_depth_luma_minus8 = Some(Uint::new(2));
        ten.avcc_box.bit_depth_chroma_minus8 = Some(Uint::new(2));
        assert_unsupported(&file_with(SampleEntry::Avc1(ten)), "avc1.6e");
        let mut full = base;
        full.avcc_box.avc_profile_indication = 244;
        full.avcc_box.chroma_format = Some(Uint::new(3));
        full.avcc_box.bit_depth_luma_minus8 = Some(Uint::new(0));
        full.avcc_box.bit_depth_chroma_minus8 = Some(Uint::new(0));
        assert_unsupported(&file_with(SampleEntry::Avc1(full)), "avc1.f4");
    }

    #[test]
    fn annexb_conversion_checks_the_framing() {
        let mut out = Vec::new();
        append_annexb(&[0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 1, 0x41], 4, &mut out).expect("ok");
        assert_eq!(out, [0, 0, 0, 1, 0x65, 0x88, 0, 0, 0, 1, 0x41]);
        assert!(append_annexb(&[0, 0, 0, 9, 0x65], 4, &mut out).is_err());
        assert!(append_annexb(&[0, 0, 0, 0], 4, &mut out).is_err());
        assert!(append_annexb(&[0, 0, 0, 1, 0xe5], 4, &mut out).is_err());
        assert!(append_annexb(&[0, 0], 4, &mut out).is_err());
        assert_eq!(
            nal_types(&[0, 0, 0, 1, 0x65, 0, 0, 0, 1, 0x41], 4),
            Some(vec![5, 1])
        );
        assert_eq!(nal_types(&[0, 0, 0, 5, 0x65], 4), None);
    }

    #[test]
    fn top_level_scan_rejects_truncation() {
        let bytes = file_with(SampleEntry::Avc1(our_avc1()));
        assert!(parse(&bytes).is_ok());
        for cut in [0, 7, 8, 30, bytes.len() / 2, bytes.len() - 1] {
            let e = parse(&bytes[..cut]).expect_err("truncated");
            assert!(matches!(e, MediaError::Malformed(_)), "{e}");
        }
        let e = parse(b"\x00\x00\x00\x08junkmore").expect_err("junk");
        assert!(matches!(e, MediaError::Malformed(_)));
    }
}
