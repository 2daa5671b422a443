//! `fleetlog.meta.v1.Region`: `regions/{region}`.

pub use super::names::RegionName;
use fleetlog_proto::meta::v1::region_service_server::RegionService;
use fleetlog_proto::meta::v1::{
    BatchGetRegionsRequest, BatchGetRegionsResponse, CreateRegionRequest, DeleteRegionRequest,
    GetRegionRequest, ListRegionsRequest, ListRegionsResponse, Region, RegionChange,
    UpdateRegionRequest, WatchRegionRequest, WatchRegionResponse, WatchRegionsRequest,
    WatchRegionsResponse,
};

use crate::engine::{Engine, Resource, Surroundings, stored_with_prefix};
use crate::error::ServiceError;
use fleetlog_proto::meta::v1::Deployment;

impl Resource for Region {
    type Name = RegionName;
    const FIELD: &'static str = "region";
    const ID_FIELD: &'static str = "region_id";
    const API_VERSION: &'static str = super::V1;
    const AREA: crate::engine::access::Area = crate::engine::access::Area::Meta;

    crate::resource_fields!();

    /// A region is in use while a fleetd serves it or a deployment is in it.
    fn check_delete(&self, around: &Surroundings<'_>) -> Result<(), ServiceError> {
        let Ok(name) = self.name.parse::<RegionName>() else {
            return Ok(());
        };
        if name.region == *around.region {
            return Err(ServiceError::FailedPrecondition(format!(
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
            return Err(ServiceError::FailedPrecondition(format!(
                "{name} has deployments ({}); delete them first",
                deployed.join(", ")
            )));
        }
        Ok(())
    }
}

pub struct RegionApi {
    engine: Engine<Region>,
}

impl RegionApi {
    pub fn new(engine: Engine<Region>) -> Self {
        RegionApi { engine }
    }
}

crate::standard_service! {
    impl RegionService for RegionApi {
        resource: Region,
        field: region,
        plural: regions,
        id_field: region_id,
        change: RegionChange,
        get: get_region(GetRegionRequest),
        batch_get: batch_get_regions(BatchGetRegionsRequest) -> BatchGetRegionsResponse,
        list: list_regions(ListRegionsRequest) -> ListRegionsResponse,
        watch_one: watch_region(WatchRegionRequest) -> WatchRegionResponse, stream WatchRegionStream,
        watch: watch_regions(WatchRegionsRequest) -> WatchRegionsResponse, stream WatchRegionsStream,
        create: create_region(CreateRegionRequest),
        update: update_region(UpdateRegionRequest),
        delete: delete_region(DeleteRegionRequest),
    }
}
