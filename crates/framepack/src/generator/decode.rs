//! A job's second stage: sampled latents → decoded frames → [`Section`], on the job's thread
//! or on a decoder thread of its own while the next section samples.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::models::autoencoder::tiny_decode;
use crate::models::taehv::StreamingDecoder;
use crate::models::vae::SectionDecoder;
use crate::packing::{SectionOrder, SectionPlan};

use super::frames::to_frames;
use super::job::{CancelToken, FrameFn, Models, Section};
use super::settings::DecoderChoice;

/// How a job turns its sections' latents into frames.
pub(super) enum Decoding {
    /// Each section with its neighbours, cross-faded (FramePack's decoding; full VAE or tiny).
    Blended(SectionDecoder),
    /// Forward jobs with a TAEHV: one causal stream over all sections.
    Streamed(StreamingDecoder),
}

/// What sampling hands to decoding.
pub(super) struct Sampled {
    pub index: usize,
    pub latents: Range<usize>,
    pub new: Tensor,
    pub teacache_skipped: usize,
}

/// The decode stage's state: the decoder, the frames handed out so far and the frame sink.
pub(super) struct SectionFrames {
    pub models: Arc<Models>,
    pub plan: SectionPlan,
    pub decoder: DecoderChoice,
    pub decoding: Option<Decoding>,
    pub frame_sink: Option<FrameFn>,
    pub cancel: CancelToken,
    /// Set when the job is dropped: the decoder thread stops within one frame.
    pub abandoned: Arc<AtomicBool>,
    start_latent: Option<Tensor>,
    /// Frames a stream decoded from the start latent alone, before the first section (they
    /// belong to the first section).
    early_frames: Vec<Tensor>,
    emitted: usize,
}

impl SectionFrames {
    pub fn new(models: Arc<Models>, plan: SectionPlan, decoder: DecoderChoice, decoding: Decoding) -> Self {
        Self {
            models,
            plan,
            decoder,
            decoding: Some(decoding),
            frame_sink: None,
            cancel: CancelToken::new(),
            abandoned: Arc::new(AtomicBool::new(false)),
            start_latent: None,
            early_frames: Vec::new(),
            emitted: 0,
        }
    }

    /// A check that fails with `Cancelled` once the job is cancelled or dropped.
    fn stop_check(&self) -> impl Fn() -> Result<()> + use<> {
        let (cancel, abandoned) = (self.cancel.clone(), self.abandoned.clone());
        move || if cancel.is_cancelled() || abandoned.load(Ordering::SeqCst) { Err(Error::Cancelled) } else { Ok(()) }
    }

    fn streamed(&self) -> bool {
        matches!(self.decoding, Some(Decoding::Streamed(_)))
    }

    /// Takes the start latent `(1, C, 1, h, w)`. A causal stream's first frame depends on it
    /// alone, so a stream decodes and hands out that frame now, before any section is sampled.
    pub fn start(&mut self, start: Tensor) -> Result<()> {
        if let Some(Decoding::Streamed(stream)) = self.decoding.as_mut() {
            stream.push(&start.permute((0, 2, 1, 3, 4))?)?;
            while let Some(f) = stream.next_frame()? {
                if let Some(sink) = self.frame_sink.as_mut() {
                    for frame in to_frames(&f.permute((0, 2, 1, 3, 4))?.affine(2.0, -1.0)?)? {
                        sink(self.early_frames.len(), &frame);
                    }
                }
                self.early_frames.push(f);
            }
        }
        self.start_latent = Some(start);
        Ok(())
    }

    /// Decodes a sampled section and returns it with the frames it finalized.
    pub fn section(&mut self, s: Sampled) -> Result<Section> {
        let check = self.stop_check();
        check()?;
        let sections = self.plan.sections;
        let is_last = s.index + 1 == sections;
        let start =
            self.start_latent.as_ref().ok_or_else(|| Error::invalid("job", "decoding before the start latent"))?;
        let streamed = self.streamed();
        // FramePack decodes the start latent with F1's first section and with the inverted
        // loop's last one (the section next to the start frame).
        let to_push = match self.plan.order {
            SectionOrder::Forward if s.index == 0 && !streamed => Tensor::cat(&[start, &s.new], 2)?,
            SectionOrder::Inverted if is_last => Tensor::cat(&[start, &s.new], 2)?,
            _ => s.new.clone(),
        };
        let models = self.models.clone();
        let tiny = match self.decoder {
            DecoderChoice::Tiny => models.tiny(),
            DecoderChoice::Full => None,
        };
        let mut decode = |z: &Tensor| -> Result<Tensor> {
            check()?;
            match tiny {
                Some(t) => tiny_decode(t, z),
                None => models.vae.decode(z),
            }
        };
        let mut pixels =
            match self.decoding.as_mut().ok_or_else(|| Error::invalid("job", "decoding after the last section"))? {
                Decoding::Blended(decoder) => decoder.push(&to_push, &mut decode)?,
                Decoding::Streamed(stream) => {
                    stream.push(&to_push.permute((0, 2, 1, 3, 4))?)?;
                    let mut frames = std::mem::take(&mut self.early_frames);
                    while let Some(f) = stream.next_frame()? {
                        check()?;
                        if let Some(sink) = self.frame_sink.as_mut() {
                            let index = self.emitted + frames.len();
                            for frame in to_frames(&f.permute((0, 2, 1, 3, 4))?.affine(2.0, -1.0)?)? {
                                sink(index, &frame);
                            }
                        }
                        frames.push(f);
                    }
                    Some(Tensor::cat(&frames, 1)?.permute((0, 2, 1, 3, 4))?.affine(2.0, -1.0)?)
                }
            };
        if is_last && let Some(Decoding::Blended(decoder)) = self.decoding.take() {
            let rest = decoder.finish();
            pixels = match (pixels, rest) {
                (Some(a), Some(b)) => Some(match self.plan.order {
                    SectionOrder::Forward => Tensor::cat(&[&a, &b], 2)?,
                    SectionOrder::Inverted => Tensor::cat(&[&b, &a], 2)?,
                }),
                (a, b) => a.or(b),
            };
        }
        let frames = match &pixels {
            Some(p) => to_frames(p)?,
            None => Vec::new(),
        };
        let total = self.plan.total_frames();
        let n = frames.len();
        let frame_range = match self.plan.order {
            SectionOrder::Forward => self.emitted..self.emitted + n,
            SectionOrder::Inverted => total - self.emitted - n..total - self.emitted,
        };
        self.emitted += n;
        if !streamed && let Some(sink) = self.frame_sink.as_mut() {
            for (i, frame) in frames.iter().enumerate() {
                sink(frame_range.start + i, frame);
            }
        }
        let provisional = match &self.decoding {
            Some(Decoding::Blended(d)) => match d.pixels().provisional() {
                Some(p) => to_frames(p)?,
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        let p = provisional.len();
        let provisional_range = match self.plan.order {
            SectionOrder::Forward => self.emitted..self.emitted + p,
            SectionOrder::Inverted => total - self.emitted - p..total - self.emitted,
        };
        if is_last && self.emitted != total {
            return Err(Error::invalid(
                "video",
                format!("decoded {} frames but the plan has {total} (VAE temporal factor not 4?)", self.emitted),
            ));
        }
        Ok(Section {
            index: s.index,
            sections,
            latents: s.latents,
            latent_tensor: s.new,
            frame_range,
            frames,
            provisional,
            provisional_range,
            is_last,
            teacache_skipped: s.teacache_skipped,
        })
    }
}

enum Message {
    Start(Tensor),
    Section(Sampled),
}

/// The decode stage on a thread of its own, with its own rayon pool: sections go in, decoded
/// sections come out in the same order.
pub(super) struct DecodeThread {
    tx: Option<Sender<Message>>,
    rx: Receiver<Result<Section>>,
    abandoned: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
}

impl DecodeThread {
    /// Moves `frames` to a new thread whose tensor ops run on a pool of `threads` threads.
    pub fn spawn(mut frames: SectionFrames, threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("framepack-decode-{i}"))
            .build()
            .map_err(|e| Error::invalid("decoder thread", e.to_string()))?;
        let (tx, inbox) = channel::<Message>();
        let (outbox, rx) = channel::<Result<Section>>();
        let abandoned = frames.abandoned.clone();
        let join = std::thread::Builder::new()
            .name("framepack-decode".into())
            .spawn(move || {
                pool.install(|| {
                    for message in inbox {
                        let (out, stop) = match message {
                            Message::Start(start) => match frames.start(start) {
                                Ok(()) => continue,
                                Err(e) => (Err(e), true),
                            },
                            Message::Section(s) => {
                                let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| frames.section(s)))
                                    .unwrap_or_else(|panic| {
                                        Err(Error::invalid("decoder thread", panic_message(&*panic)))
                                    });
                                let stop = out.as_ref().map_or(true, |s| s.is_last);
                                (out, stop)
                            }
                        };
                        if outbox.send(out).is_err() || stop {
                            return;
                        }
                    }
                })
            })
            .map_err(|e| Error::invalid("decoder thread", e.to_string()))?;
        Ok(Self { tx: Some(tx), rx, abandoned, join: Some(join) })
    }

    pub fn start(&self, start: Tensor) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Message::Start(start));
        }
    }

    pub fn submit(&self, s: Sampled) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Message::Section(s));
        }
    }

    /// The next decoded section, in submission order.
    pub fn recv(&self) -> Result<Section> {
        self.rx.recv().map_err(|_| Error::invalid("decoder thread", "stopped before it returned the section"))?
    }
}

impl Drop for DecodeThread {
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::SeqCst);
        self.tx = None;
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
    format!("panicked: {}", text.as_deref().unwrap_or("unknown panic"))
}
