//! The straight-through step function shared by every loss that needs one.
