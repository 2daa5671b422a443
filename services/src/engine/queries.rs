//! Get, BatchGet, List: read the active projection, after waiting for
//! `min_revision`.

use std::sync::Arc;

use fleetlog_events::{Id, ParentName, ResourceName};
use fleetlog_projections::Projection;
use fleetlog_projections::ProjectionError;
use fleetlog_projections::query::{self, ListQuery};
use fleetlog_projections::query_lang::{FieldMask, Filter, OrderBy};
use prost_reflect::DynamicMessage;

use super::Engine;
use crate::error::ServiceError;
use fleetlog_model::stored::stored;
use fleetlog_model::{Resource, parse_mask};

pub const DEFAULT_PAGE_SIZE: i32 = 100;
pub const MAX_PAGE_SIZE: i32 = 1000;
/// Most names one BatchGet may ask for.
pub const MAX_BATCH_GET: usize = 1000;

pub struct ListRequest {
    pub parent: String,
    pub page_size: i32,
    pub page_token: String,
    pub filter: String,
    pub order_by: String,
    pub field_mask: Option<prost_types::FieldMask>,
    pub min_revision: i64,
}

pub struct ListResponse<R> {
    pub items: Vec<R>,
    pub next_page_token: String,
    pub revision: i64,
}

impl<R: Resource> Engine<R> {
    pub async fn get(
        &self,
        name: &str,
        field_mask: Option<prost_types::FieldMask>,
        min_revision: i64,
    ) -> Result<R, ServiceError> {
        self.get_at(self.projection(), name, field_mask, min_revision)
            .await
    }

    pub async fn batch_get(
        &self,
        names: &[String],
        field_mask: Option<prost_types::FieldMask>,
        min_revision: i64,
    ) -> Result<(Vec<R>, Vec<String>), ServiceError> {
        self.batch_get_at(self.projection(), names, field_mask, min_revision)
            .await
    }

    pub async fn list(&self, request: ListRequest) -> Result<ListResponse<R>, ServiceError> {
        self.list_at(self.projection(), request).await
    }

    /// Get from a given projection of this resource's API version.
    pub async fn get_at(
        &self,
        projection: Arc<Projection>,
        name: &str,
        field_mask: Option<prost_types::FieldMask>,
        min_revision: i64,
    ) -> Result<R, ServiceError> {
        let name = self.parse_name("name", name)?;
        let mask = parse_mask::<R>(field_mask, "field_mask")?;
        let Some((projection, own)) = self.source(projection, name.region())? else {
            return Err(ServiceError::NotFound(name.to_string()));
        };
        let projection = self.wait_for(projection, min_revision, own).await?;
        fetch::<R>(&projection, &mask, &name.to_string())?
            .ok_or_else(|| ServiceError::NotFound(name.to_string()))
    }

    /// Returns the found resources in request order and the names not found.
    pub async fn batch_get_at(
        &self,
        projection: Arc<Projection>,
        names: &[String],
        field_mask: Option<prost_types::FieldMask>,
        min_revision: i64,
    ) -> Result<(Vec<R>, Vec<String>), ServiceError> {
        if names.len() > MAX_BATCH_GET {
            return Err(ServiceError::invalid(
                "names",
                format!(
                    "at most {MAX_BATCH_GET} names per call, got {}",
                    names.len()
                ),
            ));
        }
        let parsed = names
            .iter()
            .enumerate()
            .map(|(i, n)| self.parse_name(&format!("names[{i}]"), n))
            .collect::<Result<Vec<_>, _>>()?;
        let mask = parse_mask::<R>(field_mask, "field_mask")?;
        // Each name from its region's projection, each waited for once.
        let mut sources: Vec<(Option<Id>, Option<Arc<Projection>>)> = Vec::new();
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for name in parsed {
            let region = name.region().cloned();
            let source = match sources.iter().find(|(r, _)| *r == region) {
                Some((_, source)) => source.clone(),
                None => {
                    let source = match self.source(projection.clone(), region.as_ref())? {
                        Some((source, own)) => {
                            Some(self.wait_for(source, min_revision, own).await?)
                        }
                        None => None,
                    };
                    sources.push((region, source.clone()));
                    source
                }
            };
            let fetched = match &source {
                Some(source) => fetch::<R>(source, &mask, &name.to_string())?,
                None => None,
            };
            match fetched {
                Some(resource) => found.push(resource),
                None => missing.push(name.to_string()),
            }
        }
        Ok((found, missing))
    }

    pub async fn list_at(
        &self,
        projection: Arc<Projection>,
        request: ListRequest,
    ) -> Result<ListResponse<R>, ServiceError> {
        let parent = self.parse_parent(&request.parent)?;
        let page_size = match request.page_size {
            n if n < 0 => return Err(ServiceError::invalid("page_size", "must not be negative")),
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let descriptor = R::default().descriptor();
        let filter = Filter::parse(&request.filter, &descriptor).map_err(ProjectionError::from)?;
        let order =
            OrderBy::parse(&request.order_by, &descriptor).map_err(ProjectionError::from)?;
        let mask = parse_mask::<R>(request.field_mask, "field_mask")?;
        let binding = list_binding(&parent, &request.filter, &order);
        let after = if request.page_token.is_empty() {
            None
        } else {
            Some(
                self.ctx
                    .page_tokens
                    .open(&binding, &request.page_token)
                    .map_err(ProjectionError::from)?,
            )
        };
        let every_region = parent.region().is_some_and(|r| r.as_str() == EVERY_REGION);
        let sources = if every_region {
            self.every_region(projection, &parent, &order, request.min_revision)
                .await?
        } else {
            let region = parent.region();
            let Some((projection, own)) = self.source(projection, region)? else {
                let region = region.map(Id::as_str).unwrap_or_default();
                return Err(ServiceError::NotFound(format!(
                    "regions/{region}: this region reads no copy of it (it has no Deployment in Meta)"
                )));
            };
            let projection = self.wait_for(projection, request.min_revision, own).await?;
            vec![(projection, R::Name::collection_prefix(&parent))]
        };
        let list_query = ListQuery {
            descriptor,
            collection_prefix: String::new(),
            filter,
            order,
            // Bounded above by MAX_PAGE_SIZE, so the cast is lossless.
            page_size: page_size as usize,
            after,
        };
        let page = tokio::task::spawn_blocking(move || merged_list(&sources, list_query))
            .await
            .map_err(|e| ServiceError::Internal(format!("list task failed: {e}")))??;
        let items = page
            .items
            .iter()
            .map(|message| finish(&mask, message))
            .collect::<Result<Vec<R>, _>>()?;
        let next_page_token = page
            .next
            .map(|cursor| self.ctx.page_tokens.seal(&binding, &cursor))
            .unwrap_or_default();
        Ok(ListResponse {
            items,
            next_page_token,
            revision: page.revision.to_wire(),
        })
    }
}

impl<R: Resource> Engine<R> {
    /// The projections a List over `regions/-` reads, this region's first,
    /// each with its collection prefix. Name order only: one cursor (a
    /// name) continues every region's part, since names sort by region.
    async fn every_region(
        &self,
        own: Arc<Projection>,
        parent: &<R::Name as ResourceName>::Parent,
        order: &OrderBy,
        min_revision: i64,
    ) -> Result<Vec<(Arc<Projection>, String)>, ServiceError> {
        if min_revision != 0 {
            return Err(ServiceError::invalid(
                "min_revision",
                "is a revision of one region's log; list one region (regions/{region}) to wait for it",
            ));
        }
        if !order.is_empty() {
            return Err(ServiceError::invalid(
                "order_by",
                "is not supported over regions/- yet; list one region, or order by name",
            ));
        }
        let own = self.wait_for(own, 0, true).await?;
        let mut sources = vec![(
            own.clone(),
            R::Name::collection_prefix(&parent.in_region(&self.ctx.region)),
        )];
        for region in self.ctx.copies.regions() {
            // A copy mid-switch to this region's version is left out until
            // it is in it.
            if let Ok(Some((copy, _))) = self.source(own.clone(), Some(&region)) {
                sources.push((copy, R::Name::collection_prefix(&parent.in_region(&region))));
            }
        }
        Ok(sources)
    }

    /// What a page token of a List with these parameters is bound to;
    /// `None` when they do not parse (the List itself reports why).
    pub fn list_binding(&self, parent: &str, filter: &str, order_by: &str) -> Option<String> {
        let parent = self.parse_parent(parent).ok()?;
        let order = OrderBy::parse(order_by, &R::default().descriptor()).ok()?;
        Some(list_binding(&parent, filter, &order))
    }
}

/// A page token only continues the query that made it.
fn list_binding(parent: &impl std::fmt::Display, filter: &str, order: &OrderBy) -> String {
    format!("{parent}\n{}\n{}", filter.trim(), order.canonical())
}

/// The region ID that lists every region: `projects/p/regions/-` (AIP-159).
pub const EVERY_REGION: &str = "-";

/// One page over several projections (one per region), each read under its
/// own collection prefix, merged in name order; one projection is a plain
/// List. The page's revision is the first projection's (this region's).
fn merged_list(
    sources: &[(Arc<Projection>, String)],
    mut list_query: ListQuery,
) -> Result<query::ListPage, ProjectionError> {
    let mut pages = Vec::with_capacity(sources.len());
    for (projection, prefix) in sources {
        list_query.collection_prefix = prefix.clone();
        pages.push(query::list(projection, &list_query)?);
    }
    if pages.len() == 1 {
        return Ok(pages.remove(0));
    }
    let revision = pages
        .first()
        .map_or(fleetlog_events::Revision::NONE, |p| p.revision);
    let more_in_a_region = pages.iter().any(|p| p.next.is_some());
    let mut items: Vec<DynamicMessage> = pages.into_iter().flat_map(|p| p.items).collect();
    let name_of = |m: &DynamicMessage| {
        m.get_field_by_name("name")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    items.sort_by_key(name_of);
    let has_more = more_in_a_region || items.len() > list_query.page_size;
    items.truncate(list_query.page_size);
    let next = if has_more {
        items
            .last()
            .map(|last| fleetlog_projections::query_lang::Cursor {
                sort_key: Vec::new(),
                name: name_of(last),
            })
    } else {
        None
    };
    Ok(query::ListPage {
        items,
        next,
        revision,
    })
}

/// One resource from `projection` (of `R`'s API version), shaped by `mask`.
fn fetch<R: Resource>(
    projection: &Projection,
    mask: &FieldMask,
    name: &str,
) -> Result<Option<R>, ServiceError> {
    if mask.is_empty() {
        // The common case needs no reflection: decode the typed message.
        return Ok(stored(projection, name)?);
    }
    let descriptor = R::default().descriptor();
    query::get(projection, &descriptor, name)?
        .map(|message| finish(mask, &message))
        .transpose()
}

/// Applies the field mask and converts to the typed resource.
pub(super) fn finish<R: Resource>(
    mask: &FieldMask,
    message: &DynamicMessage,
) -> Result<R, ServiceError> {
    let shaped = if mask.is_empty() {
        message.clone()
    } else {
        mask.project(message)
    };
    shaped
        .transcode_to::<R>()
        .map_err(|e| ServiceError::Internal(format!("converting a stored resource: {e}")))
}
