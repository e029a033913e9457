//! Image dataset layouts, decoding and augmentation, and the Emoji-10 planner, on fixture
//! folders written to a temporary directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{Rgb, RgbImage};
use rand::SeedableRng;
use simlearn::data::augment::{
    center_crop_region, decode, item_rng, random_resized_crop_box, CropBox, Geometry, ImageLoader,
    LoaderConfig, Normalize, Pipeline,
};
use simlearn::data::images::emoji::{plan, IconSet};
use simlearn::data::images::{ImageDataset, InShop};
use simlearn::data::{FeatureDataset, Labels};
use simlearn_eval::Matrix;

/// A fresh, empty directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("simlearn-images-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// A small image whose pixels depend on position and `tag`, so images differ.
fn pattern(w: u32, h: u32, tag: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 7 + tag as u32 * 13) as u8,
            (y * 5 + tag as u32) as u8,
            ((x + y) * 3) as u8,
        ])
    })
}

fn write_png(path: &Path, w: u32, h: u32, tag: u8) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    pattern(w, h, tag).save(path).unwrap();
}

fn write_jpeg(path: &Path, w: u32, h: u32, tag: u8) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    pattern(w, h, tag)
        .save_with_format(path, image::ImageFormat::Jpeg)
        .unwrap();
}

fn classes(ds: &ImageDataset) -> Vec<i64> {
    ds.class_labels().unwrap().to_vec()
}

#[test]
fn image_folder_numbers_classes_in_sorted_folder_order() {
    let root = temp_dir("folder");
    write_png(&root.join("zebra/1.png"), 4, 4, 1);
    write_jpeg(&root.join("ant/b.jpg"), 4, 4, 2);
    write_png(&root.join("ant/a.PNG"), 4, 4, 3);
    fs::write(root.join("ant/notes.txt"), "not an image").unwrap();
    fs::write(root.join("README"), "top-level files are not classes").unwrap();
    let ds = ImageDataset::from_folder(&root).unwrap();
    assert_eq!(classes(&ds), vec![0, 0, 1]);
    assert_eq!(ds.paths[0], root.join("ant/a.PNG"));
    assert_eq!(ds.paths[1], root.join("ant/b.jpg"));
    assert_eq!(ds.class_names[&0], "ant");
    assert_eq!(ds.class_names[&1], "zebra");

    let empty = temp_dir("folder-empty");
    let err = ImageDataset::from_folder(&empty).unwrap_err().to_string();
    assert!(err.contains("no class sub-folders"), "{err}");
}

#[test]
fn list_file_takes_the_last_field_as_label_and_names_bad_lines() {
    let root = temp_dir("list");
    fs::write(
        root.join("train.txt"),
        "# comment\nimages/001.Black footed/a.jpg 0\n\nimages/002.Laysan/b.jpg 1\n",
    )
    .unwrap();
    let ds = ImageDataset::from_list_file(&root.join("train.txt"), &root).unwrap();
    assert_eq!(classes(&ds), vec![0, 1]);
    assert_eq!(ds.paths[0], root.join("images/001.Black footed/a.jpg"));

    fs::write(root.join("bad.txt"), "a.jpg 0\nb.jpg x\n").unwrap();
    let err = ImageDataset::from_list_file(&root.join("bad.txt"), &root)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.txt line 2") && err.contains("\"x\""),
        "{err}"
    );
}

#[test]
fn cub200_standard_files_are_joined_by_image_id() {
    let root = temp_dir("cub");
    fs::write(
        root.join("images.txt"),
        "1 001.Albatross/a.jpg\n2 001.Albatross/b.jpg\n3 002.Auklet/c.jpg\n",
    )
    .unwrap();
    fs::write(root.join("image_class_labels.txt"), "3 2\n1 1\n2 1\n").unwrap();
    fs::write(root.join("classes.txt"), "1 001.Albatross\n2 002.Auklet\n").unwrap();
    let ds = ImageDataset::cub200(&root).unwrap();
    assert_eq!(classes(&ds), vec![1, 1, 2]);
    assert_eq!(ds.paths[2], root.join("images/002.Auklet/c.jpg"));
    assert_eq!(ds.class_names[&2], "002.Auklet");

    fs::write(root.join("image_class_labels.txt"), "1 1\n2 1\n").unwrap();
    let err = ImageDataset::cub200(&root).unwrap_err().to_string();
    assert!(
        err.contains("images.txt line 3") && err.contains("image 3 has no class"),
        "{err}"
    );
}

#[test]
fn cars196_reads_train_and_test_lists_or_falls_back_to_folders() {
    let root = temp_dir("cars");
    fs::write(
        root.join("train.txt"),
        "car_ims/000001.jpg 1\ncar_ims/000002.jpg 98\n",
    )
    .unwrap();
    fs::write(root.join("test.txt"), "car_ims/000003.jpg 99\n").unwrap();
    let ds = ImageDataset::cars196(&root).unwrap();
    assert_eq!(classes(&ds), vec![1, 98, 99]);
    assert_eq!(ds.paths[2], root.join("car_ims/000003.jpg"));

    let folders = temp_dir("cars-folders");
    write_png(&folders.join("Acura RL 2012/1.png"), 3, 3, 0);
    write_png(&folders.join("BMW M3 2012/2.png"), 3, 3, 0);
    let ds = ImageDataset::cars196(&folders).unwrap();
    assert_eq!(classes(&ds), vec![0, 1]);
}

#[test]
fn sop_reads_classes_and_super_classes_and_rejects_short_rows() {
    let root = temp_dir("sop");
    fs::write(
        root.join("Ebay_train.txt"),
        "image_id class_id super_class_id path\n1 1 1 bicycle_final/111_0.JPG\n2 1 1 bicycle_final/111_1.JPG\n3 2 3 chair_final/2_0.JPG\n",
    )
    .unwrap();
    fs::write(
        root.join("Ebay_test.txt"),
        "image_id class_id super_class_id path\n1 11319 1 bicycle_final/9_0.JPG\n2 11319\n",
    )
    .unwrap();
    let ds = ImageDataset::sop(&root, false).unwrap();
    assert_eq!(classes(&ds), vec![1, 1, 2]);
    assert_eq!(ds.super_labels, Some(vec![1, 1, 3]));
    assert_eq!(ds.paths[2], root.join("chair_final/2_0.JPG"));
    let err = ImageDataset::sop(&root, true).unwrap_err().to_string();
    assert!(
        err.contains("Ebay_test.txt line 3") && err.contains("found 2 fields"),
        "{err}"
    );
    // Subsets keep super-labels aligned.
    assert_eq!(ds.subset(&[2, 0]).super_labels, Some(vec![3, 1]));
}

#[test]
fn inshop_partition_splits_train_query_gallery() {
    let root = temp_dir("inshop");
    let rows = "img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train\n\
                img/MEN/Denim/id_00000080/01_1_front.jpg id_00000080 query\n\
                img/MEN/Denim/id_00000080/01_2_side.jpg id_00000080 gallery\n\
                img/MEN/Denim/id_00000081/01_2_side.jpg id_00000081 gallery\n";
    fs::write(
        root.join("list_eval_partition.txt"),
        format!("4\nimage_name item_id evaluation_status\n{rows}"),
    )
    .unwrap();
    let s = InShop::load(&root).unwrap();
    assert_eq!(classes(&s.train), vec![2]);
    assert_eq!(classes(&s.query), vec![80]);
    assert_eq!(classes(&s.gallery), vec![80, 81]);
    assert_eq!(
        s.query.paths[0],
        root.join("img/MEN/Denim/id_00000080/01_1_front.jpg")
    );

    fs::write(
        root.join("list_eval_partition.txt"),
        format!("5\nimage_name item_id evaluation_status\n{rows}"),
    )
    .unwrap();
    let err = InShop::load(&root).unwrap_err().to_string();
    assert!(
        err.contains("announces 5 images, the file lists 4"),
        "{err}"
    );
}

#[test]
fn inaturalist_bare_paths_take_the_parent_folder_as_category() {
    let root = temp_dir("inat");
    fs::write(
        root.join("train.txt"),
        "train_val2018/Aves/2761/a.jpg\ntrain_val2018/Aves/2761/b.jpg\ntrain_val2018/Plantae/10/c.jpg\n",
    )
    .unwrap();
    let ds = ImageDataset::inaturalist(&root.join("train.txt"), &root).unwrap();
    // Sorted names: "10" < "2761".
    assert_eq!(classes(&ds), vec![1, 1, 0]);
    assert_eq!(ds.class_names[&1], "2761");

    fs::write(root.join("labelled.txt"), "x/a.jpg 5\nx/b.jpg 7\n").unwrap();
    let ds = ImageDataset::inaturalist(&root.join("labelled.txt"), &root).unwrap();
    assert_eq!(classes(&ds), vec![5, 7]);

    fs::write(root.join("mixed.txt"), "x/a.jpg\nx/b.jpg 7\n").unwrap();
    let err = ImageDataset::inaturalist(&root.join("mixed.txt"), &root)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mixed.txt line 2"), "{err}");
}

#[test]
fn csv_continuous_labels_form_a_matrix_and_bad_values_are_named() {
    let root = temp_dir("csv");
    fs::write(
        root.join("labels.csv"),
        "path,angle,weight\na.png,10.5,400\nb.png,-3,900\n",
    )
    .unwrap();
    let ds = ImageDataset::from_csv(&root.join("labels.csv"), &root).unwrap();
    let Labels::Continuous(m) = &ds.labels else {
        panic!("continuous labels expected")
    };
    assert_eq!((m.rows(), m.cols()), (2, 2));
    assert_eq!(m.data(), &[10.5, 400.0, -3.0, 900.0]);
    assert!(ds.class_labels().is_err());
    assert!(ds.class_disjoint_split().is_err());

    fs::write(root.join("nan.csv"), "path,angle\na.png,1\nb.png,NaN\n").unwrap();
    let err = ImageDataset::from_csv(&root.join("nan.csv"), &root)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nan.csv line 3"), "{err}");
}

#[test]
fn class_disjoint_split_matches_the_feature_dataset_split() {
    let labels = vec![5, 1, 3, 2, 4, 1, 5, 3];
    let paths: Vec<PathBuf> = (0..labels.len())
        .map(|i| PathBuf::from(format!("{i}.png")))
        .collect();
    let ds = ImageDataset::new(paths, labels.clone()).unwrap();
    let (tr, te) = ds.class_disjoint_split().unwrap();
    // 5 classes: the first ceil(5/2) = 3 (1, 2, 3) train, 4 and 5 test.
    assert_eq!(classes(&tr), vec![1, 3, 2, 1, 3]);
    assert_eq!(classes(&te), vec![5, 4, 5]);
    assert_eq!(tr.paths[0], PathBuf::from("1.png"));

    let feats = Matrix::new(8, 1, (0..8).map(|i| i as f32).collect()).unwrap();
    let (ftr, fte) = FeatureDataset::new(feats, Labels::Class(labels))
        .unwrap()
        .class_disjoint_split()
        .unwrap();
    assert_eq!(ftr.class_labels().unwrap(), classes(&tr).as_slice());
    assert_eq!(fte.class_labels().unwrap(), classes(&te).as_slice());
}

#[test]
fn random_resized_crops_stay_inside_and_respect_scale_and_ratio() {
    let (scale, ratio) = ((0.16, 1.0), (0.75, 4.0 / 3.0));
    for &(w, h) in &[(500u32, 375u32), (64, 64), (37, 300), (300, 41)] {
        let area = (w * h) as f64;
        for i in 0..400u64 {
            let mut rng = item_rng(7, 0, i);
            let b = random_resized_crop_box(w, h, scale, ratio, &mut rng);
            assert!(b.width >= 1 && b.height >= 1);
            assert!(
                b.left + b.width <= w && b.top + b.height <= h,
                "{b:?} in {w}x{h}"
            );
            let fits_full = (b.width, b.height) == (w, h);
            let is_fallback_centre = b.left == (w - b.width) / 2 && b.top == (h - b.height) / 2;
            if fits_full || (is_fallback_centre && (b.width == w || b.height == h)) {
                continue;
            }
            // Rounding w and h to integers moves area and ratio by at most half a pixel per side.
            let (bw, bh) = (b.width as f64, b.height as f64);
            let area_lo = (bw - 0.5) * (bh - 0.5) / area;
            let area_hi = (bw + 0.5) * (bh + 0.5) / area;
            assert!(
                area_hi >= scale.0 && area_lo <= scale.1,
                "{b:?} area in {w}x{h}"
            );
            let r_lo = (bw - 0.5) / (bh + 0.5);
            let r_hi = (bw + 0.5) / (bh - 0.5);
            assert!(r_hi >= ratio.0 && r_lo <= ratio.1, "{b:?} ratio in {w}x{h}");
        }
    }
}

#[test]
fn random_resized_crop_falls_back_to_the_ratio_clamped_centre() {
    // A 1 x 100 strip: no crop of area >= 16 px and ratio >= 3/4 fits in width 1, so all ten
    // tries fail; the fallback keeps width 1 and height round(1 / 0.75) = 1, centred at row 49.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let b = random_resized_crop_box(1, 100, (0.16, 1.0), (0.75, 4.0 / 3.0), &mut rng);
    assert_eq!(
        b,
        CropBox {
            left: 0,
            top: 49,
            width: 1,
            height: 1
        }
    );
    // A 100 x 10 strip (ratio 10): height 10, width round(10 * 4/3) = 13, left (100 - 13) / 2 = 43.
    let b = random_resized_crop_box(100, 10, (0.9, 1.0), (0.75, 4.0 / 3.0), &mut rng);
    assert_eq!(
        b,
        CropBox {
            left: 43,
            top: 0,
            width: 13,
            height: 10
        }
    );
}

#[test]
fn centre_crop_region_follows_torchvision_resize_and_crop() {
    // 500 x 375 -> Resize(256): 341 x 256; CenterCrop(224): left round(58.5) = 58, top 16.
    let (l, t, w, h) = center_crop_region(500, 375, 256, 224);
    let (sx, sy) = (500.0 / 341.0, 375.0 / 256.0);
    assert!((l - 58.0 * sx).abs() < 1e-9 && (t - 16.0 * sy).abs() < 1e-9);
    assert!((w - 224.0 * sx).abs() < 1e-9 && (h - 224.0 * sy).abs() < 1e-9);
    // Square input: the crop is the central 224/256 of each side.
    let (l, t, w, h) = center_crop_region(256, 256, 256, 224);
    assert_eq!((l, t, w, h), (16.0, 16.0, 224.0, 224.0));
}

fn rrc(size: u32, flip_p: f64, seed: u64) -> Pipeline {
    Pipeline {
        geometry: Geometry::RandomResizedCrop {
            size,
            scale: (0.16, 1.0),
            ratio: (0.75, 4.0 / 3.0),
            flip_p,
        },
        normalize: Normalize::ImageNet,
        seed,
    }
}

#[test]
fn flip_mirrors_the_unflipped_output_exactly() {
    let img = pattern(60, 45, 9);
    let s = 16usize;
    for index in 0..5 {
        let plain = rrc(s as u32, 0.0, 3).apply(&img, 2, index).unwrap();
        let flipped = rrc(s as u32, 1.0, 3).apply(&img, 2, index).unwrap();
        for c in 0..3 {
            for y in 0..s {
                for x in 0..s {
                    let a = plain[c * s * s + y * s + x];
                    let b = flipped[c * s * s + y * s + (s - 1 - x)];
                    assert_eq!(a.to_bits(), b.to_bits());
                }
            }
        }
        assert_ne!(plain, flipped, "the pattern is not left-right symmetric");
    }
}

#[test]
fn normalisation_gives_the_hand_computed_values() {
    let img = RgbImage::from_pixel(10, 8, Rgb([255, 0, 128]));
    let mut p = Pipeline::eval(8, 6);
    let out = p.apply(&img, 0, 0).unwrap();
    assert_eq!(out.len(), 3 * 36);
    let expect = [
        (1.0 - 0.485) / 0.229,
        (0.0 - 0.456) / 0.224,
        (128.0 / 255.0 - 0.406) / 0.225,
    ];
    for c in 0..3 {
        for v in &out[c * 36..(c + 1) * 36] {
            assert!(
                (v - expect[c]).abs() < 1e-5,
                "channel {c}: {v} vs {}",
                expect[c]
            );
        }
    }
    p.normalize = Normalize::Half;
    let out = p.apply(&img, 0, 0).unwrap();
    assert!((out[0] - 1.0).abs() < 1e-6);
    assert!((out[36] + 1.0).abs() < 1e-6);
    assert!((out[72] - (128.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
}

#[test]
fn eval_centre_crop_keeps_the_centre_of_a_striped_image() {
    // Left third red, middle green, right third blue: a 64 -> 32 -> crop 8 keeps only green.
    let img = RgbImage::from_fn(96, 64, |x, _| match x {
        0..=31 => Rgb([255, 0, 0]),
        32..=63 => Rgb([0, 255, 0]),
        _ => Rgb([0, 0, 255]),
    });
    let mut p = Pipeline::eval(32, 8);
    p.normalize = Normalize::Half;
    let out = p.apply(&img, 0, 0).unwrap();
    let plane = 64;
    assert!(
        out[..plane].iter().all(|&v| (v + 1.0).abs() < 1e-6),
        "no red"
    );
    assert!(
        out[plane..2 * plane]
            .iter()
            .all(|&v| (v - 1.0).abs() < 1e-6),
        "all green"
    );
}

#[test]
fn invalid_pipeline_parameters_are_named() {
    let err = Pipeline::eval(32, 64).validate().unwrap_err().to_string();
    assert!(err.contains("CenterCrop 64"), "{err}");
    let mut p = rrc(8, 0.5, 0);
    p.geometry = Geometry::RandomResizedCrop {
        size: 8,
        scale: (0.5, 0.2),
        ratio: (0.75, 1.33),
        flip_p: 0.5,
    };
    assert!(p.validate().unwrap_err().to_string().contains("scale"));
}

fn fixture_dataset(name: &str, n: usize) -> (PathBuf, ImageDataset) {
    let root = temp_dir(name);
    let mut paths = Vec::new();
    for i in 0..n {
        let p = root.join(format!("{i}.jpg"));
        write_jpeg(&p, 40 + i as u32, 30 + (i as u32 % 3) * 7, i as u8);
        paths.push(p);
    }
    let labels = (0..n as i64).map(|i| i % 3).collect();
    (root, ImageDataset::new(paths, labels).unwrap())
}

#[test]
fn loader_output_is_deterministic_across_thread_counts_and_seeded_by_epoch() {
    let (_root, ds) = fixture_dataset("determinism", 12);
    let ds = Arc::new(ds);
    let batches = vec![vec![3, 1, 4, 0], vec![5, 9, 2, 6], vec![11, 10, 8, 7]];
    let run = |threads: usize, epoch: u64, seed: u64| -> Vec<f32> {
        let cfg = LoaderConfig {
            threads,
            prefetch: 1,
            skip_bad: false,
        };
        let loader = ImageLoader::new(ds.clone(), rrc(12, 0.5, seed), cfg).unwrap();
        let mut all = Vec::new();
        for b in loader.epoch(epoch, batches.clone()) {
            let b = b.unwrap();
            assert_eq!(b.shape, [4, 3, 12, 12]);
            all.extend(b.data);
        }
        all
    };
    let one = run(1, 0, 5);
    assert_eq!(one.len(), 12 * 3 * 144);
    assert_eq!(one, run(2, 0, 5));
    assert_eq!(one, run(3, 0, 5));
    assert_ne!(one, run(2, 1, 5));
    assert_ne!(one, run(2, 0, 6));
    assert!(one.iter().all(|v| v.is_finite()));
}

#[test]
fn loader_batches_carry_indices_and_labels() {
    let (_root, ds) = fixture_dataset("labels", 6);
    let loader = ImageLoader::new(
        Arc::new(ds),
        Pipeline::eval(16, 16),
        LoaderConfig::default(),
    )
    .unwrap();
    let b = loader.load_batch(0, &[5, 0, 4]).unwrap();
    assert_eq!(b.indices, vec![5, 0, 4]);
    assert_eq!(b.labels, Labels::Class(vec![2, 0, 1]));
    let err = loader.load_batch(0, &[1, 6]).unwrap_err().to_string();
    assert!(err.contains("batch index 6"), "{err}");
}

#[test]
fn corrupt_images_are_errors_naming_the_file_or_counted_warnings() {
    let (root, mut ds) = fixture_dataset("corrupt", 5);
    let bad = root.join("broken.jpg");
    fs::write(&bad, b"\xFF\xD8\xFF this is not a JPEG").unwrap();
    let missing = root.join("missing.png");
    ds.paths[1] = bad.clone();
    ds.paths[3] = missing.clone();

    let err = decode(&bad).unwrap_err().to_string();
    assert!(err.contains("broken.jpg"), "{err}");

    let ds = Arc::new(ds);
    let strict =
        ImageLoader::new(ds.clone(), Pipeline::eval(8, 8), LoaderConfig::default()).unwrap();
    let results: Vec<_> = strict
        .epoch(0, vec![vec![0], vec![1, 2], vec![4]])
        .collect();
    assert_eq!(results.len(), 2, "the stream ends at the first error");
    assert!(results[0].is_ok());
    let err = results[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("broken.jpg"), "{err}");

    let cfg = LoaderConfig {
        skip_bad: true,
        ..LoaderConfig::default()
    };
    let lenient = ImageLoader::new(ds, Pipeline::eval(8, 8), cfg).unwrap();
    let batches: Vec<_> = lenient
        .epoch(0, vec![vec![0, 1, 2], vec![3], vec![4, 3]])
        .map(Result::unwrap)
        .collect();
    // The all-bad batch [3] is left out.
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].indices, vec![0, 2]);
    assert_eq!(batches[0].shape, [2, 3, 8, 8]);
    assert_eq!(batches[0].data.len(), 2 * 3 * 64);
    assert_eq!(batches[1].indices, vec![4]);
    let warnings = lenient.warnings();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].contains("broken.jpg"));
    assert!(warnings[1].contains("missing.png") && warnings[2].contains("missing.png"));
}

// --- Emoji-10 planner -------------------------------------------------------------------

fn set(name: &str, json: &str, chars: Option<&str>) -> IconSet {
    IconSet::parse(name, json, chars).unwrap()
}

#[test]
fn emoji_icons_resolve_aliases_and_view_boxes() {
    let s = set(
        "a",
        r#"{"prefix":"a","width":36,"height":32,
            "icons":{"smile":{"body":"<path d='M0 0h1'/>"},"wide":{"body":"<g/>","width":72,"left":-2}},
            "aliases":{"grin":{"parent":"smile"},"mirror":{"parent":"grin","hFlip":true},
                       "turn":{"parent":"smile","rotate":1},"loop":{"parent":"loop"}}}"#,
        None,
    );
    let r = s.resolve("smile").unwrap();
    assert_eq!(r.view_box, (0.0, 0.0, 36.0, 32.0));
    assert_eq!(s.resolve("wide").unwrap().view_box, (-2.0, 0.0, 72.0, 32.0));
    assert_eq!(s.resolve("grin").unwrap(), r);
    let m = s.resolve("mirror").unwrap();
    assert!(m.h_flip && m.body == r.body);
    assert!(m
        .to_svg()
        .contains("translate(18 16) scale(-1 1) translate(-18 -16)"));
    let t = s.resolve("turn").unwrap();
    assert_eq!(t.output_view_box(), (2.0, -2.0, 32.0, 36.0));
    assert!(t.to_svg().contains("rotate(90 18 16)"));
    assert!(s.resolve("loop").is_none());
    assert!(s.resolve("absent").is_none());
    let svg = r.to_svg();
    assert!(svg.starts_with("<svg ") && svg.contains("viewBox=\"0 0 36 32\""));
    assert!(svg.contains("<path d='M0 0h1'/>"));
}

#[test]
fn emoji_plan_matches_by_chars_and_names_and_splits_classes_in_halves() {
    let icons = |names: &[&str]| {
        let body: Vec<String> = names
            .iter()
            .map(|n| format!("\"{n}\":{{\"body\":\"<g/>\"}}"))
            .collect();
        format!("{{\"width\":16,\"icons\":{{{}}}}}", body.join(","))
    };
    let all = [
        "grinning",
        "heart",
        "thumbs-up",
        "thumbs-up-medium",
        "cat",
        "dog",
    ];
    let chars = r#"{"1f600":"grinning","2764-fe0f":"heart","2764":"heart","1f44d":"thumbs-up",
                    "1f44d-1f3fd":"thumbs-up-medium","1f431":"cat","1f436":"dog"}"#;
    let sets = vec![
        set("one", &icons(&all), Some(chars)),
        // Chars inside the document, without dog.
        set(
            "two",
            &icons(&all[..5]).replacen(
                '{',
                r#"{"chars":{"1f600":"grinning","2764":"heart","1f44d":"thumbs-up","1f431":"cat"},"#,
                1,
            ),
            None,
        ),
        // No chars: matched by name; "heart" only as an alias.
        set(
            "three",
            &icons(&["grinning", "cat", "dog", "red-heart-unused"])
                .replacen('{', r#"{"aliases":{"heart":{"parent":"red-heart-unused"}},"#, 1),
            None,
        ),
    ];
    let plan3 = plan(&sets, 3);
    let keys: Vec<&str> = plan3.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, vec!["1f431", "1f600", "2764"]);
    assert_eq!(
        plan3[2].icons,
        vec![
            (0, "heart".to_string()),
            (1, "heart".to_string()),
            (2, "heart".to_string())
        ]
    );
    let plan2 = plan(&sets, 2);
    let keys: Vec<&str> = plan2.iter().map(|c| c.key.as_str()).collect();
    // Skin-tone variant excluded; dog drawn by sets one and three.
    assert_eq!(keys, vec!["1f431", "1f436", "1f44d", "1f600", "2764"]);
    let n_test = plan2.iter().filter(|c| c.test).count();
    assert_eq!(n_test, 2, "5 classes: 3 train, 2 test");
    // The split of a class depends only on the class set, not on the order of the sets.
    let reversed: Vec<IconSet> = sets.iter().rev().cloned().collect();
    let again = plan(&reversed, 2);
    for (a, b) in plan2.iter().zip(&again) {
        assert_eq!((&a.key, a.test), (&b.key, b.test));
    }
}

/// Renders an SVG document at `side × side` px with resvg; returns RGBA (premultiplied).
fn rasterise(svg: &str, side: u32) -> Vec<u8> {
    use resvg::{tiny_skia, usvg};
    let tree = usvg::Tree::from_str(svg, &usvg::Options::default()).unwrap();
    let s = side as f32 / tree.size().width();
    let mut pixmap = tiny_skia::Pixmap::new(side, side).unwrap();
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(s, s),
        &mut pixmap.as_mut(),
    );
    pixmap.data().to_vec()
}

#[test]
fn emoji_svg_transforms_render_where_iconify_puts_them() {
    // Left half red in a 16 x 16 box offset by (4, 4): flipped it is the right half, a quarter
    // turn clockwise makes it the top half.
    let s = set(
        "t",
        r#"{"left":4,"top":4,"width":16,"height":16,
            "icons":{"half":{"body":"<rect x='4' y='4' width='8' height='16' fill='#f00'/>"}},
            "aliases":{"flip":{"parent":"half","hFlip":true},"turn":{"parent":"half","rotate":1}}}"#,
        None,
    );
    let red_at = |px: &[u8], x: usize, y: usize| {
        let p = &px[(y * 16 + x) * 4..][..4];
        p[0] == 255 && p[1] == 0 && p[3] == 255
    };
    let clear_at = |px: &[u8], x: usize, y: usize| px[(y * 16 + x) * 4 + 3] == 0;
    let plain = rasterise(&s.resolve("half").unwrap().to_svg(), 16);
    let flip = rasterise(&s.resolve("flip").unwrap().to_svg(), 16);
    let turn = rasterise(&s.resolve("turn").unwrap().to_svg(), 16);
    for (x, y) in [(1, 1), (6, 14), (2, 8)] {
        assert!(red_at(&plain, x, y) && clear_at(&plain, 15 - x, y));
        assert!(red_at(&flip, 15 - x, y) && clear_at(&flip, x, y));
    }
    for (x, y) in [(1, 1), (14, 6), (8, 2)] {
        assert!(
            red_at(&turn, x, y) && clear_at(&turn, x, 15 - y),
            "({x}, {y})"
        );
    }
}
