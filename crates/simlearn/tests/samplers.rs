//! Invariant tests for the batch samplers.

use simlearn::eval::{LabelDistance, Matrix};
use simlearn::samplers::{
    BalancedOptions, BalancedSampler, BatchSampler, BinaryTripletSampler, DenseTripletSampler,
    HierarchicalOptions, HierarchicalSampler, MPerClassOptions, MPerClassSampler, SamplerError,
};
use std::collections::{BTreeMap, BTreeSet};

/// Labels with the given class sizes: class `c` (label `10 · c + 3`, to keep labels
/// non-contiguous) gets `sizes[c]` samples, interleaved across classes.
fn labels_with_sizes(sizes: &[usize]) -> Vec<i64> {
    let mut labels = Vec::new();
    let max = sizes.iter().copied().max().unwrap_or(0);
    for round in 0..max {
        for (c, &s) in sizes.iter().enumerate() {
            if round < s {
                labels.push(10 * c as i64 + 3);
            }
        }
    }
    labels
}

/// Per-class counts of a batch.
fn class_counts(batch: &[usize], labels: &[i64]) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for &i in batch {
        *counts.entry(labels[i]).or_insert(0) += 1;
    }
    counts
}

fn has_duplicates(batch: &[usize]) -> bool {
    batch.iter().collect::<BTreeSet<_>>().len() != batch.len()
}

fn assert_error(result: Result<impl Sized, SamplerError>, param: &str) {
    match result {
        Ok(_) => panic!("expected an error naming `{param}`"),
        Err(e) => {
            assert_eq!(e.param, param, "wrong parameter in `{e}`");
            let msg = e.to_string();
            assert!(
                msg.starts_with(param),
                "message `{msg}` does not name {param}"
            );
            assert!(!msg.contains('\n'), "message `{msg}` is not one line");
        }
    }
}

// ---------------------------------------------------------------- m-per-class

#[test]
fn m_per_class_batches_hold_cpb_classes_times_m_distinct_samples() {
    let sizes = [4, 5, 6, 7, 8, 9, 4, 5, 6, 7];
    let labels = labels_with_sizes(&sizes);
    let opts = MPerClassOptions {
        tries: 3,
        ..Default::default()
    };
    let mut s = MPerClassSampler::new(&labels, 8, 4, 7, opts).unwrap();
    assert_eq!(s.classes_per_batch(), 2);
    let batches = s.epoch(0);
    // ⌊10 / 2⌋ groups × 3 tries.
    assert_eq!(batches.len(), 15);
    assert_eq!(s.batches_per_epoch(), 15);
    for b in &batches {
        assert_eq!(b.len(), 8);
        let counts = class_counts(b, &labels);
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert!(counts.values().all(|&n| n == 4));
        assert!(!has_duplicates(b));
        // Grouped by class, m consecutive entries each.
        assert_eq!(labels[b[0]], labels[b[3]]);
        assert_eq!(labels[b[4]], labels[b[7]]);
    }
}

#[test]
fn m_per_class_reference_mode_reuses_one_grouping_with_fresh_images() {
    // 11 classes, 2 per batch: 5 groups, one class left out per epoch.
    let sizes = [20; 11];
    let labels = labels_with_sizes(&sizes);
    let opts = MPerClassOptions {
        tries: 4,
        ..Default::default()
    };
    let mut s = MPerClassSampler::new(&labels, 8, 4, 1, opts).unwrap();
    let batches = s.epoch(3);
    assert_eq!(batches.len(), 20);
    let mut groups: BTreeMap<Vec<i64>, Vec<BTreeSet<usize>>> = BTreeMap::new();
    for b in &batches {
        let key: Vec<i64> = class_counts(b, &labels).into_keys().collect();
        groups
            .entry(key)
            .or_default()
            .push(b.iter().copied().collect());
    }
    // Exactly 5 groups, each used once per try, disjoint, covering 10 of 11 classes.
    assert_eq!(groups.len(), 5);
    assert!(groups.values().all(|v| v.len() == 4));
    let used: BTreeSet<i64> = groups.keys().flatten().copied().collect();
    assert_eq!(used.len(), 10);
    // Fresh images each try: the 4 draws of a group are not all the same set.
    for draws in groups.values() {
        assert!(draws.iter().any(|d| d != &draws[0]), "{draws:?}");
    }
}

#[test]
fn m_per_class_covers_every_class_when_groups_divide() {
    let labels = labels_with_sizes(&[6; 12]);
    let mut s = MPerClassSampler::new(&labels, 12, 4, 5, MPerClassOptions::default()).unwrap();
    let batches = s.epoch(0);
    assert_eq!(batches.len(), 4);
    let mut seen = BTreeMap::new();
    for b in &batches {
        for c in class_counts(b, &labels).into_keys() {
            *seen.entry(c).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), 12);
    assert!(seen.values().all(|&n| n == 1));
}

#[test]
fn m_per_class_cover_all_classes_once_per_try() {
    let labels = labels_with_sizes(&[5; 12]);
    for tries in [1, 2] {
        let opts = MPerClassOptions {
            tries,
            cover_all_classes: true,
            ..Default::default()
        };
        let mut s = MPerClassSampler::new(&labels, 12, 4, 9, opts).unwrap();
        for epoch in 0..3 {
            let batches = s.epoch(epoch);
            assert_eq!(batches.len(), 4 * tries);
            let mut seen = BTreeMap::new();
            for b in &batches {
                let counts = class_counts(b, &labels);
                assert_eq!(counts.len(), 3);
                assert!(counts.values().all(|&n| n == 4));
                assert!(!has_duplicates(b));
                for c in counts.into_keys() {
                    *seen.entry(c).or_insert(0) += 1;
                }
            }
            assert_eq!(seen.len(), 12);
            assert!(seen.values().all(|&n| n == tries), "{seen:?}");
        }
    }
}

#[test]
fn m_per_class_cover_all_classes_pads_last_batch_when_not_divisible() {
    // 13 classes, 3 per batch: ⌈13/3⌉ = 5 batches, every class at least once, 2 classes twice.
    let labels = labels_with_sizes(&[8; 13]);
    let opts = MPerClassOptions {
        cover_all_classes: true,
        ..Default::default()
    };
    let mut s = MPerClassSampler::new(&labels, 12, 4, 2, opts).unwrap();
    assert_eq!(s.batches_per_epoch(), 5);
    for epoch in 0..30 {
        let batches = s.epoch(epoch);
        assert_eq!(batches.len(), 5);
        let mut seen = BTreeMap::new();
        for b in &batches {
            let counts = class_counts(b, &labels);
            assert_eq!(counts.len(), 3, "classes must stay distinct within a batch");
            assert!(counts.values().all(|&n| n == 4));
            for c in counts.into_keys() {
                *seen.entry(c).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.len(), 13);
        assert_eq!(seen.values().filter(|&&n| n == 2).count(), 2);
        assert_eq!(seen.values().filter(|&&n| n == 1).count(), 11);
    }
}

#[test]
fn m_per_class_reference_batch_counts() {
    // Spec §3.1: CUB 100 classes → 15, Cars 98 → 30, In-Shop 3997 → 600 batches at bs 128.
    for (classes, opts, expected) in [
        (100, MPerClassOptions::cub(), 15),
        (98, MPerClassOptions::cars(), 30),
        (3997, MPerClassOptions::in_shop(), 600),
    ] {
        let labels = labels_with_sizes(&vec![4; classes]);
        let mut s = MPerClassSampler::new(&labels, 128, 4, 0, opts).unwrap();
        assert_eq!(s.batches_per_epoch(), expected);
        let batches = s.epoch(0);
        assert_eq!(batches.len(), expected);
        assert!(batches.iter().all(|b| b.len() == 128));
    }
}

#[test]
fn m_per_class_max_batches_caps() {
    let labels = labels_with_sizes(&[4; 40]);
    let opts = MPerClassOptions {
        tries: 5,
        max_batches: Some(42),
        ..Default::default()
    };
    let mut s = MPerClassSampler::new(&labels, 8, 4, 0, opts).unwrap();
    // 20 groups × 5 tries = 100, capped to 42.
    assert_eq!(s.epoch(0).len(), 42);
}

#[test]
fn m_per_class_small_classes_are_drawn_with_replacement() {
    // Class sizes 2 and 3 with m = 4: each still contributes 4 entries, from its own samples.
    let labels = labels_with_sizes(&[2, 3]);
    let mut s = MPerClassSampler::new(&labels, 8, 4, 3, MPerClassOptions::default()).unwrap();
    let batches = s.epoch(0);
    assert_eq!(batches.len(), 1);
    let counts = class_counts(&batches[0], &labels);
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![4, 4]);
    assert!(has_duplicates(&batches[0]));
}

#[test]
fn m_per_class_is_deterministic_in_seed_and_epoch() {
    let labels = labels_with_sizes(&[7; 16]);
    let make = |seed| MPerClassSampler::new(&labels, 16, 4, seed, MPerClassOptions::cub()).unwrap();
    let (mut a, mut b, mut c) = (make(11), make(11), make(12));
    assert_eq!(a.epoch(2), b.epoch(2));
    // Regenerating an epoch after others gives the same batches.
    let first = a.epoch(0);
    a.epoch(5);
    assert_eq!(a.epoch(0), first);
    assert_ne!(a.epoch(0), a.epoch(1));
    assert_ne!(a.epoch(0), c.epoch(0));
}

#[test]
fn m_per_class_singletons_error_or_are_skipped() {
    let mut labels = labels_with_sizes(&[4, 4, 4]);
    labels.push(99);
    assert_error(
        MPerClassSampler::new(&labels, 8, 4, 0, MPerClassOptions::default()),
        "labels",
    );
    let opts = MPerClassOptions {
        skip_singletons: true,
        ..Default::default()
    };
    let mut s = MPerClassSampler::new(&labels, 8, 4, 0, opts).unwrap();
    assert_eq!(s.num_classes(), 3);
    assert_eq!(s.class_labels(), vec![3, 13, 23]);
    let singleton = labels.len() - 1;
    for e in 0..10 {
        assert!(s.epoch(e).iter().flatten().all(|&i| i != singleton));
    }
}

#[test]
fn m_per_class_errors_name_the_parameter() {
    let labels = labels_with_sizes(&[4; 5]);
    let d = MPerClassOptions::default();
    assert_error(MPerClassSampler::new(&labels, 10, 4, 0, d), "batch_size");
    assert_error(MPerClassSampler::new(&labels, 0, 4, 0, d), "batch_size");
    assert_error(MPerClassSampler::new(&labels, 8, 0, 0, d), "m");
    // 5 classes, 6 needed per batch.
    assert_error(MPerClassSampler::new(&labels, 24, 4, 0, d), "labels");
    assert_error(MPerClassSampler::new(&[], 8, 4, 0, d), "labels");
    let zero_tries = MPerClassOptions { tries: 0, ..d };
    assert_error(MPerClassSampler::new(&labels, 8, 4, 0, zero_tries), "tries");
    let zero_cap = MPerClassOptions {
        max_batches: Some(0),
        ..d
    };
    assert_error(
        MPerClassSampler::new(&labels, 8, 4, 0, zero_cap),
        "max_batches",
    );
}

// ---------------------------------------------------------------- hierarchical

/// `supers[s]` = class sizes of super-class `s`; returns (labels, super-labels) with the given
/// super-label values.
fn hierarchy(supers: &[Vec<usize>], super_values: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let (mut labels, mut sup) = (Vec::new(), Vec::new());
    let mut class = 0i64;
    for (s, sizes) in supers.iter().enumerate() {
        for &n in sizes {
            for _ in 0..n {
                labels.push(class);
                sup.push(super_values[s]);
            }
            class += 1;
        }
    }
    (labels, sup)
}

#[test]
fn hierarchical_batches_pair_two_super_classes_half_each() {
    // 4 super-classes with 4, 6, 2 and 8 classes; bs 16, m 4: halves of 2 classes × 4.
    let supers = vec![vec![5; 4], vec![4, 6, 7, 4, 5, 9], vec![6, 6], vec![4; 8]];
    let (labels, sup) = hierarchy(&supers, &[100, -5, 7, 42]);
    let opts = HierarchicalOptions {
        batches_per_super_pair: 2,
        multiplier: 3,
        ..Default::default()
    };
    let mut s = HierarchicalSampler::new(&labels, &sup, 16, 4, 0, opts).unwrap();
    assert_eq!(s.super_labels(), &[-5, 7, 42, 100]);
    let batches = s.epoch(0);
    assert_eq!(batches.len(), s.batches_per_epoch());
    assert!(!batches.is_empty());
    let mut supers_seen = BTreeSet::new();
    for b in &batches {
        assert_eq!(b.len(), 16);
        let (h1, h2) = b.split_at(8);
        let s1: BTreeSet<i64> = h1.iter().map(|&i| sup[i]).collect();
        let s2: BTreeSet<i64> = h2.iter().map(|&i| sup[i]).collect();
        assert_eq!(s1.len(), 1);
        assert_eq!(s2.len(), 1);
        assert_ne!(s1, s2);
        supers_seen.extend(s1);
        supers_seen.extend(s2);
        for half in [h1, h2] {
            let counts = class_counts(half, &labels);
            // 2 class draws of 4: one class twice (wrap-around) or two classes once.
            assert!(counts.values().all(|&n| n % 4 == 0));
            assert_eq!(counts.values().sum::<usize>(), 8);
        }
    }
    assert_eq!(supers_seen.len(), 4);
}

#[test]
fn hierarchical_half_batch_counts_and_round_robin_pairing_by_hand() {
    // N_s = 25, 25, 50 of N = 100; bpsp 5, multiplier 1: H = round(2.5), round(2.5), round(5)
    // = 2, 2, 5 (ties to even, as Python). Pairing: s1=0 → (0,1), (0,2); s1=1 → (1,2);
    // then only super-class 2 is left (2 half-batches dropped): 3 batches.
    let supers = vec![vec![5; 5], vec![5; 5], vec![5; 10]];
    let (labels, sup) = hierarchy(&supers, &[0, 1, 2]);
    let opts = HierarchicalOptions {
        batches_per_super_pair: 5,
        multiplier: 1,
        ..Default::default()
    };
    let mut s = HierarchicalSampler::new(&labels, &sup, 8, 4, 3, opts).unwrap();
    assert_eq!(s.half_batches_per_super(), &[2, 2, 5]);
    assert_eq!(s.batches_per_epoch(), 3);
    let batches = s.epoch(0);
    let mut pairs: Vec<(i64, i64)> = batches.iter().map(|b| (sup[b[0]], sup[b[4]])).collect();
    pairs.sort();
    assert_eq!(pairs, vec![(0, 1), (0, 2), (1, 2)]);
}

#[test]
fn hierarchical_no_duplicates_when_permutations_align() {
    // Every super-class has a multiple of cph = 2 classes, each with ≥ m samples: no class is
    // drawn twice in a half-batch, so no index repeats.
    let supers = vec![vec![6; 4], vec![5; 2], vec![4; 6]];
    let (labels, sup) = hierarchy(&supers, &[1, 2, 3]);
    let opts = HierarchicalOptions {
        batches_per_super_pair: 4,
        multiplier: 2,
        ..Default::default()
    };
    let mut s = HierarchicalSampler::new(&labels, &sup, 16, 4, 8, opts).unwrap();
    for e in 0..3 {
        for b in s.epoch(e) {
            assert!(!has_duplicates(&b), "{b:?}");
            assert_eq!(class_counts(&b, &labels).len(), 4);
        }
    }
}

#[test]
fn hierarchical_is_deterministic_and_truncates() {
    let supers = vec![vec![4; 6], vec![4; 6], vec![4; 6]];
    let (labels, sup) = hierarchy(&supers, &[0, 1, 2]);
    let opts = HierarchicalOptions {
        batches_per_super_pair: 3,
        multiplier: 2,
        ..Default::default()
    };
    let mut a = HierarchicalSampler::new(&labels, &sup, 8, 4, 5, opts).unwrap();
    let mut b = HierarchicalSampler::new(&labels, &sup, 8, 4, 5, opts).unwrap();
    assert_eq!(a.epoch(1), b.epoch(1));
    assert_ne!(a.epoch(1), a.epoch(2));
    let full = a.batches_per_epoch();
    assert!(full > 3);
    let capped = HierarchicalOptions {
        max_batches: Some(3),
        ..opts
    };
    let mut c = HierarchicalSampler::new(&labels, &sup, 8, 4, 5, capped).unwrap();
    assert_eq!(c.epoch(0).len(), 3);
}

#[test]
fn hierarchical_errors_name_the_parameter() {
    let supers = vec![vec![4; 4], vec![4; 4]];
    let (labels, sup) = hierarchy(&supers, &[0, 1]);
    let d = HierarchicalOptions::default();
    assert_error(
        HierarchicalSampler::new(&labels, &sup, 15, 4, 0, d),
        "batch_size",
    );
    // bs 12: half 6 is not a multiple of 4.
    assert_error(
        HierarchicalSampler::new(&labels, &sup, 12, 4, 0, d),
        "batch_size",
    );
    assert_error(HierarchicalSampler::new(&labels, &sup, 8, 0, 0, d), "m");
    assert_error(
        HierarchicalSampler::new(&labels, &sup[1..], 8, 4, 0, d),
        "super_labels",
    );
    // One super-class only.
    let one = vec![0; labels.len()];
    assert_error(
        HierarchicalSampler::new(&labels, &one, 8, 4, 0, d),
        "super_labels",
    );
    // A class split over two super-labels.
    let mut split = sup.clone();
    split[1] = 1;
    assert_error(
        HierarchicalSampler::new(&labels, &split, 8, 4, 0, d),
        "super_labels",
    );
    let bpsp0 = HierarchicalOptions {
        batches_per_super_pair: 0,
        ..d
    };
    assert_error(
        HierarchicalSampler::new(&labels, &sup, 8, 4, 0, bpsp0),
        "batches_per_super_pair",
    );
    let mult0 = HierarchicalOptions { multiplier: 0, ..d };
    assert_error(
        HierarchicalSampler::new(&labels, &sup, 8, 4, 0, mult0),
        "multiplier",
    );
    let cap0 = HierarchicalOptions {
        max_batches: Some(0),
        ..d
    };
    assert_error(
        HierarchicalSampler::new(&labels, &sup, 8, 4, 0, cap0),
        "max_batches",
    );
    let mut single = labels.clone();
    single.push(1000);
    let mut single_sup = sup.clone();
    single_sup.push(0);
    assert_error(
        HierarchicalSampler::new(&single, &single_sup, 8, 4, 0, d),
        "labels",
    );
    // A tiny super-class gets H_s = round(4/804 · 2) = 0, leaving one: no pair possible.
    let (l2, s2) = hierarchy(&[vec![400, 400], vec![4]], &[0, 1]);
    let small = HierarchicalOptions {
        batches_per_super_pair: 1,
        multiplier: 1,
        ..d
    };
    assert_error(
        HierarchicalSampler::new(&l2, &s2, 8, 4, 0, small),
        "super_labels",
    );
}

// ---------------------------------------------------------------- balanced (P224)

#[test]
fn balanced_reference_batch_counts() {
    // Spec §3.3: CUB (100 classes, 5864 images) at bs 128 → 45 batches of 32 classes × 4;
    // Cars (98 classes, 8054 images) at bs 64 → 126 batches of 16 classes × 4.
    let mut cub = vec![59; 64];
    cub.extend(vec![58; 36]);
    let mut cars = vec![83; 18];
    cars.extend(vec![82; 80]);
    for (sizes, bs, expected) in [(cub, 128, 45), (cars, 64, 126)] {
        let labels = labels_with_sizes(&sizes);
        assert_eq!(labels.len(), if bs == 128 { 5864 } else { 8054 });
        let mut s = BalancedSampler::new(&labels, bs, 4, 0, BalancedOptions::default()).unwrap();
        assert_eq!(s.batches_per_epoch(), expected);
        let batches = s.epoch(0);
        assert_eq!(batches.len(), expected);
        for b in &batches {
            assert_eq!(b.len(), bs);
            let counts = class_counts(b, &labels);
            assert_eq!(counts.len(), bs / 4);
            assert!(counts.values().all(|&n| n == 4));
            assert!(!has_duplicates(b));
        }
    }
}

#[test]
fn balanced_uses_a_class_pool_without_repeats_until_refill() {
    // 10 classes of 12, 6 drawn at a time, bs 8: each class's first 12 samples in the stream
    // (3 takes of 4 before its pool runs dry) are all distinct.
    let labels = labels_with_sizes(&[12; 10]);
    let opts = BalancedOptions {
        classes_per_draw: 6,
        skip_singletons: false,
    };
    let mut s = BalancedSampler::new(&labels, 8, 4, 4, opts).unwrap();
    let stream: Vec<usize> = s.epoch(0).into_iter().flatten().collect();
    let mut per_class: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for &i in &stream {
        per_class.entry(labels[i]).or_default().push(i);
    }
    let mut checked = 0;
    for taken in per_class.values() {
        let first: Vec<usize> = taken.iter().copied().take(12).collect();
        assert!(!has_duplicates(&first), "{first:?}");
        if taken.len() >= 12 {
            checked += 1;
        }
    }
    // N / bs = 15 batches targeted, 3 per draw: 5 draws × 6 classes × 4 = 120 entries,
    // so some class is taken at least 3 times and the check is not vacuous.
    assert_eq!(stream.len(), 120);
    assert!(checked > 0);
}

#[test]
fn balanced_split_classes_when_cpb_does_not_divide_draw() {
    // 10 classes per draw, 4 per batch: ⌊10/4⌋ = 2 batches counted per draw, 40 entries.
    // N = 120, bs 16 → target 7 → 4 draws → 160 entries → 10 batches.
    let labels = labels_with_sizes(&[10; 12]);
    let opts = BalancedOptions {
        classes_per_draw: 10,
        skip_singletons: false,
    };
    let mut s = BalancedSampler::new(&labels, 16, 4, 1, opts).unwrap();
    assert_eq!(s.batches_per_epoch(), 10);
    let batches = s.epoch(0);
    assert_eq!(batches.len(), 10);
    assert!(batches.iter().all(|b| b.len() == 16));
}

#[test]
fn balanced_is_deterministic_and_errors() {
    let labels = labels_with_sizes(&[6; 12]);
    let opts = BalancedOptions {
        classes_per_draw: 8,
        skip_singletons: false,
    };
    let mut a = BalancedSampler::new(&labels, 8, 4, 2, opts).unwrap();
    let mut b = BalancedSampler::new(&labels, 8, 4, 2, opts).unwrap();
    assert_eq!(a.epoch(4), b.epoch(4));
    assert_ne!(a.epoch(4), a.epoch(5));

    assert_error(BalancedSampler::new(&labels, 10, 4, 0, opts), "batch_size");
    assert_error(BalancedSampler::new(&labels, 8, 0, 0, opts), "m");
    // Default 96 classes per draw, only 12 classes.
    assert_error(
        BalancedSampler::new(&labels, 8, 4, 0, BalancedOptions::default()),
        "labels",
    );
    // 8 classes per draw cannot fill a batch of 16 classes.
    assert_error(
        BalancedSampler::new(&labels, 64, 4, 0, opts),
        "classes_per_draw",
    );
    // 12 classes of 2: 24 samples < batch_size 48 (12 classes × 4, all drawn at once).
    let pairs = labels_with_sizes(&[2; 12]);
    let wide = BalancedOptions {
        classes_per_draw: 12,
        ..opts
    };
    assert!(BalancedSampler::new(&labels, 48, 4, 0, wide).is_ok());
    assert_error(BalancedSampler::new(&pairs, 48, 4, 0, wide), "labels");
    let mut single = labels.clone();
    single.push(-1);
    assert_error(BalancedSampler::new(&single, 8, 4, 0, opts), "labels");
}

// ---------------------------------------------------------------- dense triplet

/// Deterministic pseudo-random labels (LCG) in `[0, 8)` on a grid of 0.5, so exact ties and
/// duplicates occur; rows 1 and 2 duplicate row 0.
fn grid_labels(n: usize, dl: usize) -> Matrix {
    let mut state = 0x2545_f491_u64;
    let mut data = Vec::with_capacity(n * dl);
    for _ in 0..n * dl {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        data.push(((state >> 33) % 16) as f32 * 0.5);
    }
    for r in [1, 2] {
        for c in 0..dl {
            data[r * dl + c] = data[c];
        }
    }
    Matrix::new(n, dl, data).unwrap()
}

/// Brute-force ranking of every other sample by (distance, index).
fn brute_rank(labels: &Matrix, dist: LabelDistance, a: usize) -> Vec<(f64, usize)> {
    let mut all: Vec<(f64, usize)> = (0..labels.rows())
        .filter(|&j| j != a)
        .map(|j| (dist.dist(labels.row(a), labels.row(j)), j))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
    all
}

#[test]
fn dense_batches_match_brute_force_ranking() {
    for dist in [LabelDistance::Euclidean, LabelDistance::Manhattan] {
        let labels = grid_labels(40, 3);
        let (b, k) = (12, 4);
        let mut s = DenseTripletSampler::new(&labels, dist, b, k, 17).unwrap();
        let batches = s.dense_epoch(0);
        assert_eq!(batches.len(), 40);
        let anchors: BTreeSet<usize> = batches.iter().map(|x| x.indices[0]).collect();
        assert_eq!(anchors.len(), 40, "every sample anchors exactly one batch");
        for batch in &batches {
            assert_eq!(batch.len(), b);
            let a = batch.indices[0];
            assert!(!batch.indices[1..].contains(&a), "self only as anchor");
            assert!(!has_duplicates(&batch.indices));
            let rank = brute_rank(&labels, dist, a);
            let pos: BTreeMap<usize, usize> =
                rank.iter().enumerate().map(|(p, r)| (r.1, p)).collect();
            // First k = the true k nearest, in order.
            let nearest: Vec<usize> = rank[..k].iter().map(|r| r.1).collect();
            assert_eq!(&batch.indices[1..=k], &nearest[..]);
            // Non-anchor part strictly ascending in (distance, index).
            let ranks: Vec<usize> = batch.indices[1..].iter().map(|i| pos[i]).collect();
            assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
            // Distances: row 0 ascending; the matrix matches, is symmetric, zero diagonal.
            for i in 0..b {
                assert_eq!(batch.dist(i, i), 0.0);
                for j in 0..b {
                    let want =
                        dist.dist(labels.row(batch.indices[i]), labels.row(batch.indices[j]));
                    assert!((batch.dist(i, j) as f64 - want).abs() <= 1e-6 * want.max(1.0));
                    assert_eq!(batch.dist(i, j), batch.dist(j, i));
                }
            }
            assert!((1..b - 1).all(|j| batch.dist(0, j) <= batch.dist(0, j + 1)));
        }
    }
}

#[test]
fn dense_zero_distance_duplicates_stay_eligible() {
    // Rows 1 and 2 duplicate row 0, so anchor 0's two nearest are 1 and 2 at distance 0.
    let labels = grid_labels(30, 2);
    let mut s = DenseTripletSampler::new(&labels, LabelDistance::Euclidean, 10, 3, 0).unwrap();
    let batch = s
        .dense_epoch(0)
        .into_iter()
        .find(|b| b.indices[0] == 0)
        .unwrap();
    assert_eq!(&batch.indices[1..3], &[1, 2]);
    assert_eq!(batch.dist(0, 1), 0.0);
    assert_eq!(batch.dist(0, 2), 0.0);
    let batch1 = s
        .dense_epoch(0)
        .into_iter()
        .find(|b| b.indices[0] == 1)
        .unwrap();
    assert_eq!(&batch1.indices[1..3], &[0, 2]);
}

#[test]
fn dense_random_part_reaches_every_non_neighbour() {
    // N = 20, B = 6, k = 2: 3 random picks from 17 candidates per batch; over 100 epochs every
    // candidate of anchor 5 shows up, and nothing outside them does.
    let labels = grid_labels(20, 2);
    let s = DenseTripletSampler::new(&labels, LabelDistance::Euclidean, 6, 2, 3).unwrap();
    let rank = brute_rank(&labels, LabelDistance::Euclidean, 5);
    let candidates: BTreeSet<usize> = rank[2..].iter().map(|r| r.1).collect();
    let mut seen = BTreeSet::new();
    for e in 0..100 {
        let pos = s.anchors(e).iter().position(|&a| a == 5).unwrap();
        let batch = s.dense_batch(e, pos);
        seen.extend(batch.indices[3..].iter().copied());
    }
    assert_eq!(seen, candidates);
}

#[test]
fn dense_sampler_is_deterministic_and_consistent() {
    let labels = grid_labels(25, 2);
    let make =
        |seed| DenseTripletSampler::new(&labels, LabelDistance::Euclidean, 8, 2, seed).unwrap();
    let (mut a, mut b, mut c) = (make(1), make(1), make(2));
    let ea = a.dense_epoch(3);
    assert_eq!(ea, b.dense_epoch(3));
    assert_ne!(ea, a.dense_epoch(4));
    assert_ne!(ea, c.dense_epoch(3));
    // The index-only epoch, the lazy iterator and single batches agree with dense_epoch.
    let idx: Vec<Vec<usize>> = ea.iter().map(|x| x.indices.clone()).collect();
    assert_eq!(a.epoch(3), idx);
    assert_eq!(a.dense_epoch_iter(3).collect::<Vec<_>>(), ea);
    assert_eq!(a.dense_batch(3, 7), ea[7]);
    assert_eq!(a.anchors(3), idx.iter().map(|x| x[0]).collect::<Vec<_>>());
    let mut capped = make(1).with_max_batches(5).unwrap();
    assert_eq!(capped.batches_per_epoch(), 5);
    assert_eq!(capped.dense_epoch(3), ea[..5].to_vec());
}

#[test]
fn dense_circular_distance_wraps() {
    // Angles in degrees: 350 is 20 from 10, nearer than 40.
    let labels = Matrix::new(4, 1, vec![10.0, 350.0, 40.0, 200.0]).unwrap();
    let circ = LabelDistance::Circular { period: 360.0 };
    let mut s = DenseTripletSampler::new(&labels, circ, 3, 1, 0).unwrap();
    let batch = s
        .dense_epoch(0)
        .into_iter()
        .find(|b| b.indices[0] == 0)
        .unwrap();
    assert_eq!(batch.indices[1], 1);
    assert!((batch.dist(0, 1) - 20.0).abs() < 1e-4);
}

#[test]
fn dense_errors_name_the_parameter() {
    let labels = grid_labels(10, 2);
    let e = LabelDistance::Euclidean;
    assert_error(DenseTripletSampler::new(&labels, e, 11, 5, 0), "batch_size");
    assert_error(DenseTripletSampler::new(&labels, e, 1, 0, 0), "batch_size");
    assert_error(DenseTripletSampler::new(&labels, e, 6, 6, 0), "k");
    let mut bad = labels.clone();
    bad.data_mut()[7] = f32::NAN;
    let err = DenseTripletSampler::new(&bad, e, 6, 2, 0).unwrap_err();
    assert_eq!(err.param, "labels");
    assert!(err.to_string().contains("row 3"), "{err}");
    let empty = Matrix::new(10, 0, vec![]).unwrap();
    assert_error(DenseTripletSampler::new(&empty, e, 6, 2, 0), "labels");
    let circ = LabelDistance::Circular { period: 0.0 };
    assert_error(DenseTripletSampler::new(&labels, circ, 6, 2, 0), "distance");
    let ok = DenseTripletSampler::new(&labels, e, 6, 2, 0).unwrap();
    assert_error(ok.with_max_batches(0), "max_batches");
}

// ---------------------------------------------------------------- binary triplet

#[test]
fn binary_batches_split_positives_from_pool_and_negatives_from_rest() {
    let labels = grid_labels(60, 3);
    let (b, p, pool) = (20, 4, 10);
    let dist = LabelDistance::Euclidean;
    let mut s = BinaryTripletSampler::new(&labels, dist, b, p, pool, 21).unwrap();
    let batches = s.binary_epoch(1);
    assert_eq!(batches.len(), 60);
    let mut seen_anchors = BTreeSet::new();
    for bb in &batches {
        assert_eq!(bb.positives, p);
        let batch = &bb.batch;
        assert_eq!(batch.len(), b);
        let a = batch.indices[0];
        seen_anchors.insert(a);
        assert!(!batch.indices[1..].contains(&a));
        assert!(!has_duplicates(&batch.indices));
        let rank = brute_rank(&labels, dist, a);
        let pos: BTreeMap<usize, usize> = rank.iter().enumerate().map(|(q, r)| (r.1, q)).collect();
        let ranks: Vec<usize> = batch.indices[1..].iter().map(|i| pos[i]).collect();
        assert!(ranks[..p].iter().all(|&r| r < pool), "{ranks:?}");
        assert!(ranks[p..].iter().all(|&r| r >= pool), "{ranks:?}");
        assert!(ranks.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(batch.dist(0, 1) as f64, rank[ranks[0]].0 as f32 as f64);
    }
    assert_eq!(seen_anchors.len(), 60);
    // Index-only epoch agrees; determinism per epoch.
    let idx: Vec<Vec<usize>> = batches.iter().map(|x| x.batch.indices.clone()).collect();
    assert_eq!(s.epoch(1), idx);
    assert_ne!(s.epoch(2), idx);
    assert_eq!(s.binary_batch(1, 9), batches[9]);
    let mut capped = s.clone().with_max_batches(4).unwrap();
    assert_eq!(capped.binary_epoch(1), batches[..4].to_vec());
}

#[test]
fn binary_errors_name_the_parameter() {
    let labels = grid_labels(40, 2);
    let e = LabelDistance::Euclidean;
    assert_error(
        BinaryTripletSampler::new(&labels, e, 20, 0, 10, 0),
        "positives",
    );
    assert_error(
        BinaryTripletSampler::new(&labels, e, 20, 11, 10, 0),
        "positives",
    );
    assert_error(
        BinaryTripletSampler::new(&labels, e, 5, 4, 10, 0),
        "batch_size",
    );
    // 10 pool + anchor + 30 negatives = 41 > 40 samples.
    assert_error(
        BinaryTripletSampler::new(&labels, e, 35, 4, 10, 0),
        "labels",
    );
    assert!(BinaryTripletSampler::new(&labels, e, 34, 4, 10, 0).is_ok());
    let circ = LabelDistance::Circular { period: f64::NAN };
    assert_error(
        BinaryTripletSampler::new(&labels, circ, 20, 4, 10, 0),
        "distance",
    );
}
