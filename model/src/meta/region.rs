//! `fleetlog.meta.v1.Region`: `regions/{region}`.

use fleetlog_proto::meta::v1::{Deployment, Region};

use super::names::RegionName;

use crate::error::ModelError;
use crate::stored::stored_with_prefix;
use crate::{Resource, Surroundings};

impl Resource for Region {
    type Name = RegionName;
    const FIELD: &'static str = "region";
    const ID_FIELD: &'static str = "region_id";
    const API_VERSION: &'static str = super::V1;
    const AREA: crate::Area = crate::Area::Meta;
    const CHECKS_OTHERS: bool = true;

    crate::resource_fields!();

    /// A region is in use while a fleetd serves it or a deployment is in it.
    fn check_delete(&self, around: &Surroundings<'_>) -> Result<(), ModelError> {
        let Ok(name) = self.name.parse::<RegionName>() else {
            return Ok(());
        };
        if name.region == *around.region {
            return Err(ModelError::FailedPrecondition(format!(
                "{name} is the region this fleetd serves; it cannot be deleted while it is served"
            )));
        }
        let deployed: Vec<String> =
            stored_with_prefix::<Deployment>(around.projection, "services/")?
                .into_iter()
                .filter(|d| d.region == self.name)
                .map(|d| d.name)
                .collect();
        if !deployed.is_empty() {
            return Err(ModelError::FailedPrecondition(format!(
                "{name} has deployments ({}); delete them first",
                deployed.join(", ")
            )));
        }
        Ok(())
    }
}
