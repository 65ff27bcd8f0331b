//! Protocol handling between the client and the target. Until a protocol has
//! its own proxy, its bytes go through [`relay`] unchanged.

pub mod ca;
pub mod https;
pub mod postgres;
pub mod relay;
pub mod ssh;
pub mod stream;
