//! `.cutscene` files: a generated video saved so it can be replayed without the model (shipped
//! with a game, or kept in a cache).
//!
//! Layout, integers little-endian:
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `FPCUTSCN` |
//! | 4 | format version, `1` |
//! | 4 + n | header length `n`, then `n` bytes of JSON: `{"width", "height", "fps", "frames", "meta"}` (`meta`: string → string, e.g. prompt and seed) |
//! | per frame: 4 + m | length `m`, then an 8-bit RGB PNG of `width × height` |
//!
//! Frames are lossless; PNG keeps a 64 × 48 clip of 73 frames at a few hundred KB.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::generator::Frame;

/// The first 8 bytes of every `.cutscene` file.
pub const MAGIC: &[u8; 8] = b"FPCUTSCN";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;

/// Largest frame side accepted when reading, so a corrupt header cannot ask for huge buffers.
const MAX_SIDE: u32 = 8192;

/// Why a clip could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes do not start with [`MAGIC`].
    #[error("not a .cutscene file (no FPCUTSCN magic)")]
    NotACutscene,
    /// A format version this crate does not read.
    #[error("unsupported .cutscene version {0} (this build reads version {VERSION})")]
    Version(u32),
    /// The data ends before the part named.
    #[error("truncated .cutscene file: it ends inside {what}")]
    Truncated {
        /// The part that is cut off.
        what: String,
    },
    /// The JSON header is malformed or inconsistent.
    #[error("invalid .cutscene header: {0}")]
    Header(String),
    /// A frame is not a PNG of the clip's size.
    #[error("frame {index}: {reason}")]
    Frame {
        /// 0-based frame number.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Header {
    width: u32,
    height: u32,
    fps: f32,
    frames: usize,
    #[serde(default)]
    meta: BTreeMap<String, String>,
}

/// A video of RGB frames with its frame rate and free-form metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Clip {
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Playback rate (FramePack generates 30 fps).
    pub fps: f32,
    /// RGB8 frames, `width · height · 3` bytes each, in playback order.
    pub frames: Vec<Vec<u8>>,
    /// Metadata (prompt, seed, cache key, …).
    pub meta: BTreeMap<String, String>,
}

impl Clip {
    /// An empty clip.
    pub fn new(width: u32, height: u32, fps: f32) -> Self {
        Self { width, height, fps, frames: Vec::new(), meta: BTreeMap::new() }
    }

    /// A clip of generated frames (all of one size).
    pub fn from_frames(frames: &[Frame], fps: f32) -> Result<Self, ClipError> {
        let (w, h) = frames.first().map(|f| (f.width as u32, f.height as u32)).unwrap_or((0, 0));
        let mut clip = Self::new(w, h, fps);
        for f in frames {
            clip.push_rgb(f.rgb.clone())?;
        }
        Ok(clip)
    }

    fn frame_bytes(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }

    /// Appends a frame of `width · height · 3` RGB bytes.
    pub fn push_rgb(&mut self, rgb: Vec<u8>) -> Result<(), ClipError> {
        if rgb.len() != self.frame_bytes() {
            return Err(ClipError::Frame {
                index: self.frames.len(),
                reason: format!(
                    "{} bytes, expected {} ({}x{} RGB)",
                    rgb.len(),
                    self.frame_bytes(),
                    self.width,
                    self.height
                ),
            });
        }
        self.frames.push(rgb);
        Ok(())
    }

    /// The file's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, ClipError> {
        let header = Header {
            width: self.width,
            height: self.height,
            fps: self.fps,
            frames: self.frames.len(),
            meta: self.meta.clone(),
        };
        let json = serde_json::to_vec(&header).map_err(|e| ClipError::Header(e.to_string()))?;
        let mut out = Vec::with_capacity(16 + json.len() + self.frames.len() * self.frame_bytes() / 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        put_block(&mut out, &json);
        for (index, rgb) in self.frames.iter().enumerate() {
            if rgb.len() != self.frame_bytes() {
                return Err(ClipError::Frame {
                    index,
                    reason: format!("{} bytes, expected {}", rgb.len(), self.frame_bytes()),
                });
            }
            let png = encode_png(rgb, self.width, self.height).map_err(|reason| ClipError::Frame { index, reason })?;
            put_block(&mut out, &png);
        }
        Ok(out)
    }

    /// Reads a clip from a file's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ClipError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(ClipError::NotACutscene);
        }
        let mut r = Reader { bytes, at: MAGIC.len() };
        let version = u32::from_le_bytes(r.take(4, "the version")?.try_into().unwrap_or_else(|_| unreachable!()));
        if version != VERSION {
            return Err(ClipError::Version(version));
        }
        let header: Header =
            serde_json::from_slice(r.block("the header")?).map_err(|e| ClipError::Header(e.to_string()))?;
        if header.width == 0 || header.height == 0 || header.width > MAX_SIDE || header.height > MAX_SIDE {
            return Err(ClipError::Header(format!("frame size {}x{}", header.width, header.height)));
        }
        if !(header.fps.is_finite() && header.fps > 0.0) {
            return Err(ClipError::Header(format!("frame rate {}", header.fps)));
        }
        let mut clip = Self::new(header.width, header.height, header.fps);
        clip.meta = header.meta;
        for index in 0..header.frames {
            let png = r.block(&format!("frame {index} of {}", header.frames))?;
            let rgb =
                decode_png(png, header.width, header.height).map_err(|reason| ClipError::Frame { index, reason })?;
            clip.frames.push(rgb);
        }
        if r.at != bytes.len() {
            return Err(ClipError::Header(format!(
                "{} bytes after the {} frames it declares",
                bytes.len() - r.at,
                header.frames
            )));
        }
        Ok(clip)
    }

    /// Writes the file (to a temporary name first, so a reader never sees half a clip).
    pub fn save(&self, path: &Path) -> Result<(), ClipError> {
        let bytes = self.encode()?;
        let io = |source| ClipError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("cutscene.tmp");
        std::fs::File::create(&tmp).and_then(|mut f| f.write_all(&bytes)).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a `.cutscene` file.
    pub fn open(path: &Path) -> Result<Self, ClipError> {
        let bytes = std::fs::read(path).map_err(|source| ClipError::Io { path: path.to_path_buf(), source })?;
        Self::decode(&bytes)
    }
}

fn put_block(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ClipError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else { return Err(ClipError::Truncated { what: what.to_string() }) };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn block(&mut self, what: &str) -> Result<&'a [u8], ClipError> {
        let len = self.take(4, what)?;
        let len = u32::from_le_bytes(len.try_into().unwrap_or_else(|_| unreachable!())) as usize;
        self.take(len, what)
    }
}

/// One 8-bit RGB frame as a PNG (the encoding of a clip's frames).
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| e.to_string())?;
    w.write_image_data(rgb).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// The RGB bytes of an 8-bit RGB PNG that must be `width × height`.
pub fn decode_png(data: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut reader = png::Decoder::new(Cursor::new(data)).read_info().map_err(|e| format!("not a PNG: {e}"))?;
    let info = reader.info();
    if (info.width, info.height) != (width, height) {
        return Err(format!("{}x{}, expected {width}x{height}", info.width, info.height));
    }
    if (info.color_type, info.bit_depth) != (png::ColorType::Rgb, png::BitDepth::Eight) {
        return Err(format!("{:?} {:?}, expected 8-bit RGB", info.color_type, info.bit_depth));
    }
    let mut buf = vec![0; reader.output_buffer_size().ok_or("the PNG is too large")?];
    let frame = reader.next_frame(&mut buf).map_err(|e| format!("corrupt PNG: {e}"))?;
    buf.truncate(frame.buffer_size());
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(n: usize) -> Clip {
        let mut c = Clip::new(5, 3, 30.0);
        for i in 0..n {
            c.push_rgb((0..45).map(|j| (i * 40 + j * 5) as u8).collect()).unwrap();
        }
        c.meta.insert("prompt".into(), "a cat walks".into());
        c
    }

    #[test]
    fn encode_then_decode_is_identity() {
        for n in [0, 1, 4] {
            let c = clip(n);
            assert_eq!(Clip::decode(&c.encode().unwrap()).unwrap(), c);
        }
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error() {
        let bytes = clip(3).encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(Clip::decode(&bytes[..cut]).is_err(), "cut at {cut} of {}", bytes.len());
        }
        assert!(matches!(Clip::decode(b"GIF89a.."), Err(ClipError::NotACutscene)));
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(matches!(Clip::decode(&v2), Err(ClipError::Version(2))));
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(Clip::decode(&extra), Err(ClipError::Header(_))));
        // A flipped byte inside the first frame's PNG data fails its checksum.
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 20] ^= 0xff;
        let e = Clip::decode(&flipped).unwrap_err();
        assert!(matches!(e, ClipError::Frame { index: 2, .. }), "{e}");
    }

    #[test]
    fn wrong_frame_sizes_are_refused() {
        let mut c = Clip::new(2, 2, 30.0);
        assert!(matches!(c.push_rgb(vec![0; 11]), Err(ClipError::Frame { index: 0, .. })));
        c.frames.push(vec![0; 3]);
        assert!(c.encode().is_err());
    }
}
