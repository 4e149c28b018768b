//! The cutscene cache ([`FramePackSettings::cache`]): completed clips saved as
//! `<key>.cutscene`, where the key hashes everything that decides the frames, so a request seen
//! before plays without the model.

use std::path::{Path, PathBuf};

use bevy::prelude::*;
use bevy::tasks::{IoTaskPool, Task, block_on, futures_lite::future};
use framepack::clip::{Clip, ClipError};

use crate::clip::CutsceneClip;
use crate::messages::{GenerationError, GenerationEvent, JobId};
use crate::param::{FramePackStatus, FramePackWorker};
use crate::settings::{FramePackSettings, ModelSource};
use framepack::pipeline::{Request, RequestPlan};

/// Bumped when anything that changes generated frames for the same inputs changes.
const KEY_VERSION: &str = "bevy_framepack cache v1";

/// 64-bit FNV-1a (stable across builds and platforms, unlike `std`'s hasher).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, data: &[u8]) -> &mut Self {
        for &b in (data.len() as u64).to_le_bytes().iter().chain(data) {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }
}

/// The cache key of `request` under `settings`: the model, the precision, both images, the
/// prompt, the resolution and every generation setting (seed, steps, schedule, length, …).
pub(crate) fn key(settings: &FramePackSettings, request: &Request) -> u64 {
    let mut h = Fnv::new();
    h.bytes(KEY_VERSION.as_bytes()).bytes(env!("CARGO_PKG_VERSION").as_bytes());
    match &settings.model {
        ModelSource::Nano => h.bytes(b"nano").bytes(&framepack_nano::fingerprint().to_le_bytes()),
        ModelSource::Directory(dir) => h.bytes(dir.to_string_lossy().as_bytes()),
        // The workers' model is not known here; the server and namespace stand for it.
        #[cfg(feature = "remote")]
        ModelSource::Remote(o) => h.bytes(format!("remote {} {}", o.url, o.prefix).as_bytes()),
    };
    h.bytes(format!("{:?} {:?}", settings.precision, settings.device).as_bytes());
    for image in std::iter::once(&request.image).chain(request.end_image.as_ref()) {
        h.bytes(&image.width().to_le_bytes()).bytes(&image.height().to_le_bytes()).bytes(image.data());
    }
    h.bytes(request.prompt.as_bytes()).bytes(&request.resolution.to_le_bytes());
    // Pipelining changes where frames are decoded, not which.
    h.bytes(format!("{:?}", framepack::JobSettings { pipeline: true, ..request.settings.clone() }).as_bytes());
    h.0
}

/// Where the clip of `key` is kept in `dir`.
pub(crate) fn path(dir: &Path, key: u64) -> PathBuf {
    dir.join(format!("{key:016x}.cutscene"))
}

/// A cached clip being read, and the job to run instead if it cannot be.
pub(crate) struct PendingLoad {
    pub(crate) job: JobId,
    pub(crate) clip: Handle<CutsceneClip>,
    pub(crate) path: PathBuf,
    pub(crate) task: Task<Result<Clip, ClipError>>,
    pub(crate) request: Box<Request>,
    pub(crate) plan: Box<RequestPlan>,
}

pub(crate) fn read(path: PathBuf) -> Task<Result<Clip, ClipError>> {
    IoTaskPool::get().spawn(async move { Clip::open(&path) })
}

/// Saves a completed clip in the background, then trims the folder to `limit` bytes.
pub(crate) fn save(clip: &CutsceneClip, path: PathBuf, limit: u64) {
    let clip = clip.clone();
    IoTaskPool::get()
        .spawn(async move {
            if let Err(e) = clip.save(&path) {
                warn!("cannot cache the cutscene at {}: {e}", path.display());
                return;
            }
            if let Some(dir) = path.parent()
                && let Err(e) = evict(dir, limit, &path)
            {
                warn!("cannot trim the cutscene cache {}: {e}", dir.display());
            }
        })
        .detach();
}

/// Deletes the least recently written `.cutscene` files of `dir` (never `keep`) until the ones
/// left add up to at most `limit` bytes.
fn evict(dir: &Path, limit: u64, keep: &Path) -> std::io::Result<()> {
    let mut clips = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "cutscene") {
            let meta = entry.metadata()?;
            clips.push((meta.modified()?, meta.len(), path));
        }
    }
    let mut total: u64 = clips.iter().map(|(_, len, _)| len).sum();
    clips.sort();
    for (_, len, path) in clips {
        if total <= limit {
            break;
        }
        if path != keep {
            std::fs::remove_file(&path)?;
            total -= len;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn the_key_follows_the_settings_but_not_where_frames_are_decoded() {
        let image = framepack::preprocess::RgbImage::new(2, 2, vec![7; 12]).unwrap();
        let r = Request::new(image, "a door opens");
        let s = FramePackSettings::default();
        let with = |f: &dyn Fn(&mut Request)| {
            let mut r = r.clone();
            f(&mut r);
            key(&s, &r)
        };
        assert_eq!(key(&s, &r), with(&|r| r.settings.pipeline = false));
        assert_ne!(key(&s, &r), with(&|r| r.settings.seed += 1));
        assert_ne!(key(&s, &r), with(&|r| r.prompt.push('!')));
    }

    #[test]
    fn eviction_deletes_the_oldest_clips_first_and_keeps_the_new_one() {
        let dir = std::env::temp_dir().join(format!("bevy-framepack-evict-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(100);
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let f = std::fs::File::create(dir.join(format!("{name}.cutscene"))).unwrap();
            f.set_len(10).unwrap();
            f.set_modified(t0 + Duration::from_secs(10 * i as u64)).unwrap();
        }
        std::fs::write(dir.join("notes.txt"), [0u8; 50]).unwrap();
        // `a` is the oldest but was just written by the caller: it stays.
        evict(&dir, 20, &dir.join("a.cutscene")).unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["a.cutscene", "d.cutscene", "notes.txt"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Finishes cached loads: the clip plays with `Started` and `Finished` messages, or the job is
/// generated after all when the file is unreadable or does not fit the request.
pub(crate) fn poll_loads(
    mut worker: ResMut<FramePackWorker>,
    settings: Res<FramePackSettings>,
    mut clips: ResMut<Assets<CutsceneClip>>,
    mut status: ResMut<FramePackStatus>,
    mut events: MessageWriter<GenerationEvent>,
) {
    let pending = std::mem::take(&mut worker.cache_loads);
    for mut p in pending {
        let Some(result) = block_on(future::poll_once(&mut p.task)) else {
            worker.cache_loads.push(p);
            continue;
        };
        let (job, plan) = (p.job, &p.plan);
        let (width, height) = (plan.width as u32, plan.height as u32);
        let (sections, total_frames) = (plan.sections.sections, plan.total_frames());
        let fits = |c: &Clip| (c.width, c.height) == (width, height) && c.frames.len() == total_frames;
        match result {
            Ok(c) if fits(&c) => {
                let _ = clips.insert(&p.clip, CutsceneClip::from_file(&c));
                events.write(GenerationEvent::Started { job, sections, total_frames, width, height });
                events.write(GenerationEvent::Finished { job });
            }
            other => {
                let why = match other {
                    Ok(_) => "it does not fit the request".to_string(),
                    Err(e) => e.to_string(),
                };
                warn!("cached cutscene {} unusable ({why}); generating it", p.path.display());
                let path = p.path.clone();
                if let Err(e) = worker.enqueue(&settings, &mut clips, job, p.clip.clone(), p.request, p.plan) {
                    error!("FramePack job {job:?} failed: {e}");
                    let error = GenerationError::InvalidRequest(e.to_string());
                    events.write(GenerationEvent::Failed { job, error });
                } else {
                    worker.cache_saves.insert(job, path);
                    if matches!(*status, FramePackStatus::Unloaded | FramePackStatus::Failed(_)) {
                        *status = FramePackStatus::Loading;
                    }
                }
            }
        }
    }
}
