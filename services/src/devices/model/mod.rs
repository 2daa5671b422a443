//! What Devices' resources are, without I/O: their names, their
//! declarations for the engine (`impl Resource`, validation), which service
//! account acts as them, the v1 ⇄ v1alpha2 transforms and the pure
//! decisions of provisioning. The flows and the API build on this; it
//! imports neither.

pub mod acts_as;
pub mod device;
pub mod names;
pub mod provisioning;
pub mod transforms;

// The API versions are declared here, not in `devices`, so the resource
// declarations name them without importing the module that imports them.
pub const V1ALPHA2: &str = "v1alpha2";
pub const V1: &str = "v1";
