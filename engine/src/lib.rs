pub mod hash;
pub mod manifest;
pub mod names;
pub mod session;
pub mod source;
pub mod transport;
pub mod wire;
pub mod work;
