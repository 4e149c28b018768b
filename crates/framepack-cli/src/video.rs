//! Writing RGB frames as a directory of PNGs, an animated GIF, an H.264 MP4 or a `.cutscene`
//! clip (the plugin's replayable asset, see [`framepack::clip`]), frame by frame, with no system
//! ffmpeg: OpenH264 is compiled from source and the MP4 is muxed in Rust.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, QpRange, RateControlMode};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use openh264::{OpenH264API, Timestamp, nal_units};

/// Errors from the video writers.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// A file or directory could not be created or written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Frame size or rate not supported by the format.
    #[error("{0}")]
    Unsupported(String),
    /// A frame's buffer does not match the video size.
    #[error("frame {index} has {got} bytes, expected {expected} ({width}x{height} RGB)")]
    FrameSize {
        /// 0-based frame number.
        index: usize,
        /// Bytes given.
        got: usize,
        /// Bytes expected.
        expected: usize,
        /// Video width.
        width: u32,
        /// Video height.
        height: u32,
    },
    /// The encoder or muxer failed.
    #[error("{format} encoding failed: {reason}")]
    Encode {
        /// Output format.
        format: &'static str,
        /// What the encoder reported.
        reason: String,
    },
}

/// Output container, chosen from the path: `.mp4`, `.gif`, anything else is a directory of PNGs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `frame_00000.png`, … in a directory.
    PngDir,
    /// Animated GIF (palette per frame).
    Gif,
    /// H.264 in MP4.
    Mp4,
    /// A `.cutscene` clip that `bevy_framepack` loads as an asset.
    Cutscene,
}

impl Format {
    /// The format a path asks for: `.mp4`, `.gif`, or a folder of PNGs (a path without an
    /// extension, or an existing folder). Any other extension is an error rather than a folder
    /// named like a video.
    pub fn from_path(path: &Path) -> Result<Self, VideoError> {
        if path.is_dir() {
            return Ok(Format::PngDir);
        }
        match path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).as_deref() {
            Some("mp4") => Ok(Format::Mp4),
            Some("gif") => Ok(Format::Gif),
            Some("cutscene") => Ok(Format::Cutscene),
            None => Ok(Format::PngDir),
            Some(other) => Err(VideoError::Unsupported(format!(
                "{}: unknown output format `.{other}` (use .mp4, .gif, .cutscene, or a folder name without an extension for PNGs)",
                path.display()
            ))),
        }
    }
}

/// Receives frames one at a time, so sections can be written while later ones generate.
pub trait FrameSink {
    /// Appends one frame (`width·height·3` bytes, RGB, row-major).
    fn push(&mut self, rgb: &[u8]) -> Result<(), VideoError>;
    /// Finishes the file (writes indexes and trailers).
    fn finish(self: Box<Self>) -> Result<(), VideoError>;
}

/// Opens a writer for `path` in the format its extension names.
pub fn create(path: &Path, width: u32, height: u32, fps: u32) -> Result<Box<dyn FrameSink>, VideoError> {
    if width == 0 || height == 0 || fps == 0 {
        return Err(VideoError::Unsupported(format!(
            "video must have a size and a frame rate, got {width}x{height} at {fps} fps"
        )));
    }
    let size = Size { width, height, count: 0 };
    Ok(match Format::from_path(path)? {
        Format::PngDir => {
            std::fs::create_dir_all(path).map_err(|source| VideoError::Io { path: path.into(), source })?;
            Box::new(PngDir { dir: path.into(), size })
        }
        Format::Gif => Box::new(GifSink::new(path, size, fps)?),
        Format::Mp4 => Box::new(Mp4Sink::new(path, size, fps)?),
        Format::Cutscene => Box::new(CutsceneSink {
            path: path.into(),
            size,
            clip: framepack::clip::Clip::new(width, height, fps as f32),
        }),
    })
}

struct Size {
    width: u32,
    height: u32,
    count: usize,
}

impl Size {
    fn check(&mut self, rgb: &[u8]) -> Result<usize, VideoError> {
        let expected = self.width as usize * self.height as usize * 3;
        if rgb.len() != expected {
            return Err(VideoError::FrameSize {
                index: self.count,
                got: rgb.len(),
                expected,
                width: self.width,
                height: self.height,
            });
        }
        self.count += 1;
        Ok(self.count - 1)
    }
}

fn create_file(path: &Path) -> Result<BufWriter<File>, VideoError> {
    File::create(path).map(BufWriter::new).map_err(|source| VideoError::Io { path: path.into(), source })
}

/// Collects the frames and writes the clip at the end.
struct CutsceneSink {
    path: PathBuf,
    size: Size,
    clip: framepack::clip::Clip,
}

impl FrameSink for CutsceneSink {
    fn push(&mut self, rgb: &[u8]) -> Result<(), VideoError> {
        self.size.check(rgb)?;
        self.clip.frames.push(rgb.to_vec());
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), VideoError> {
        self.clip.save(&self.path).map_err(|e| VideoError::Encode { format: ".cutscene", reason: e.to_string() })
    }
}

/// Writes one RGB image (`width·height·3` bytes) as a PNG file.
pub fn write_png(path: &Path, width: u32, height: u32, rgb: &[u8]) -> Result<(), VideoError> {
    let mut enc = png::Encoder::new(create_file(path)?, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let fail = |e: png::EncodingError| VideoError::Encode { format: "PNG", reason: format!("{}: {e}", path.display()) };
    enc.write_header().and_then(|mut w| w.write_image_data(rgb)).map_err(fail)
}

struct PngDir {
    dir: PathBuf,
    size: Size,
}

impl FrameSink for PngDir {
    fn push(&mut self, rgb: &[u8]) -> Result<(), VideoError> {
        let index = self.size.check(rgb)?;
        write_png(&self.dir.join(format!("frame_{index:05}.png")), self.size.width, self.size.height, rgb)
    }

    fn finish(self: Box<Self>) -> Result<(), VideoError> {
        Ok(())
    }
}

struct GifSink {
    encoder: gif::Encoder<BufWriter<File>>,
    size: Size,
    delay_cs: u16,
}

fn gif_err(e: impl std::fmt::Display) -> VideoError {
    VideoError::Encode { format: "GIF", reason: e.to_string() }
}

impl GifSink {
    fn new(path: &Path, size: Size, fps: u32) -> Result<Self, VideoError> {
        let (w, h) = (u16::try_from(size.width), u16::try_from(size.height));
        let (Ok(w), Ok(h)) = (w, h) else {
            return Err(VideoError::Unsupported(format!(
                "GIF frames are at most 65535 pixels wide and high, got {}x{}",
                size.width, size.height
            )));
        };
        let mut encoder = gif::Encoder::new(create_file(path)?, w, h, &[]).map_err(gif_err)?;
        encoder.set_repeat(gif::Repeat::Infinite).map_err(gif_err)?;
        let delay_cs = (100.0 / fps as f64).round().max(1.0) as u16;
        Ok(Self { encoder, size, delay_cs })
    }
}

impl FrameSink for GifSink {
    fn push(&mut self, rgb: &[u8]) -> Result<(), VideoError> {
        self.size.check(rgb)?;
        let mut frame = gif::Frame::from_rgb_speed(self.size.width as u16, self.size.height as u16, rgb, 10);
        frame.delay = self.delay_cs;
        self.encoder.write_frame(&frame).map_err(gif_err)
    }

    fn finish(self: Box<Self>) -> Result<(), VideoError> {
        self.encoder.into_inner().map_err(gif_err)?.into_inner().map_err(|e| gif_err(e.into_error()))?;
        Ok(())
    }
}

/// Time units per second in the MP4 track; one frame lasts `TIMESCALE / fps`.
const TIMESCALE: u32 = 30_000;

struct Mp4Sink {
    encoder: Encoder,
    yuv: YUVBuffer,
    muxer: Option<mp4::Mp4Writer<BufWriter<File>>>,
    path: PathBuf,
    size: Size,
    fps: u32,
}

fn mp4_err(e: impl std::fmt::Display) -> VideoError {
    VideoError::Encode { format: "MP4", reason: e.to_string() }
}

impl Mp4Sink {
    fn new(path: &Path, size: Size, fps: u32) -> Result<Self, VideoError> {
        if size.width % 2 != 0 || size.height % 2 != 0 || size.width > 4096 || size.height > 4096 {
            return Err(VideoError::Unsupported(format!(
                "H.264 needs even frame sizes up to 4096, got {}x{}",
                size.width, size.height
            )));
        }
        if TIMESCALE % fps != 0 {
            return Err(VideoError::Unsupported(format!("MP4 frame rate must divide {TIMESCALE}, got {fps}")));
        }
        // High quality, close to FramePack's CRF 16: quality rate control with a low QP ceiling
        // and a bitrate budget (4 bits per pixel) the encoder never has to skip frames for.
        let bps = (size.width as u64 * size.height as u64 * fps as u64 * 4).min(u32::MAX as u64) as u32;
        let config = EncoderConfig::new()
            .rate_control_mode(RateControlMode::Quality)
            .bitrate(BitRate::from_bps(bps))
            .qp(QpRange::new(10, 24))
            .max_frame_rate(FrameRate::from_hz(fps as f32));
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config).map_err(mp4_err)?;
        let file = create_file(path)?;
        let mp4_config = mp4::Mp4Config {
            major_brand: str::parse("isom").map_err(mp4_err)?,
            minor_version: 512,
            compatible_brands: ["isom", "iso2", "avc1", "mp41"]
                .iter()
                .map(|b| str::parse(b).map_err(mp4_err))
                .collect::<Result<_, _>>()?,
            timescale: TIMESCALE,
        };
        let muxer = mp4::Mp4Writer::write_start(file, &mp4_config).map_err(mp4_err)?;
        let yuv = YUVBuffer::new(size.width as usize, size.height as usize);
        Ok(Self { encoder, yuv, muxer: Some(muxer), path: path.into(), size, fps })
    }
}

impl FrameSink for Mp4Sink {
    fn push(&mut self, rgb: &[u8]) -> Result<(), VideoError> {
        let index = self.size.check(rgb)?;
        let dims = (self.size.width as usize, self.size.height as usize);
        self.yuv.read_rgb8(RgbSliceU8::new(rgb, dims));
        let ms = index as u64 * 1000 / self.fps as u64;
        let stream = self.encoder.encode_at(&self.yuv, Timestamp::from_millis(ms)).map_err(mp4_err)?.to_vec();

        let mut sample = Vec::with_capacity(stream.len());
        let (mut sps, mut pps, mut sync) = (None, None, false);
        for nal in nal_units(&stream) {
            let body = strip_start_code(nal);
            let Some(&header) = body.first() else { continue };
            match header & 0x1f {
                7 => sps = Some(body.to_vec()),
                8 => pps = Some(body.to_vec()),
                kind => {
                    sync |= kind == 5;
                    sample.extend_from_slice(&(body.len() as u32).to_be_bytes());
                    sample.extend_from_slice(body);
                }
            }
        }
        if sample.is_empty() {
            return Err(mp4_err(format!("the encoder produced no picture for frame {index}")));
        }
        let muxer = self.muxer.as_mut().expect("muxer lives until finish");
        if index == 0 {
            let (Some(sps), Some(pps)) = (sps, pps) else {
                return Err(mp4_err("the first encoded frame carries no SPS/PPS"));
            };
            let avc = mp4::AvcConfig {
                width: self.size.width as u16,
                height: self.size.height as u16,
                seq_param_set: sps,
                pic_param_set: pps,
            };
            muxer
                .add_track(&mp4::TrackConfig {
                    track_type: mp4::TrackType::Video,
                    timescale: TIMESCALE,
                    language: "und".into(),
                    media_conf: mp4::MediaConfig::AvcConfig(avc),
                })
                .map_err(mp4_err)?;
        }
        let duration = TIMESCALE / self.fps;
        let sample = mp4::Mp4Sample {
            start_time: index as u64 * duration as u64,
            duration,
            rendering_offset: 0,
            is_sync: sync,
            bytes: sample.into(),
        };
        muxer.write_sample(1, &sample).map_err(mp4_err)
    }

    fn finish(mut self: Box<Self>) -> Result<(), VideoError> {
        if self.size.count == 0 {
            return Err(VideoError::Unsupported(format!("no frames to write to {}", self.path.display())));
        }
        let mut muxer = self.muxer.take().expect("finish runs once");
        muxer.write_end().map_err(mp4_err)?;
        let path = self.path.clone();
        muxer.into_writer().into_inner().map_err(|e| VideoError::Io { path, source: e.into_error() })?;
        Ok(())
    }
}

/// The NAL unit without its Annex-B start code and the zero bytes that belong to the next one.
fn strip_start_code(nal: &[u8]) -> &[u8] {
    let zeros = nal.iter().take_while(|&&b| b == 0).count();
    let body = if zeros >= 2 && nal.get(zeros) == Some(&1) { &nal[zeros + 1..] } else { nal };
    let end = body.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &body[..end]
}
