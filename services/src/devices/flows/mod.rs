//! What Devices does beyond the standard methods, on v1 types: an agent's
//! registration and the service accounts made for it (`provisioning`),
//! what the agent does with its key (`agent`) and the archive of its logs
//! (`logs`). Flows build on the model and never see an API version's
//! messages; the API converts at its edge and passes the caller it
//! authenticated.

pub mod agent;
pub mod logs;
pub mod provisioning;
