//! The embedded nano FramePack model: the trained f16 bundle from the repository's `assets/nano`
//! (see its `MODEL_CARD.md`), compiled into the binary so it runs with no download, and loaded
//! from memory. The Bevy plugin's default model and the `framepack worker --nano` /
//! `framepack generate --nano` model.

use framepack::bundle::BundlePaths;

macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!("../../../assets/nano/", $path)))),*]
    };
}

/// The root its files are named under in errors.
pub const ROOT: &str = "<embedded nano model>";

/// Every file of the bundle, by path relative to its root.
pub const FILES: &[(&str, &[u8])] = embed!(
    "transformer/config.json",
    "transformer/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors.index.json",
    "text_encoder/model-00001-of-00002.safetensors",
    "text_encoder/model-00002-of-00002.safetensors",
    "tokenizer/tokenizer.json",
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "tokenizer_2/tokenizer.json",
    "image_encoder/config.json",
    "image_encoder/model.safetensors",
    "feature_extractor/preprocessor_config.json",
);

/// The bundle, read from the embedded bytes in place.
pub fn bundle() -> BundlePaths {
    BundlePaths::from_memory(ROOT, FILES)
}

/// A hash of every embedded file's path and bytes, computed once: it changes with the model, so
/// caches of its outputs (the plugin's cutscene cache) can tell versions apart.
pub fn fingerprint() -> u64 {
    use std::hash::{Hash, Hasher};
    static HASH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HASH.get_or_init(|| {
        let mut h = std::hash::DefaultHasher::new();
        FILES.hash(&mut h);
        h.finish()
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn every_file_of_the_asset_folder_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/nano");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(dir).expect("assets/nano") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x != "md") {
                    on_disk.push(p.strip_prefix(&root).expect("under root").to_string_lossy().replace('\\', "/"));
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = super::FILES.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn the_fingerprint_is_stable_within_a_build() {
        assert_eq!(super::fingerprint(), super::fingerprint());
        assert_ne!(super::fingerprint(), 0);
    }

    #[test]
    fn the_bundle_is_complete() {
        let report = super::bundle().inspect();
        report.require(&framepack::bundle::BundlePart::ALL).expect("every part present and matching");
    }
}
