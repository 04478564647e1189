//! rio-model: checkpoint folders (config, memory-mapped safetensors shards) and model definitions.
