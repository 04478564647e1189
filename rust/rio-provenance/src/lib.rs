//! rio-provenance: does a checkpoint fit a linear blend of candidate parent checkpoints?
