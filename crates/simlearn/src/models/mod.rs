//! Embedding models: heads on precomputed features, L2-normalised output.
