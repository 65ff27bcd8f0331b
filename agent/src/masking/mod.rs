//! Data masking: sensitive values are rewritten in results before they
//! leave the proxy.
pub mod detect;
pub mod strategy;
