//! Online tuple miners: which pairs or triplets of a batch a loss should use.
