//! Devices' gRPC services, one module per API version. Both call the same
//! flows with the caller they authenticated; v1alpha2 converts at its edge
//! with the model's transforms.

pub mod v1;
pub mod v1alpha2;
