//! Batch samplers: which dataset indices form each batch of an epoch.
