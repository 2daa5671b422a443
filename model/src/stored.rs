//! Reading resources as a projection stores them, for the rules of one
//! resource that look at others (a deployment's service, a project's role
//! bindings) and for the services' own lookups.

use fleetlog_events::ResourceName;
use fleetlog_projections::Projection;
use fleetlog_projections::ProjectionError;

use crate::Resource;
use crate::error::ModelError;

/// Every `R` under `parent`, as `projection` stores them (for small
/// collections read whole, like a project's role bindings).
pub fn stored_under<R: Resource>(
    projection: &Projection,
    parent: &<R::Name as ResourceName>::Parent,
) -> Result<Vec<R>, ModelError> {
    stored_with_prefix(projection, &R::Name::collection_prefix(parent))
}

/// Every `R` whose name starts with `prefix` (e.g. `services/`: the
/// deployments of every service), as [`stored_under`] reads them.
pub fn stored_with_prefix<R: Resource>(
    projection: &Projection,
    prefix: &str,
) -> Result<Vec<R>, ModelError> {
    let descriptor = R::default().descriptor();
    let key = fleetlog_projections::store::record_key(descriptor.full_name(), prefix);
    let mut found = Vec::new();
    projection.store().scan(&key, None, |_, record| {
        let mut resource = R::decode(record.bytes.as_slice()).map_err(|e| {
            ProjectionError::Storage(format!(
                "a stored {} does not decode: {e}",
                descriptor.full_name()
            ))
        })?;
        resource.metadata_mut().revision = fleetlog_events::Revision(record.revision).to_wire();
        found.push(resource);
        Ok(true)
    })?;
    Ok(found)
}

/// A resource exactly as `projection` (of `R`'s API version) stores it,
/// with `metadata.revision` stamped from its record.
pub fn stored<R: Resource>(projection: &Projection, name: &str) -> Result<Option<R>, ModelError> {
    let descriptor = R::default().descriptor();
    let Some(record) = projection.store().get(descriptor.full_name(), name)? else {
        return Ok(None);
    };
    let mut resource = R::decode(record.bytes.as_slice()).map_err(|e| {
        ModelError::Internal(format!(
            "a stored {} does not decode: {e}",
            descriptor.full_name()
        ))
    })?;
    resource.metadata_mut().revision = fleetlog_events::Revision(record.revision).to_wire();
    Ok(Some(resource))
}
