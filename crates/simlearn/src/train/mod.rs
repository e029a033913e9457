//! The trainer: optimiser groups, learning-rate schedule, evaluation, checkpoints, metrics log.
