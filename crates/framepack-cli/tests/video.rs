//! The video writers produce files that decode back to the frames written.

use std::path::PathBuf;

use framepack_cli::video::{self, Format, VideoError};
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

const W: u32 = 64;
const H: u32 = 48;

fn frames(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|t| {
            let mut f = Vec::with_capacity((W * H * 3) as usize);
            for y in 0..H as usize {
                for x in 0..W as usize {
                    f.push((x * 4 + t * 8) as u8);
                    f.push((y * 5) as u8);
                    f.push(((x + y) * 2) as u8);
                }
            }
            f
        })
        .collect()
}

fn out(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("framepack-video-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn write(path: &PathBuf, n: usize) {
    let mut sink = video::create(path, W, H, 30).unwrap();
    for f in frames(n) {
        sink.push(&f).unwrap();
    }
    sink.finish().unwrap();
}

fn mean_abs(a: &[u8], b: &[u8]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()).sum::<f64>() / a.len() as f64
}

#[test]
fn mp4_has_one_avc_track_at_30fps_and_decodes_back() {
    let path = out("clip.mp4");
    write(&path, 12);
    let size = std::fs::metadata(&path).unwrap().len();
    let reader = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
    let mut mp4 = mp4::Mp4Reader::read_header(reader, size).unwrap();
    assert_eq!(mp4.major_brand().to_string(), "isom");
    assert_eq!(mp4.tracks().len(), 1);
    let track = mp4.tracks().get(&1).unwrap();
    assert_eq!(track.media_type().unwrap(), mp4::MediaType::H264);
    assert_eq!((track.width(), track.height()), (W as u16, H as u16));
    assert_eq!(track.sample_count(), 12);
    assert!((track.frame_rate() - 30.0).abs() < 1e-6, "{}", track.frame_rate());
    let sps = track.sequence_parameter_set().unwrap().to_vec();
    let pps = track.picture_parameter_set().unwrap().to_vec();

    let mut decoder = Decoder::new().unwrap();
    let annexb = |nal: &[u8]| [&[0, 0, 0, 1][..], nal].concat();
    decoder.decode(&annexb(&sps)).unwrap();
    decoder.decode(&annexb(&pps)).unwrap();
    let want = frames(12);
    let mut decoded = 0;
    for i in 1..=12u32 {
        let sample = mp4.read_sample(1, i).unwrap().unwrap();
        assert_eq!(sample.is_sync, i == 1, "only the first frame is a keyframe");
        let mut packet = Vec::new();
        let mut rest = &sample.bytes[..];
        while rest.len() >= 4 {
            let n = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            packet.extend(annexb(&rest[4..4 + n]));
            rest = &rest[4 + n..];
        }
        assert!(rest.is_empty(), "samples are length-prefixed NAL units");
        if let Some(yuv) = decoder.decode(&packet).unwrap() {
            assert_eq!(yuv.dimensions(), (W as usize, H as usize));
            let mut rgb = vec![0u8; (W * H * 3) as usize];
            yuv.write_rgb8(&mut rgb);
            let err = mean_abs(&rgb, &want[decoded]);
            assert!(err < 6.0, "frame {decoded}: mean abs error {err}");
            decoded += 1;
        }
    }
    assert_eq!(decoded, 12);
}

#[test]
fn gif_and_png_sequences_round_trip() {
    let gif_path = out("clip.gif");
    write(&gif_path, 5);
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    let mut dec = opts.read_info(std::fs::File::open(&gif_path).unwrap()).unwrap();
    let want = frames(5);
    let mut n = 0;
    while let Some(frame) = dec.read_next_frame().unwrap() {
        assert_eq!((frame.width as u32, frame.height as u32), (W, H));
        assert_eq!(frame.delay, 3);
        let rgb: Vec<u8> = frame.buffer.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
        let err = mean_abs(&rgb, &want[n]);
        assert!(err < 12.0, "frame {n}: mean abs error {err} (256-colour palette)");
        n += 1;
    }
    assert_eq!(n, 5);

    let dir = out("frames");
    write(&dir, 3);
    for (i, want) in frames(3).iter().enumerate() {
        let file = std::fs::File::open(dir.join(format!("frame_{i:05}.png"))).unwrap();
        let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height, info.color_type), (W, H, png::ColorType::Rgb));
        assert_eq!(&buf[..info.buffer_size()], &want[..]);
    }
}

#[test]
fn bad_sizes_are_errors_not_panics() {
    assert_eq!(Format::from_path(&PathBuf::from("a/b.MP4")).unwrap(), Format::Mp4);
    assert_eq!(Format::from_path(&PathBuf::from("a/b.gif")).unwrap(), Format::Gif);
    assert_eq!(Format::from_path(&PathBuf::from("a/b")).unwrap(), Format::PngDir);
    let err = Format::from_path(&PathBuf::from("a/clip.avi")).unwrap_err().to_string();
    assert!(err.contains("clip.avi") && err.contains(".avi"), "{err}");
    assert!(matches!(video::create(&out("odd.mp4"), 63, 48, 30), Err(VideoError::Unsupported(_))));
    assert!(matches!(video::create(&out("zero.gif"), 0, 48, 30), Err(VideoError::Unsupported(_))));
    let mut sink = video::create(&out("short.mp4"), W, H, 30).unwrap();
    let e = sink.push(&[0u8; 10]).unwrap_err();
    assert!(matches!(e, VideoError::FrameSize { index: 0, got: 10, .. }), "{e}");
    assert!(matches!(video::create(&out("empty.mp4"), W, H, 30).unwrap().finish(), Err(VideoError::Unsupported(_))));
    let blocked = out("file-not-dir");
    std::fs::write(&blocked, b"x").unwrap();
    assert!(matches!(video::create(&blocked.join("clip.gif"), W, H, 30), Err(VideoError::Io { .. })));
}

#[test]
fn cutscene_clip_decodes_to_the_frames() {
    let path = out("clip.cutscene");
    assert_eq!(Format::from_path(&path).unwrap(), Format::Cutscene);
    write(&path, 4);
    let clip = framepack::clip::Clip::open(&path).unwrap();
    assert_eq!((clip.width, clip.height, clip.fps), (W, H, 30.0));
    assert_eq!(clip.frames, frames(4));
}
