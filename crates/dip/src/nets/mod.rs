//! Network architectures built on the engine.

mod skip;

pub use skip::SkipSpec;
