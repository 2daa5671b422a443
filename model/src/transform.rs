//! The conversion between two API versions of a resource, one direction
//! per [`Transform`]: of the resource, its name and parent and its field
//! paths, and through those of a request's field mask, filter and order.

use fleetlog_events::ResourceName;
use fleetlog_projections::ProjectionError;
use fleetlog_projections::query_lang::{Filter, OrderBy, PathTranslation};
use prost_reflect::ReflectMessage;

use crate::error::ModelError;
use crate::{Resource, parse_mask};

type NameOf<R> = <R as Resource>::Name;
type ParentOf<R> = <<R as Resource>::Name as ResourceName>::Parent;

/// One direction of the conversion between two API versions of a resource.
pub trait Transform: Send + Sync + 'static {
    type From: Resource;
    type To: Resource;

    /// The resource in the other version. Fields a field mask left out stay
    /// unset, and an empty name stays empty.
    fn resource(&self, from: Self::From) -> Self::To;
    fn name(&self, name: &NameOf<Self::From>) -> NameOf<Self::To>;
    fn parent(&self, parent: &ParentOf<Self::From>) -> ParentOf<Self::To>;
    /// A field path of `From` as paths of `To` (several when a message
    /// splits; a path that does not change maps to itself).
    fn paths(&self, path: &str) -> Vec<String>;
}

/// Validates a field mask against `From` and translates its paths.
pub fn translate_mask<F: Transform>(
    transform: &F,
    mask: Option<prost_types::FieldMask>,
    field: &'static str,
) -> Result<Option<prost_types::FieldMask>, ModelError> {
    let Some(mask) = mask else { return Ok(None) };
    parse_mask::<F::From>(Some(mask.clone()), field)?;
    let paths = mask
        .paths
        .iter()
        .flat_map(|p| transform.paths(p.trim()))
        .collect();
    Ok(Some(prost_types::FieldMask { paths }))
}

/// Parses a filter against `From` and writes it in `To`'s paths.
pub fn translate_filter<F: Transform>(transform: &F, text: &str) -> Result<String, ModelError> {
    let descriptor = F::From::default().descriptor();
    let filter = Filter::parse(text, &descriptor).map_err(ProjectionError::from)?;
    filter
        .translate(&PathsOf(transform))
        .map_err(|m| ModelError::invalid("filter", m))
}

/// Parses an `order_by` against `From` and writes it in `To`'s paths.
pub fn translate_order<F: Transform>(transform: &F, text: &str) -> Result<String, ModelError> {
    let descriptor = F::From::default().descriptor();
    let order = OrderBy::parse(text, &descriptor).map_err(ProjectionError::from)?;
    order
        .translate(&PathsOf(transform))
        .map_err(|m| ModelError::invalid("order_by", m))
}

/// The field paths of a [`Transform`] as a filter/order translation: every
/// path must have exactly one counterpart; names compared with `name` are
/// translated too.
struct PathsOf<'a, F>(&'a F);

impl<F: Transform> PathTranslation for PathsOf<'_, F> {
    fn path(&self, path: &str) -> Result<String, String> {
        let mut mapped = self.0.paths(path);
        match mapped.len() {
            1 => Ok(mapped.remove(0)),
            _ => Err(format!(
                "{path} has no single counterpart in API version {}; name its fields one by one",
                F::To::API_VERSION
            )),
        }
    }

    fn string_value(&self, path: &str, value: &str) -> String {
        if path != "name" {
            return value.to_owned();
        }
        match value.parse::<NameOf<F::From>>() {
            Ok(name) => self.0.name(&name).to_string(),
            Err(_) => value.to_owned(),
        }
    }
}
