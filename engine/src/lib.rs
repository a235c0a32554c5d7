pub mod hash;
pub mod manifest;
pub mod names;
pub mod wire;
