//! `hub::fetch` honours `HF_HOME` and `HF_ENDPOINT` (feature `hf-hub`): with every file in a
//! cache under `HF_HOME` it builds the bundle without the network, and a file that is neither in
//! the cache nor reachable (a dead endpoint) is a prompt error naming the repository and file.
//! One test in its own binary, since it sets process-wide environment variables.

use std::path::Path;

use framepack::hub::{self, HubOptions};
use framepack_train::testing;

/// Copies the files of `from` (a folder of the tiny bundle) into the cache snapshot of `repo` under `to`.
fn cache_folder(hf_home: &Path, repo: &str, from: &Path, to: &str) {
    let repo_dir = hf_home.join("hub").join(format!("models--{}", repo.replace('/', "--")));
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    let dest = repo_dir.join("snapshots").join(commit).join(to);
    std::fs::create_dir_all(&dest).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dest.join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn fetch_reads_the_cache_under_hf_home_and_fails_fast_on_a_dead_endpoint() {
    let root = std::env::temp_dir().join(format!("framepack-hub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let bundle = root.join("bundle");
    testing::write_tiny_bundle(&bundle, 5).unwrap();
    let home = root.join("hf_home");
    // The tiny bundle keeps its (sharded) transformer at the root, as the released repository does.
    cache_folder(&home, hub::ORIGINAL, &bundle, "");
    for f in ["vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"] {
        cache_folder(&home, hub::HUNYUAN_VIDEO, &bundle.join(f), f);
    }
    for f in ["image_encoder", "feature_extractor"] {
        cache_folder(&home, hub::FLUX_REDUX, &bundle.join(f), f);
    }
    // SAFETY: this test binary runs this one test, so no other thread reads the environment.
    unsafe {
        std::env::set_var("HF_HOME", &home);
        std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
        std::env::set_var("HF_TOKEN", "hf_test_token");
    }
    let quiet = HubOptions { progress: false, retries: 0 };
    let paths = hub::fetch_with(hub::ORIGINAL, quiet).unwrap();
    assert!(paths.transformer.starts_with(&home), "{}", paths.transformer.display());
    let report = paths.inspect();
    assert!(report.is_complete(), "{report}");

    let t = std::time::Instant::now();
    let e = hub::fetch_with(hub::F1, quiet).unwrap_err().to_string();
    assert!(e.contains(hub::F1) && e.contains("config.json"), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(30), "a dead endpoint took {:?}", t.elapsed());
    let _ = std::fs::remove_dir_all(&root);
}
