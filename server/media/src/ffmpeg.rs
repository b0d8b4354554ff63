//! The optional ffmpeg-command-line implementation of [`Media`].

use crate::metrics::Accumulator;
use crate::{Animatic, ClipInfo, Defect, Format, Measurement, Media, MediaError, PureMedia};
use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Media through the `ffmpeg` command line: assembly of any input (scale, pad, fps, concat,
/// faststart, H.264 yuv420p, audio kept as AAC) and decoding of what OpenH264 cannot read (HEVC,
/// 10-bit, 4:4:4, …; fragmented MP4 is remuxed into a plain MP4 first). Animatics and probing are
/// delegated to [`PureMedia`], as are measuring and posters of clips the pure decoder reads, and
/// assembling clips that can all be copied. Inputs must be MP4/QuickTime files.
pub struct FfmpegMedia {
    path: PathBuf,
    encoder: Option<&'static str>,
    pure: PureMedia,
}

impl std::fmt::Debug for FfmpegMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FfmpegMedia")
            .field("path", &self.path)
            .field("encoder", &self.encoder)
            .finish()
    }
}

fn ffmpeg_err(msg: impl Into<String>) -> MediaError {
    MediaError::Ffmpeg(msg.into())
}

impl FfmpegMedia {
    /// The explicit path, or `ffmpeg` on `PATH`, if running it with `-version` succeeds.
    pub fn find(explicit: Option<PathBuf>) -> Option<FfmpegMedia> {
        let path = explicit.unwrap_or_else(|| PathBuf::from("ffmpeg"));
        let ok = Command::new(&path)
            .args(["-hide_banner", "-version"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        let encoders = Command::new(&path)
            .args(["-hide_banner", "-encoders"])
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let has = |name: &str| {
            encoders
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name))
        };
        let encoder = ["libx264", "libopenh264"].into_iter().find(|e| has(e));
        Some(FfmpegMedia {
            path,
            encoder,
            pure: PureMedia::default(),
        })
    }

    /// Uses this [`PureMedia`] for what is delegated.
    pub fn with_pure(mut self, pure: PureMedia) -> Self {
        self.pure = pure;
        self
    }

    /// The ffmpeg executable.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The H.264 encoder ffmpeg offers ("libx264" or "libopenh264"), if any.
    pub fn h264_encoder(&self) -> Option<&'static str> {
        self.encoder
    }

    fn run(&self, args: &[String], dir: &Path) -> Result<Vec<u8>, MediaError> {
        let out = Command::new(&self.path)
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ffmpeg_err(format!("cannot run {}: {e}", self.path.display())))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr
                .lines()
                .rev()
                .take(6)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ");
            return Err(ffmpeg_err(format!("{} ({tail})", out.status)));
        }
        Ok(out.stdout)
    }

    fn assemble_ffmpeg(
        &self,
        clips: &[&[u8]],
        max_ms: &[Option<u64>],
        format: Format,
    ) -> Result<Vec<u8>, MediaError> {
        format.validate()?;
        if clips.is_empty() {
            return Err(MediaError::Encode("nothing to assemble: no clips".into()));
        }
        let encoder = self.encoder.ok_or_else(|| {
            ffmpeg_err("this ffmpeg build has no H.264 encoder (libx264 or libopenh264)")
        })?;
        let dir = tempfile::tempdir().map_err(|e| ffmpeg_err(format!("temp dir: {e}")))?;
        // Inputs must be readable MP4/QuickTime files; what only ffmpeg decodes (HEVC, 10-bit,
        // fragmented MP4, …) is fine.
        let mut infos: Vec<Option<ClipInfo>> = Vec::with_capacity(clips.len());
        for (i, c) in clips.iter().enumerate() {
            match self.pure.probe(c) {
                Ok(info) => infos.push(Some(info)),
                Err(MediaError::Unsupported(_)) => infos.push(None),
                Err(MediaError::Malformed(m)) => {
                    return Err(MediaError::Malformed(format!("clip {}: {m}", i + 1)));
                }
                Err(e) => return Err(e),
            }
        }
        // Write the inputs; whether each has audio comes from the probe, or from ffmpeg itself for
        // what the pure probe cannot read.
        let mut audio = Vec::with_capacity(clips.len());
        for (i, clip) in clips.iter().enumerate() {
            let input = format!("in_{i}.mp4");
            std::fs::write(dir.path().join(&input), clip)
                .map_err(|e| ffmpeg_err(format!("write temp file: {e}")))?;
            audio.push(match &infos[i] {
                Some(info) => info.has_audio,
                None => self.has_audio_stream(&input, dir.path()),
            });
        }
        let any_audio = audio.iter().any(|a| *a);
        let Format {
            width: w,
            height: h,
            fps,
        } = format;
        let bitrate = crate::codec::bitrate_for(format, 3_000_000);
        let mut list = String::new();
        for (i, &has_audio) in audio.iter().enumerate() {
            let input = format!("in_{i}.mp4");
            let seg = format!("seg_{i}.mp4");
            let mut args: Vec<String> = Vec::new();
            if let Some(ms) = max_ms.get(i).copied().flatten() {
                // Read at most the shot's length of this input.
                args.extend(["-t".into(), format!("{:.3}", ms as f64 / 1000.0)]);
            }
            args.extend(["-i".into(), input]);
            if any_audio && !has_audio {
                args.extend(["-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo"].map(String::from));
            }
            args.extend(["-map".into(), "0:v:0".into()]);
            if any_audio {
                args.extend([
                    "-map".into(),
                    if has_audio {
                        "0:a:0?".into()
                    } else {
                        "1:a:0".into()
                    },
                ]);
            }
            args.extend([
                "-vf".into(),
                format!(
                    "scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2,\
                     pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1,fps={fps},format=yuv420p"
                ),
                "-c:v".into(),
                encoder.into(),
            ]);
            if encoder == "libx264" {
                args.extend(
                    ["-preset", "veryfast", "-crf", "20", "-profile:v", "high"].map(String::from),
                );
            } else {
                args.extend(["-b:v".into(), bitrate.to_string()]);
            }
            args.extend([
                "-pix_fmt".into(),
                "yuv420p".into(),
                "-video_track_timescale".into(),
                (fps * 1000).to_string(),
            ]);
            if any_audio {
                args.extend(
                    [
                        "-c:a",
                        "aac",
                        "-b:a",
                        "128k",
                        "-ar",
                        "48000",
                        "-ac",
                        "2",
                        "-shortest",
                    ]
                    .map(String::from),
                );
            } else {
                args.push("-an".into());
            }
            args.push(seg.clone());
            self.run(&args, dir.path()).map_err(|e| match e {
                MediaError::Ffmpeg(m) => ffmpeg_err(format!("clip {}: {m}", i + 1)),
                other => other,
            })?;
            list.push_str(&format!("file '{seg}'\n"));
        }
        std::fs::write(dir.path().join("list.txt"), list)
            .map_err(|e| ffmpeg_err(format!("write temp file: {e}")))?;
        let args: Vec<String> = [
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            "list.txt",
            "-c",
            "copy",
            "-movflags",
            "+faststart",
            "out.mp4",
        ]
        .map(String::from)
        .to_vec();
        self.run(&args, dir.path())?;
        std::fs::read(dir.path().join("out.mp4"))
            .map_err(|e| ffmpeg_err(format!("read output: {e}")))
    }

    /// The clip itself, or, when the pure probe cannot read its container (fragmented MP4), the
    /// same streams remuxed by ffmpeg into a plain faststart MP4.
    fn readable<'a>(&self, clip: &'a [u8]) -> Result<Cow<'a, [u8]>, MediaError> {
        match self.pure.probe(clip) {
            Err(MediaError::Unsupported(m)) if m.contains("fragmented") => {
                let dir = tempfile::tempdir().map_err(|e| ffmpeg_err(format!("temp dir: {e}")))?;
                std::fs::write(dir.path().join("in.mp4"), clip)
                    .map_err(|e| ffmpeg_err(format!("write temp file: {e}")))?;
                let args: Vec<String> = [
                    "-i",
                    "in.mp4",
                    "-map",
                    "0",
                    "-c",
                    "copy",
                    "-movflags",
                    "+faststart",
                    "out.mp4",
                ]
                .map(String::from)
                .to_vec();
                self.run(&args, dir.path())?;
                let out = std::fs::read(dir.path().join("out.mp4"))
                    .map_err(|e| ffmpeg_err(format!("read output: {e}")))?;
                Ok(Cow::Owned(out))
            }
            _ => Ok(Cow::Borrowed(clip)),
        }
    }

    /// Whether ffmpeg sees an audio stream in `input` (its stream listing on stderr).
    fn has_audio_stream(&self, input: &str, dir: &Path) -> bool {
        Command::new(&self.path)
            .args(["-hide_banner", "-nostdin", "-i", input])
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .any(|l| l.trim_start().starts_with("Stream #") && l.contains("Audio:"))
            })
    }

    /// Measures by decoding with ffmpeg to raw luma.
    fn measure_ffmpeg(&self, clip: &[u8], info: ClipInfo) -> Result<Measurement, MediaError> {
        let dir = tempfile::tempdir().map_err(|e| ffmpeg_err(format!("temp dir: {e}")))?;
        std::fs::write(dir.path().join("in.mp4"), clip)
            .map_err(|e| ffmpeg_err(format!("write temp file: {e}")))?;
        let log = std::fs::File::create(dir.path().join("log.txt"))
            .map_err(|e| ffmpeg_err(format!("temp file: {e}")))?;
        let (w, h) = (info.width as usize, info.height as usize);
        if w == 0 || h == 0 {
            return Err(MediaError::Malformed("unknown frame size".into()));
        }
        let mut child = Command::new(&self.path)
            .args([
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-i",
                "in.mp4",
                "-map",
                "0:v:0",
            ])
            .args([
                "-vf",
                &format!("scale={w}:{h}"),
                "-f",
                "rawvideo",
                "-pix_fmt",
                "gray",
                "-",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| ffmpeg_err(format!("cannot run {}: {e}", self.path.display())))?;
        let mut acc = Accumulator::default();
        let mut buf = vec![0u8; w * h];
        if let Some(mut out) = child.stdout.take() {
            while out.read_exact(&mut buf).is_ok() {
                acc.add(&buf, w, w, h);
            }
        }
        let status = child.wait().map_err(|e| ffmpeg_err(format!("wait: {e}")))?;
        let log = std::fs::read_to_string(dir.path().join("log.txt")).unwrap_or_default();
        let mut errors = log.lines().filter(|l| !l.trim().is_empty()).count() as u32;
        if !status.success() {
            errors = errors.max(1);
        }
        let decoded = acc.frames();
        errors = errors.max(info.frame_count.saturating_sub(decoded));
        let (black, frozen, sharpness, contrast) = acc.finish();
        Ok(Measurement {
            info,
            decoded_frames: decoded,
            decode_errors: errors,
            black_frame_ratio: black,
            frozen_frame_ratio: frozen,
            sharpness,
            contrast,
        })
    }

    fn poster_ffmpeg(&self, clip: &[u8], max_width: u32) -> Result<Vec<u8>, MediaError> {
        let dir = tempfile::tempdir().map_err(|e| ffmpeg_err(format!("temp dir: {e}")))?;
        std::fs::write(dir.path().join("in.mp4"), clip)
            .map_err(|e| ffmpeg_err(format!("write temp file: {e}")))?;
        let scale = if max_width > 0 {
            format!("scale='min({max_width},iw)':-2")
        } else {
            "null".into()
        };
        let args: Vec<String> = [
            "-i",
            "in.mp4",
            "-map",
            "0:v:0",
            "-frames:v",
            "1",
            "-vf",
            &scale,
            "-f",
            "image2pipe",
            "-c:v",
            "png",
            "-",
        ]
        .map(String::from)
        .to_vec();
        let png = self.run(&args, dir.path())?;
        if png.is_empty() {
            return Err(MediaError::Undecodable("ffmpeg produced no frame".into()));
        }
        Ok(png)
    }
}

impl Media for FfmpegMedia {
    fn name(&self) -> &'static str {
        "ffmpeg"
    }

    fn render_animatic(
        &self,
        spec: &Animatic<'_>,
        defect: Option<Defect>,
    ) -> Result<Vec<u8>, MediaError> {
        self.pure.render_animatic(spec, defect)
    }

    fn probe(&self, clip: &[u8]) -> Result<ClipInfo, MediaError> {
        let clip = self.readable(clip)?;
        self.pure.probe(&clip)
    }

    fn measure(&self, clip: &[u8]) -> Result<Measurement, MediaError> {
        let clip = self.readable(clip)?;
        match self.pure.measure(&clip) {
            Err(MediaError::Unsupported(_)) => {
                let info = self.pure.probe(&clip)?;
                self.measure_ffmpeg(&clip, info)
            }
            other => other,
        }
    }

    fn assemble(&self, clips: &[&[u8]], format: Format) -> Result<Vec<u8>, MediaError> {
        self.assemble_trimmed(clips, &[], format)
    }

    fn assemble_trimmed(
        &self,
        clips: &[&[u8]],
        max_ms: &[Option<u64>],
        format: Format,
    ) -> Result<Vec<u8>, MediaError> {
        if self.pure.all_copyable(clips, format) {
            return self.pure.assemble_trimmed(clips, max_ms, format);
        }
        self.assemble_ffmpeg(clips, max_ms, format)
    }

    fn poster(&self, clip: &[u8], max_width: u32) -> Result<Vec<u8>, MediaError> {
        let clip = self.readable(clip)?;
        match self.pure.poster(&clip, max_width) {
            Err(MediaError::Unsupported(_)) => self.poster_ffmpeg(&clip, max_width),
            other => other,
        }
    }
}
