//! Text and image encoders: parity with transformers on tiny random models, exact real checkpoint
//! names, tokenizer/template handling, the prompt cache, and errors on bad input.

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use framepack::models::text::clip::{ClipTextConfig, ClipTextModel};
use framepack::models::text::llama::{Llama, LlamaConfig};
use framepack::models::text::{
    self, EncodePrompt, PromptCache, PromptEncoder, PromptEncoderFiles, PromptEncoderOptions, PromptFeatures,
    PromptTemplate,
};
use framepack::models::vision::{SiglipVisionConfig, SiglipVisionModel};
use framepack::weights::{self, WeightFiles};
use framepack::{Error, WeightsError};

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("framepack-encoders-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The model config stored in a fixture's safetensors metadata (`description` → `config`).
fn fixture_config(name: &str) -> String {
    let bytes = std::fs::read(common::fixture_path(name)).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let desc = header["__metadata__"]["description"].as_str().expect("fixture has a description");
    let desc: serde_json::Value = serde_json::from_str(desc).unwrap();
    desc["config"].to_string()
}

/// Writes the fixture's `weights.*` tensors, with the prefix stripped, to a file of their own, so
/// the models load through the strict loader with the exact HF names.
fn fixture_weights(name: &str) -> PathBuf {
    let f = common::load_fixture(name);
    let w: HashMap<String, Tensor> =
        f.iter().filter_map(|(k, v)| k.strip_prefix("weights.").map(|k| (k.to_string(), v.clone()))).collect();
    assert!(!w.is_empty(), "{name} has no weights");
    let path = tmp_dir("weights").join(name);
    candle_core::safetensors::save(&w, &path).unwrap();
    path
}

fn load<M>(
    file: &Path,
    build: impl FnOnce(candle_nn::VarBuilder<'_>) -> candle_core::Result<M>,
) -> framepack::Result<M> {
    weights::load(WeightFiles::open(&[file])?, DType::F32, &Device::Cpu, build)
}

fn tiny_llama_config() -> LlamaConfig {
    LlamaConfig::from_json(&fixture_config("llama_tiny.safetensors")).unwrap()
}

fn tiny_clip_config() -> ClipTextConfig {
    ClipTextConfig::from_json(&fixture_config("clip_text_tiny.safetensors")).unwrap()
}

fn report(what: &str, got: &Tensor, want: &Tensor) {
    let (rel, max) = common::assert_close(what, got, want);
    println!("{what}: rel-L2 {rel:.3e}, max-abs {max:.3e}");
}

#[test]
fn llama_tiny_matches_transformers() {
    let f = common::load_fixture("llama_tiny.safetensors");
    let cfg = tiny_llama_config();
    assert_eq!((cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, cfg.rope_theta), (4, 2, 8, 5e5));
    let model = load(&fixture_weights("llama_tiny.safetensors"), |vb| Llama::new(vb, &cfg)).unwrap();
    let valid = common::get(&f, "in.attention_mask").sum_all().unwrap().to_scalar::<i64>().unwrap() as usize;
    assert_eq!(valid, 9);
    let ids = common::get(&f, "in.input_ids").narrow(1, 0, valid).unwrap();
    let want = |k: &str| common::get(&f, k).narrow(1, 0, valid).unwrap();

    let minus3 = model.forward_hidden(&ids, cfg.num_hidden_layers - 2).unwrap();
    report("llama_tiny hidden_states[-3]", &minus3, &want("out.hidden_states_minus3"));
    let all = model.hidden_states(&ids).unwrap();
    assert_eq!(all.len(), 5);
    for (i, h) in all.iter().enumerate() {
        report(&format!("llama_tiny hidden_states.{i}"), h, &want(&format!("out.hidden_states.{i}")));
    }
    report("llama_tiny last_hidden_state", &all[4], &want("out.last_hidden_state"));
    for n in 0..=cfg.num_hidden_layers - 1 {
        let h = model.forward_hidden(&ids, n).unwrap();
        common::assert_close(&format!("forward_hidden({n})"), &h, &want(&format!("out.hidden_states.{n}")));
    }
}

#[test]
fn llama_first_layers_accepts_the_full_checkpoint() {
    let f = common::load_fixture("llama_tiny.safetensors");
    let cfg = tiny_llama_config();
    let model = load(&fixture_weights("llama_tiny.safetensors"), |vb| Llama::new_first_layers(vb, &cfg, 2)).unwrap();
    assert_eq!(model.loaded_layers(), 2);
    let ids = common::get(&f, "in.input_ids").narrow(1, 0, 9).unwrap();
    let h = model.forward_hidden(&ids, 2).unwrap();
    let want = common::get(&f, "out.hidden_states_minus3").narrow(1, 0, 9).unwrap();
    report("llama_tiny (30-of-32 style load) hidden_states[-3]", &h, &want);
    assert!(matches!(model.forward_hidden(&ids, 3), Err(Error::Invalid { what: "n_layers", .. })));
    assert!(matches!(model.hidden_states(&ids), Err(Error::Invalid { .. })));
}

#[test]
fn llama_config_json_spellings() {
    let legacy = r#"{"vocab_size": 128320, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "hidden_act": "silu", "max_position_embeddings": 8192, "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0, "rope_scaling": null, "attention_bias": false, "mlp_bias": false,
        "tie_word_embeddings": false, "torch_dtype": "float16", "model_type": "llama"}"#;
    assert_eq!(LlamaConfig::from_json(legacy).unwrap(), LlamaConfig::llava_llama3_8b());
    let scaled = legacy.replace(r#""rope_scaling": null"#, r#""rope_scaling": {"rope_type": "llama3", "factor": 8.0}"#);
    let e = LlamaConfig::from_json(&scaled).unwrap_err();
    assert!(e.to_string().contains("rope_scaling"), "{e}");
    let bad_heads = legacy.replace(r#""num_key_value_heads": 8"#, r#""num_key_value_heads": 5"#);
    assert!(LlamaConfig::from_json(&bad_heads).is_err());
}

#[test]
fn clip_text_tiny_matches_transformers() {
    let f = common::load_fixture("clip_text_tiny.safetensors");
    let cfg = tiny_clip_config();
    assert_eq!(cfg.eos_token_id, 98);
    let model = load(&fixture_weights("clip_text_tiny.safetensors"), |vb| ClipTextModel::new(vb, &cfg)).unwrap();
    let ids = common::get(&f, "in.input_ids");
    let out = model.forward(ids).unwrap();
    report("clip_text_tiny pooler_output", &out.pooler_output, common::get(&f, "out.pooler_output"));
    report("clip_text_tiny last_hidden_state", &out.last_hidden_state, common::get(&f, "out.last_hidden_state"));

    // Causal attention: running only up to the EOS gives the same pooled output.
    let short = model.forward(&ids.narrow(1, 0, 6).unwrap()).unwrap();
    common::assert_close("clip pooled (unpadded)", &short.pooler_output, common::get(&f, "out.pooler_output"));
}

#[test]
fn clip_pooled_index_rules() {
    let legacy = ClipTextConfig::clip_vit_large_patch14();
    assert_eq!(legacy.pooled_index(&[49406, 320, 2368, 49407, 49407, 49407]), 3);
    let tiny = tiny_clip_config();
    assert_eq!(tiny.pooled_index(&[97, 12, 40, 7, 63, 98, 98]), 5);
    assert_eq!(tiny.pooled_index(&[97, 12, 40]), 0);
}

#[test]
fn siglip_vision_tiny_matches_transformers() {
    let f = common::load_fixture("siglip_vision_tiny.safetensors");
    let cfg = SiglipVisionConfig::from_json(&fixture_config("siglip_vision_tiny.safetensors")).unwrap();
    assert_eq!((cfg.num_patches(), cfg.vision_use_head), (16, true));
    let model =
        load(&fixture_weights("siglip_vision_tiny.safetensors"), |vb| SiglipVisionModel::new(vb, &cfg)).unwrap();
    let last = model.forward(common::get(&f, "in.pixel_values")).unwrap();
    report("siglip_vision_tiny last_hidden_state", &last, common::get(&f, "out.last_hidden_state"));
    let pooled = model.pooler_output(&last).unwrap();
    report("siglip_vision_tiny pooler_output (head)", &pooled, common::get(&f, "out.pooler_output"));

    let e = model.forward(&Tensor::zeros((1, 3, 32, 24), DType::F32, &Device::Cpu).unwrap()).unwrap_err();
    assert!(matches!(&e, Error::Invalid { what: "pixel values", .. }), "{e}");
    assert!(e.to_string().contains("(batch, 3, 32, 32)"), "{e}");
    assert!(model.forward(&Tensor::zeros((3, 32, 32), DType::F32, &Device::Cpu).unwrap()).is_err());
}

#[test]
fn siglip_head_is_part_of_the_strict_name_set() {
    let mut cfg = SiglipVisionConfig::from_json(&fixture_config("siglip_vision_tiny.safetensors")).unwrap();
    cfg.vision_use_head = false;
    let r = load(&fixture_weights("siglip_vision_tiny.safetensors"), |vb| SiglipVisionModel::new(vb, &cfg));
    match r {
        Err(Error::Weights(WeightsError::Unexpected { names, .. })) => {
            assert_eq!(names.len(), 11);
            assert!(names.iter().all(|n| n.starts_with("head.")), "{names:?}");
        }
        Err(e) => panic!("expected unexpected head tensors, got {e}"),
        Ok(_) => panic!("a head-less model must not silently accept head tensors"),
    }
}

fn real_keys(model: &str) -> (BTreeMap<String, Vec<usize>>, usize) {
    let text = std::fs::read_to_string(common::fixture_path("real_keys.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entry = &json[model];
    let keys: BTreeMap<String, Vec<usize>> = serde_json::from_value(entry["keys"].clone()).unwrap();
    (keys, entry["num_tensors"].as_u64().unwrap() as usize)
}

#[test]
fn real_checkpoints_load_by_exact_names() {
    let llama_cfg = LlamaConfig::llava_llama3_8b();
    let clip_cfg = ClipTextConfig::clip_vit_large_patch14();
    let siglip_cfg = SiglipVisionConfig::so400m_patch14_384();
    assert_eq!(siglip_cfg.num_patches(), 729);

    let (keys, n) = real_keys("llava_llama3_8b_text");
    let asked = weights::requested_shapes(|vb| Llama::new(vb, &llama_cfg)).unwrap();
    assert_eq!((asked.len(), n), (290, 290));
    assert_eq!(asked, keys);
    weights::check_shapes("llava_llama3_8b_text", keys.clone(), |vb| Llama::new(vb, &llama_cfg)).unwrap();
    weights::check_shapes("llava_llama3_8b_text", keys, |vb| Llama::new_first_layers(vb, &llama_cfg, 30)).unwrap();

    let (keys, n) = real_keys("clip_l_text");
    let asked = weights::requested_shapes(|vb| ClipTextModel::new(vb, &clip_cfg)).unwrap();
    assert_eq!((asked.len(), n), (196, 196));
    assert_eq!(asked, keys);
    weights::check_shapes("clip_l_text", keys, |vb| ClipTextModel::new(vb, &clip_cfg)).unwrap();

    let (keys, n) = real_keys("siglip_so400m_vision");
    let asked = weights::requested_shapes(|vb| SiglipVisionModel::new(vb, &siglip_cfg)).unwrap();
    assert_eq!((asked.len(), n), (448, 448));
    assert_eq!(asked, keys);
    weights::check_shapes("siglip_so400m_vision", keys, |vb| SiglipVisionModel::new(vb, &siglip_cfg)).unwrap();
    println!("real keys: llama 290/290, clip 196/196, siglip 448/448 (incl. 11 head.*) match exactly");
}

#[test]
fn real_checkpoint_mismatches_are_named() {
    let cfg = LlamaConfig::llava_llama3_8b();
    let (mut keys, _) = real_keys("llava_llama3_8b_text");
    keys.remove("layers.31.mlp.down_proj.weight");
    let e = weights::check_shapes("llama", keys.clone(), |vb| Llama::new_first_layers(vb, &cfg, 30)).unwrap_err();
    assert!(e.to_string().contains("layers.31.mlp.down_proj.weight"), "{e}");

    let (mut keys, _) = real_keys("llava_llama3_8b_text");
    keys.insert("lm_head.weight".into(), vec![128_320, 4096]);
    let e = weights::check_shapes("llama", keys, |vb| Llama::new(vb, &cfg)).unwrap_err();
    assert!(matches!(&e, Error::Weights(WeightsError::Unexpected { names, .. }) if names == &["lm_head.weight"]));

    let mut small_vocab = cfg.clone();
    small_vocab.vocab_size = 128_256;
    let (keys, _) = real_keys("llava_llama3_8b_text");
    let e = weights::check_shapes("llama", keys, |vb| Llama::new(vb, &small_vocab)).unwrap_err();
    assert!(
        matches!(&e, Error::Weights(WeightsError::ShapeMismatch { name, .. }) if name == "embed_tokens.weight"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tokenizers, template, prompt encoder, cache.

const LLAMA_SPECIALS: [(&str, u32); 4] =
    [("<s>", 1), ("<|start_header_id|>", 4), ("<|end_header_id|>", 5), ("<|eot_id|>", 6)];
const LLAMA_WORDS: [&str; 12] =
    ["a", "cat", "runs", "on", "the", "grass", "video", "system", "user", "Describe", "objects", "."];

fn added_token(content: &str, id: u32) -> serde_json::Value {
    serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": true})
}

/// A WordLevel tokenizer.json: whitespace/punctuation split, `bos` in front, `eos` at the end.
fn tokenizer_json(
    specials: &[(&str, u32)],
    words: &[(&str, u32)],
    bos: (&str, u32),
    eos: Option<(&str, u32)>,
    lowercase: bool,
) -> String {
    let mut vocab = serde_json::Map::new();
    for (w, id) in specials.iter().chain(words) {
        vocab.insert(w.to_string(), (*id).into());
    }
    let mut single = vec![
        serde_json::json!({"SpecialToken": {"id": bos.0, "type_id": 0}}),
        serde_json::json!({"Sequence": {"id": "A", "type_id": 0}}),
    ];
    let mut special_tokens = serde_json::Map::new();
    special_tokens.insert(bos.0.into(), serde_json::json!({"id": bos.0, "ids": [bos.1], "tokens": [bos.0]}));
    if let Some((e, id)) = eos {
        single.push(serde_json::json!({"SpecialToken": {"id": e, "type_id": 0}}));
        special_tokens.insert(e.into(), serde_json::json!({"id": e, "ids": [id], "tokens": [e]}));
    }
    let mut pair = single.clone();
    pair.push(serde_json::json!({"Sequence": {"id": "B", "type_id": 1}}));
    serde_json::json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 3, "strategy": "LongestFirst", "stride": 0},
        "padding": null,
        "added_tokens": specials.iter().map(|(c, id)| added_token(c, *id)).collect::<Vec<_>>(),
        "normalizer": if lowercase { serde_json::json!({"type": "Lowercase"}) } else { serde_json::Value::Null },
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing", "single": single, "pair": pair,
            "special_tokens": special_tokens},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
    .to_string()
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn llama_words() -> Vec<(&'static str, u32)> {
    let mut w: Vec<(&str, u32)> = vec![("<unk>", 3)];
    w.extend(LLAMA_WORDS.iter().enumerate().map(|(i, s)| (*s, 10 + i as u32)));
    w
}

fn llama_tokenizer_file(dir: &Path, bos: &str) -> PathBuf {
    let mut specials = LLAMA_SPECIALS.to_vec();
    specials[0].0 = bos;
    let json = tokenizer_json(&specials, &llama_words(), (bos, 1), None, false);
    write_file(dir, &format!("llama-{}.json", bos.len()), &json)
}

fn clip_tokenizer_file(dir: &Path) -> PathBuf {
    let specials = [("<|startoftext|>", 97), ("<|endoftext|>", 98)];
    let words: Vec<(&str, u32)> =
        [("<unk>", 0), ("a", 12), ("cat", 40), ("runs", 7), ("on", 63), ("grass", 20)].to_vec();
    let json = tokenizer_json(&specials, &words, ("<|startoftext|>", 97), Some(("<|endoftext|>", 98)), true);
    write_file(dir, "clip.json", &json)
}

/// Tokens of the HunyuanVideo template prefix under the test tokenizer: BOS, the 3 special
/// tokens, and 88 words/punctuation runs (`\w+|[^\w\s]+`), counted with Python's `re`.
const TINY_CROP_START: usize = 92;

fn tiny_encoder_files(dir: &Path) -> PromptEncoderFiles {
    PromptEncoderFiles {
        llama_config: tiny_llama_config(),
        llama_weights: vec![fixture_weights("llama_tiny.safetensors")],
        llama_tokenizer: llama_tokenizer_file(dir, "<s>"),
        clip_config: tiny_clip_config(),
        clip_weights: vec![fixture_weights("clip_text_tiny.safetensors")],
        clip_tokenizer: clip_tokenizer_file(dir),
        store: Default::default(),
    }
}

#[test]
fn template_crop_is_computed_from_the_tokenizer() {
    let dir = tmp_dir("template");
    let tok = text::load_tokenizer(&llama_tokenizer_file(&dir, "<s>")).unwrap();
    let t = PromptTemplate::hunyuan_video();
    assert!(t.prefix().ends_with("<|start_header_id|>user<|end_header_id|>\n\n"));
    assert!(text::HUNYUAN_VIDEO_TEMPLATE.contains("video.2. The color"), "no space after the item periods");
    assert_eq!(t.apply("a cat"), text::HUNYUAN_VIDEO_TEMPLATE.replace("{}", "a cat"));
    assert_eq!(t.crop_start(&tok).unwrap(), TINY_CROP_START);

    // A custom template: BOS + `<|start_header_id|>` + "a" + "cat" = 4 prefix tokens.
    let custom = PromptTemplate::new("<|start_header_id|>a cat {}<|eot_id|>").unwrap();
    assert_eq!(custom.crop_start(&tok).unwrap(), 4);
    assert!(PromptTemplate::new("no placeholder").is_err());
    assert!(PromptTemplate::new("{} twice {}").is_err());

    // With a Llama-3 tokenizer (it has `<|begin_of_text|>`) the HunyuanVideo prefix must be the
    // 95 tokens the model was trained with; this tiny vocabulary gives 92, so it is refused.
    let llama3ish = text::load_tokenizer(&llama_tokenizer_file(&dir, "<|begin_of_text|>")).unwrap();
    let e = t.crop_start(&llama3ish).unwrap_err();
    assert!(e.to_string().contains("expected 95"), "{e}");
}

#[test]
fn prompt_encoder_features_follow_framepack() {
    let dir = tmp_dir("encoder");
    let files = tiny_encoder_files(&dir);
    let enc = PromptEncoder::load(&files, PromptEncoderOptions::default(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(enc.crop_start(), TINY_CROP_START);

    let ids = enc.llama_token_ids("a cat runs on the grass").unwrap();
    let eot = 6;
    assert_eq!(ids[0], 1, "BOS first");
    assert_eq!(&ids[TINY_CROP_START..], &[10, 11, 12, 13, 14, 15, eot]);
    assert_eq!(enc.clip_token_ids("A cat runs").unwrap(), vec![97, 12, 40, 7, 98]);

    let feats = enc.encode("a cat runs on the grass").unwrap();
    assert_eq!(feats.llama.dims(), &[1, 7, 32]);
    assert_eq!(feats.clip_pooled.dims(), &[1, 32]);

    // Same numbers as running the full model on the whole templated sequence and cropping.
    let cfg = tiny_llama_config();
    let full = load(&files.llama_weights[0], |vb| Llama::new(vb, &cfg)).unwrap();
    let t = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let want = full.hidden_states(&t).unwrap()[2].narrow(1, TINY_CROP_START, 7).unwrap();
    common::assert_close("prompt features", &feats.llama, &want);
    let clip = load(&files.clip_weights[0], |vb| ClipTextModel::new(vb, &files.clip_config)).unwrap();
    let clip_ids = [97u32, 12, 40, 7, 63, 0, 20, 98];
    assert_eq!(enc.clip_token_ids("a cat runs on the grass").unwrap(), clip_ids, "`the` is unknown (0)");
    let cids = Tensor::new(&[clip_ids], &Device::Cpu).unwrap();
    let pooled = clip.forward(&cids).unwrap().pooler_output;
    common::assert_close("clip pooled", &feats.clip_pooled, &pooled);

    // Empty prompt: only the trailing <|eot_id|> remains, as in FramePack.
    let empty = enc.encode("").unwrap();
    assert_eq!(empty.llama_len(), 1);

    // Long prompts keep at most 256 tokens (the trailing <|eot_id|> is truncated away).
    let long = vec!["cat"; 300].join(" ");
    let ids = enc.llama_token_ids(&long).unwrap();
    assert_eq!(ids.len(), TINY_CROP_START + 256);
    assert_eq!(*ids.last().unwrap(), 11);
    assert_eq!(enc.encode(&long).unwrap().llama_len(), 256);
    let cl = enc.clip_token_ids(&long).unwrap();
    assert_eq!((cl.len(), cl[15]), (16, 98), "CLIP truncation keeps BOS and EOS");

    // FramePack's crop_or_pad_yield_mask to 512.
    let (x, mask) = feats.padded(text::PADDED_TEXT_LEN).unwrap();
    assert_eq!(x.dims(), &[1, 512, 32]);
    assert_eq!(mask.dtype(), DType::U8);
    assert_eq!(mask.sum_all().unwrap().to_dtype(DType::U32).unwrap().to_scalar::<u32>().unwrap(), 7);
    assert_eq!(x.i((.., 7..)).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    common::assert_close("padded head", &x.narrow(1, 0, 7).unwrap(), &feats.llama);
    let (x2, m2) = feats.padded(4).unwrap();
    assert_eq!((x2.dims(), m2.dims()), (&[1, 4, 32][..], &[1, 4][..]));
    let z = feats.zeros_like().unwrap();
    assert_eq!(z.llama.dims(), feats.llama.dims());
}

struct Counting<'a> {
    inner: &'a PromptEncoder,
    calls: Cell<usize>,
}

impl EncodePrompt for Counting<'_> {
    fn encode_prompt(&self, prompt: &str) -> framepack::Result<PromptFeatures> {
        self.calls.set(self.calls.get() + 1);
        self.inner.encode(prompt)
    }
}

#[test]
fn prompt_cache_runs_the_encoder_once_per_prompt() {
    let dir = tmp_dir("cache");
    let files = tiny_encoder_files(&dir);
    let enc = PromptEncoder::load(&files, PromptEncoderOptions::default(), DType::F32, &Device::Cpu).unwrap();
    let counting = Counting { inner: &enc, calls: Cell::new(0) };
    let mut cache = PromptCache::new();
    let a = cache.get_or_encode("a cat runs", &counting).unwrap();
    let b = cache.get_or_encode("a cat runs", &counting).unwrap();
    assert_eq!(counting.calls.get(), 1);
    common::assert_close("cached", &b.llama, &a.llama);
    cache.get_or_encode("the grass", &counting).unwrap();
    assert_eq!((counting.calls.get(), cache.len()), (2, 2));

    // The loader runs only when a prompt is missing, and the encoder is dropped afterwards.
    let loads = Cell::new(0);
    let n = cache
        .encode_missing(&["a cat runs", "the grass"], || {
            loads.set(loads.get() + 1);
            PromptEncoder::load(&files, PromptEncoderOptions::default(), DType::F32, &Device::Cpu)
        })
        .unwrap();
    assert_eq!((n, loads.get()), (0, 0));
    let n = cache
        .encode_missing(&["a cat runs", "", ""], || {
            loads.set(loads.get() + 1);
            PromptEncoder::load(&files, PromptEncoderOptions::default(), DType::F32, &Device::Cpu)
        })
        .unwrap();
    assert_eq!((n, loads.get(), cache.len()), (1, 1, 3));
    assert_eq!(cache.get("").unwrap().llama_len(), 1);
    assert!(cache.remove("").is_some());
    cache.clear();
    assert!(cache.is_empty());
}

#[test]
fn tokenizer_and_input_errors_are_clear() {
    let dir = tmp_dir("errors");
    let mut files = tiny_encoder_files(&dir);

    let missing = dir.join("nope/tokenizer.json");
    let e = text::load_tokenizer(&missing).unwrap_err();
    assert!(matches!(&e, Error::Invalid { what: "tokenizer file", .. }), "{e}");
    assert!(e.to_string().contains("nope/tokenizer.json"), "{e}");
    let garbage = write_file(&dir, "garbage.json", "{ not json");
    assert!(matches!(text::load_tokenizer(&garbage), Err(Error::Invalid { what: "tokenizer file", .. })));

    files.clip_tokenizer = missing;
    let r = PromptEncoder::load(&files, PromptEncoderOptions::default(), DType::F32, &Device::Cpu);
    assert!(matches!(r, Err(Error::Invalid { what: "tokenizer file", .. })));

    let files = tiny_encoder_files(&dir);
    let opts = PromptEncoderOptions { skip_last_layers: 5, ..Default::default() };
    assert!(PromptEncoder::load(&files, opts, DType::F32, &Device::Cpu).is_err());
    let opts = PromptEncoderOptions { max_prompt_tokens: 0, ..Default::default() };
    assert!(PromptEncoder::load(&files, opts, DType::F32, &Device::Cpu).is_err());

    let cfg = tiny_llama_config();
    let llama = load(&files.llama_weights[0], |vb| Llama::new(vb, &cfg)).unwrap();
    let e = llama.forward_hidden(&Tensor::new(&[[1u32, 64]], &Device::Cpu).unwrap(), 2).unwrap_err();
    assert!(e.to_string().contains("outside the vocabulary"), "{e}");
    assert!(llama.forward_hidden(&Tensor::zeros((1, 0), DType::U32, &Device::Cpu).unwrap(), 2).is_err());
    assert!(llama.forward_hidden(&Tensor::zeros(3, DType::U32, &Device::Cpu).unwrap(), 2).is_err());

    let clip = load(&files.clip_weights[0], |vb| ClipTextModel::new(vb, &files.clip_config)).unwrap();
    let e = clip.forward(&Tensor::zeros((1, 17), DType::U32, &Device::Cpu).unwrap()).unwrap_err();
    assert!(e.to_string().contains("1..=16"), "{e}");
    assert!(clip.forward(&Tensor::new(&[[97u32, 99]], &Device::Cpu).unwrap()).is_err());

    // A template whose prefix leaves nothing after the crop is refused per prompt.
    let enc_opts = PromptEncoderOptions { template: PromptTemplate::new("a cat {}").unwrap(), ..Default::default() };
    let enc = PromptEncoder::load(&files, enc_opts, DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(enc.encode(""), Err(Error::Invalid { what: "prompt", .. })));
    assert_eq!(enc.encode("grass").unwrap().llama_len(), 1);
}

#[test]
fn siglip_encode_image_is_preprocess_then_forward() {
    let cfg = SiglipVisionConfig::from_json(&fixture_config("siglip_vision_tiny.safetensors")).unwrap();
    let files = [fixture_weights("siglip_vision_tiny.safetensors")];
    let model = SiglipVisionModel::load(&files, &cfg, DType::F32, &Device::Cpu).unwrap();
    let data: Vec<u8> = (0..40 * 56 * 3).map(|i| ((i * 37 + i / 7) % 256) as u8).collect();
    let img = framepack::preprocess::RgbImage::new(56, 40, data).unwrap();
    let px = framepack::preprocess::siglip_pixel_values(&img, 32, &Device::Cpu).unwrap();
    let want = model.forward(&px).unwrap();
    let got = model.encode_image(&img).unwrap();
    assert_eq!(got.dims(), &[1, 16, 32]);
    common::assert_close("encode_image", &got, &want);
}

/// The same tiny models in bf16 (the dtype the real encoders run in) stay close to f32.
#[test]
fn encoders_run_in_bf16() {
    let close = |what: &str, got: &Tensor, want: &Tensor| {
        let (rel, _) = common::errors(&got.to_dtype(DType::F32).unwrap(), want);
        println!("{what} bf16 vs transformers f32: rel-L2 {rel:.2e}");
        assert!(got.dtype() == DType::BF16 && rel < 3e-2, "{what}: rel-L2 {rel:e}");
    };
    let bf16 = |file: &Path| WeightFiles::open(&[file]).unwrap();

    let f = common::load_fixture("llama_tiny.safetensors");
    let cfg = tiny_llama_config();
    let m = weights::load(bf16(&fixture_weights("llama_tiny.safetensors")), DType::BF16, &Device::Cpu, |vb| {
        Llama::new_first_layers(vb, &cfg, 2)
    })
    .unwrap();
    let ids = common::get(&f, "in.input_ids").narrow(1, 0, 9).unwrap();
    let want = common::get(&f, "out.hidden_states_minus3").narrow(1, 0, 9).unwrap();
    close("llama hidden_states[-3]", &m.forward_hidden(&ids, 2).unwrap(), &want);

    let f = common::load_fixture("clip_text_tiny.safetensors");
    let cfg = tiny_clip_config();
    let m = weights::load(bf16(&fixture_weights("clip_text_tiny.safetensors")), DType::BF16, &Device::Cpu, |vb| {
        ClipTextModel::new(vb, &cfg)
    })
    .unwrap();
    close(
        "clip pooler_output",
        &m.forward(common::get(&f, "in.input_ids")).unwrap().pooler_output,
        common::get(&f, "out.pooler_output"),
    );

    let f = common::load_fixture("siglip_vision_tiny.safetensors");
    let cfg = SiglipVisionConfig::from_json(&fixture_config("siglip_vision_tiny.safetensors")).unwrap();
    let m = weights::load(bf16(&fixture_weights("siglip_vision_tiny.safetensors")), DType::BF16, &Device::Cpu, |vb| {
        SiglipVisionModel::new(vb, &cfg)
    })
    .unwrap();
    close(
        "siglip last_hidden_state",
        &m.forward(common::get(&f, "in.pixel_values")).unwrap(),
        common::get(&f, "out.last_hidden_state"),
    );
}

/// Configs of `encoder_variants_tiny.safetensors`, by model prefix.
fn variant_config(model: &str) -> String {
    let bytes = std::fs::read(common::fixture_path("encoder_variants_tiny.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let configs: serde_json::Value = serde_json::from_str(header["__metadata__"]["configs"].as_str().unwrap()).unwrap();
    configs[model].to_string()
}

fn variant_weights(model: &str) -> PathBuf {
    let f = common::load_fixture("encoder_variants_tiny.safetensors");
    let prefix = format!("{model}.weights.");
    let w: HashMap<String, Tensor> =
        f.iter().filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_string(), v.clone()))).collect();
    let path = tmp_dir("variants").join(format!("{model}.safetensors"));
    candle_core::safetensors::save(&w, &path).unwrap();
    path
}

/// Other shapes and options than the HunyuanVideo-like fixtures: multi-query attention with an
/// explicit head_dim and biases, CLIP's legacy argmax pooling with erf GELU and a batch whose
/// rows end at different positions, SigLIP with a patch remainder and no head; batch 2 each.
#[test]
fn other_configs_match_transformers() {
    let f = common::load_fixture("encoder_variants_tiny.safetensors");

    let cfg = LlamaConfig::from_json(&variant_config("llama_b")).unwrap();
    assert_eq!((cfg.num_key_value_heads, cfg.head_dim, cfg.attention_bias, cfg.rope_theta), (1, 16, true, 1e4));
    let m = load(&variant_weights("llama_b"), |vb| Llama::new(vb, &cfg)).unwrap();
    let ids = common::get(&f, "llama_b.in.input_ids");
    for (i, h) in m.hidden_states(ids).unwrap().iter().enumerate() {
        report(&format!("llama_b hidden_states.{i}"), h, common::get(&f, &format!("llama_b.out.hidden_states.{i}")));
    }

    let cfg = LlamaConfig::from_json(&variant_config("llama_c")).unwrap();
    assert_eq!((cfg.head_dim, cfg.rope_theta), (128, 5e5));
    let m = load(&variant_weights("llama_c"), |vb| Llama::new(vb, &cfg)).unwrap();
    let ids = common::get(&f, "llama_c.in.input_ids");
    assert_eq!(ids.dims(), &[1, 351]);
    let h = m.forward_hidden(ids, 1).unwrap();
    report("llama_c (head_dim 128, 351 tokens) hidden_states.1", &h, common::get(&f, "llama_c.out.hidden_states.1"));

    let cfg = ClipTextConfig::from_json(&variant_config("clip_b")).unwrap();
    assert_eq!(cfg.eos_token_id, 2);
    let m = load(&variant_weights("clip_b"), |vb| ClipTextModel::new(vb, &cfg)).unwrap();
    let out = m.forward(common::get(&f, "clip_b.in.input_ids")).unwrap();
    report("clip_b pooler_output", &out.pooler_output, common::get(&f, "clip_b.out.pooler_output"));
    report("clip_b last_hidden_state", &out.last_hidden_state, common::get(&f, "clip_b.out.last_hidden_state"));

    let cfg = SiglipVisionConfig::from_json(&variant_config("siglip_b")).unwrap();
    assert_eq!((cfg.grid(), cfg.vision_use_head), (4, false));
    let m = load(&variant_weights("siglip_b"), |vb| SiglipVisionModel::new(vb, &cfg)).unwrap();
    let last = m.forward(common::get(&f, "siglip_b.in.pixel_values")).unwrap();
    report("siglip_b last_hidden_state", &last, common::get(&f, "siglip_b.out.last_hidden_state"));
    assert!(matches!(m.pooler_output(&last), Err(Error::Invalid { .. })));
}

#[test]
fn hunyuan_video_snapshot_layout() {
    let root = tmp_dir("snapshot");
    for sub in ["text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let e = PromptEncoderFiles::hunyuan_video(&root).unwrap_err();
    assert!(e.to_string().contains("no .safetensors files"), "{e}");

    std::fs::copy(
        fixture_weights("llama_tiny.safetensors"),
        root.join("text_encoder/model-00001-of-00001.safetensors"),
    )
    .unwrap();
    std::fs::copy(fixture_weights("clip_text_tiny.safetensors"), root.join("text_encoder_2/model.safetensors"))
        .unwrap();
    std::fs::write(root.join("text_encoder/config.json"), fixture_config("llama_tiny.safetensors")).unwrap();
    std::fs::write(root.join("text_encoder_2/config.json"), fixture_config("clip_text_tiny.safetensors")).unwrap();
    let dir = tmp_dir("snapshot-tok");
    std::fs::copy(llama_tokenizer_file(&dir, "<s>"), root.join("tokenizer/tokenizer.json")).unwrap();
    std::fs::copy(clip_tokenizer_file(&dir), root.join("tokenizer_2/tokenizer.json")).unwrap();

    let files = PromptEncoderFiles::hunyuan_video(&root).unwrap();
    assert_eq!(files.llama_config, tiny_llama_config());
    let enc = PromptEncoder::load(&files, PromptEncoderOptions::default(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(enc.encode("a cat").unwrap().llama.dims(), &[1, 3, 32]);

    std::fs::remove_file(root.join("text_encoder/config.json")).unwrap();
    let files = PromptEncoderFiles::hunyuan_video(&root).unwrap();
    assert_eq!(files.llama_config, LlamaConfig::llava_llama3_8b());
    let e = PromptEncoder::load(&files, PromptEncoderOptions::default(), DType::F32, &Device::Cpu).err().unwrap();
    assert!(matches!(e, Error::Weights(WeightsError::ShapeMismatch { .. })), "{e}");
}
