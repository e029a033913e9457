//! Datasets: feature matrices with class or continuous labels, the embedded digits set,
//! class-disjoint splits.
