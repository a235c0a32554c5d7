pub mod hash;
pub mod manifest;
pub mod names;
pub mod source;
pub mod wire;
pub mod work;
