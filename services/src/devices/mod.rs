//! The Devices service: its resources' declarations and custom actions.

pub mod device;

/// The service token in stream names and subjects.
pub const SERVICE: &str = "devices";
/// The API version events are written in.
pub const API_VERSION: &str = "v1";
