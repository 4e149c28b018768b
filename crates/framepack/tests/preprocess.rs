//! Image preprocessing: buckets, Pillow-exact resizes, FramePack's crop, SigLIP pixel values.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use framepack::Error;
use framepack::preprocess::{
    self, BUCKETS_640, Filter, PassOrder, RgbImage, buckets, find_nearest_bucket, resize, resize_and_center_crop,
    resize_with_order,
};

fn image_from(t: &Tensor) -> RgbImage {
    let (h, w, c) = t.dims3().unwrap();
    assert_eq!(c, 3);
    let data: Vec<u8> = t.to_dtype(DType::U8).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    RgbImage::new(w, h, data).unwrap()
}

fn max_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!((a.width(), a.height()), (b.width(), b.height()));
    a.data().iter().zip(b.data()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

#[test]
fn bucket_list_and_nearest_bucket_follow_framepack() {
    assert_eq!(BUCKETS_640.len(), 14);
    assert_eq!(buckets(640).unwrap(), BUCKETS_640.to_vec());
    for (h, w) in BUCKETS_640 {
        assert!(h % 32 == 0 && w % 32 == 0 && (BUCKETS_640.contains(&(w, h))));
        let mp = (h * w) as f64 / 1e6;
        assert!((0.37..0.41).contains(&mp), "{h}x{w}");
    }
    // Square input: (608, 640) and (640, 608) tie; the later entry wins.
    assert_eq!(find_nearest_bucket(640, 640, 640).unwrap(), (640, 608));
    assert_eq!(find_nearest_bucket(1024, 1024, 640).unwrap(), (640, 608));
    assert_eq!(find_nearest_bucket(1080, 1920, 640).unwrap(), (480, 832));
    assert_eq!(find_nearest_bucket(1920, 1080, 640).unwrap(), (832, 480));
    assert_eq!(find_nearest_bucket(100, 1000, 640).unwrap(), (416, 960));
    assert_eq!(find_nearest_bucket(1000, 100, 640).unwrap(), (960, 416));
    assert_eq!(find_nearest_bucket(600, 800, 640).unwrap(), (544, 704));

    // Other bases: the 640 bucket scaled by base/640, rounded half-to-even to a multiple of 16.
    assert_eq!(find_nearest_bucket(640, 640, 320).unwrap(), (320, 304));
    assert_eq!(find_nearest_bucket(1080, 1920, 960).unwrap(), (720, 1248));
    // Lists computed with Python's `round(x * base / 640 / 16) * 16`; base 480 has half-way
    // cases that round to even (864 → 40.5 → 640, 480 → 22.5 → 352, 416 → 19.5 → 320).
    let b320 = [(208, 480), (224, 432), (240, 416), (256, 384), (272, 352), (288, 336), (304, 320)];
    assert_eq!(&buckets(320).unwrap()[..7], &b320);
    let b480 = [
        (320, 720),
        (336, 640),
        (352, 624),
        (384, 576),
        (416, 528),
        (432, 512),
        (448, 480),
        (480, 448),
        (512, 432),
        (528, 416),
        (576, 384),
        (624, 352),
        (640, 336),
        (720, 320),
    ];
    assert_eq!(buckets(480).unwrap(), b480.to_vec());
    assert_eq!(find_nearest_bucket(480, 640, 512).unwrap(), (432, 560));
    for base in [256, 320, 480, 512, 640, 768, 960, 1024] {
        for (h, w) in buckets(base).unwrap() {
            assert!(h % 16 == 0 && w % 16 == 0 && h > 0 && w > 0, "{base}: {h}x{w}");
        }
    }

    assert!(matches!(find_nearest_bucket(0, 640, 640), Err(Error::Invalid { .. })));
    assert!(matches!(find_nearest_bucket(640, 0, 640), Err(Error::Invalid { .. })));
    assert!(buckets(0).is_err() && buckets(8).is_err() && find_nearest_bucket(10, 10, 1 << 20).is_err());
}

#[test]
fn resizes_match_pillow() {
    let f = common::load_fixture("preprocess_pil.safetensors");
    let cases = ["down", "up", "mixed", "width_only", "height_only", "strong_down", "v_first", "v_first_widen"];
    for name in cases {
        let img = image_from(common::get(&f, &format!("in.{name}")));
        for (filter, key) in
            [(Filter::Bilinear, "bilinear"), (Filter::Bicubic, "bicubic"), (Filter::Lanczos, "lanczos")]
        {
            let want = image_from(common::get(&f, &format!("out.{key}.{name}")));
            let (w, h) = (want.width(), want.height());
            let d = max_diff(&resize_with_order(&img, w, h, filter, PassOrder::Adaptive).unwrap(), &want);
            let want_h = image_from(common::get(&f, &format!("out.{key}.{name}.h_first")));
            let d_h = max_diff(&resize(&img, w, h, filter).unwrap(), &want_h);
            let orders = max_diff(&want, &want_h);
            println!(
                "PIL {key} {name} {}x{} -> {w}x{h}: max |Δ| Pillow 13 order {d}, Pillow <= 12 order {d_h} \
                 (the two orders differ by up to {orders})",
                img.width(),
                img.height()
            );
            assert_eq!((d, d_h), (0, 0), "{key} {name}");
            if name.starts_with("v_first") {
                assert!(orders > 0, "this case must tell the pass orders apart");
            }
        }
    }
    let img = RgbImage::new(3, 2, (0..18).collect()).unwrap();
    assert_eq!(resize(&img, 3, 2, Filter::Lanczos).unwrap(), img);
    assert!(matches!(resize(&img, 0, 2, Filter::Bicubic), Err(Error::Invalid { .. })));
}

#[test]
fn resize_and_center_crop_matches_framepack() {
    let f = common::load_fixture("preprocess_pil.safetensors");
    for name in ["wide", "tall", "odd_offsets", "upscale", "same"] {
        let img = image_from(common::get(&f, &format!("in.crop.{name}")));
        let want = image_from(common::get(&f, &format!("out.crop.{name}")));
        let got = resize_and_center_crop(&img, want.width(), want.height()).unwrap();
        let d = max_diff(&got, &want);
        println!(
            "FramePack crop {name} {}x{} -> {}x{}: max |Δ| = {d}",
            img.width(),
            img.height(),
            want.width(),
            want.height()
        );
        assert_eq!(d, 0, "{name}");
    }
    let img = RgbImage::new(4, 4, vec![7; 48]).unwrap();
    assert!(resize_and_center_crop(&img, 0, 4).is_err());
}

#[test]
fn siglip_pixel_values_match_transformers() {
    let f = common::load_fixture("siglip_preprocess_tiny.safetensors");
    let img = image_from(common::get(&f, "in.image_u8_hwc"));
    assert_eq!((img.width(), img.height()), (56, 40));
    let got = preprocess::siglip_pixel_values(&img, 32, &Device::Cpu).unwrap();
    let want = common::get(&f, "out.pixel_values");
    let (rel, max) = common::assert_close("siglip_preprocess_tiny pixel_values", &got, want);
    println!("siglip_preprocess_tiny pixel_values: rel-L2 {rel:.3e}, max-abs {max:.3e}");
    assert_eq!(max, 0.0, "PIL's 8-bit resize and transformers' rescale are reproduced bit for bit");
    assert!(preprocess::siglip_pixel_values(&img, 0, &Device::Cpu).is_err());
}

#[test]
fn image_tensor_layout_and_range() {
    let data: Vec<u8> = vec![0, 255, 128, 10, 20, 30];
    let img = RgbImage::new(2, 1, data).unwrap();
    let t = preprocess::image_to_tensor(&img, &Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[1, 3, 1, 1, 2]);
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let want = [0.0f32, 10.0, 255.0, 20.0, 128.0, 30.0].map(|x| x / 127.5 - 1.0);
    assert_eq!(v, want);
    assert_eq!(t.i((0, 0, 0, 0, 0)).unwrap().to_scalar::<f32>().unwrap(), -1.0);
    assert_eq!(t.i((0, 1, 0, 0, 0)).unwrap().to_scalar::<f32>().unwrap(), 1.0);
    let _: &Tensor = &t;
}

#[test]
fn bad_images_are_errors() {
    assert!(matches!(RgbImage::new(0, 4, vec![]), Err(Error::Invalid { what: "image", .. })));
    assert!(matches!(RgbImage::new(4, 0, vec![]), Err(Error::Invalid { what: "image", .. })));
    let e = RgbImage::new(2, 2, vec![0; 11]).unwrap_err();
    assert!(e.to_string().contains("needs 12 bytes, got 11"), "{e}");
    assert!(RgbImage::new(usize::MAX, 2, vec![]).is_err());
    let img = RgbImage::new(4, 3, (0..36).collect()).unwrap();
    let c = img.crop(1, 1, 2, 2).unwrap();
    assert_eq!(c.data(), &[15, 16, 17, 18, 19, 20, 27, 28, 29, 30, 31, 32]);
    assert!(img.crop(3, 0, 2, 1).is_err());
    assert!(img.crop(0, 0, 0, 1).is_err());
}
