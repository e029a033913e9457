//! Fuzzes the `.npy` parser: any byte string must give `Ok` or `Err`, never a panic, and an
//! accepted array must hold exactly `product(shape)` values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlearn_eval::io::{parse_npy, NpyData};

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = parse_npy(data) {
        let n: usize = a.shape.iter().product();
        let len = match &a.data {
            NpyData::Float(v) => v.len(),
            NpyData::Int(v) => v.len(),
        };
        assert_eq!(n, len);
    }
});
