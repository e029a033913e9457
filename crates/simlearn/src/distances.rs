//! Similarity and distance matrices on embedding tensors.
