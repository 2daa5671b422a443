//! Serving one API version of a resource whatever version the region is
//! currently on (DESIGN §5).
//!
//! Queries read the active projection: natively when it is this API's
//! version, otherwise through a `Transform` of the request (names, field
//! masks, filters, order, page tokens) and of the results. Commands and
//! watches always run on the storage version's engine, which writes events
//! in the current version. A [`Versioned`] has the same method signatures as
//! [`Engine`], so `standard_service!` serves either.

use std::sync::Arc;

use fleetlog_model::Resource;
use fleetlog_model::transform::{Transform, translate_filter, translate_mask, translate_order};
use fleetlog_projections::Projection;
use futures::StreamExt;

use super::watch::{Change, WatchBatch, WatchBatches, WatchTarget};
use super::{CreateRequest, DeleteRequest, Engine, ListRequest, ListResponse, UpdateRequest};
use crate::error::ServiceError;

type NameOf<R> = <R as Resource>::Name;

/// One API version's standard methods, served on whatever version is active.
pub struct Versioned<F: Transform, B> {
    native: Engine<F::From>,
    other: Engine<F::To>,
    forward: F,
    back: B,
    /// Whether this API's own version is the storage version (commands and
    /// watches run natively) or the other one is.
    native_is_storage: bool,
}

impl<F, B> Versioned<F, B>
where
    F: Transform,
    B: Transform<From = F::To, To = F::From> + Clone,
{
    pub fn new(
        native: Engine<F::From>,
        other: Engine<F::To>,
        forward: F,
        back: B,
        native_is_storage: bool,
    ) -> Self {
        Versioned {
            native,
            other,
            forward,
            back,
            native_is_storage,
        }
    }

    pub fn context(&self) -> &super::ServiceContext {
        self.native.context()
    }

    /// The projection to read and whether it is in this API's version.
    fn read_at(&self) -> (Arc<Projection>, bool) {
        let projection = self.native.projection();
        // A type that exists in the other version only is stored there in
        // every projection.
        let native = projection.api_version() == F::From::API_VERSION && !F::To::ONE_VERSION;
        (projection, native)
    }

    pub async fn get(
        &self,
        name: &str,
        field_mask: Option<prost_types::FieldMask>,
        min_revision: i64,
    ) -> Result<F::From, ServiceError> {
        let (projection, native) = self.read_at();
        if native {
            return self
                .native
                .get_at(projection, name, field_mask, min_revision)
                .await;
        }
        let other_name = self.forward_name("name", name)?;
        let mask = self.forward_mask(field_mask, "field_mask")?;
        let found = self
            .other
            .get_at(projection, &other_name, mask, min_revision)
            .await
            .map_err(|e| self.back_error(e, name))?;
        Ok(self.back.resource(found))
    }

    pub async fn batch_get(
        &self,
        names: &[String],
        field_mask: Option<prost_types::FieldMask>,
        min_revision: i64,
    ) -> Result<(Vec<F::From>, Vec<String>), ServiceError> {
        let (projection, native) = self.read_at();
        if native {
            return self
                .native
                .batch_get_at(projection, names, field_mask, min_revision)
                .await;
        }
        let other_names = names
            .iter()
            .enumerate()
            .map(|(i, n)| self.forward_name(&format!("names[{i}]"), n))
            .collect::<Result<Vec<_>, _>>()?;
        let mask = self.forward_mask(field_mask, "field_mask")?;
        let (found, missing) = self
            .other
            .batch_get_at(projection, &other_names, mask, min_revision)
            .await?;
        let found = found.into_iter().map(|r| self.back.resource(r)).collect();
        let missing = missing
            .iter()
            .map(|n| self.back_name(n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((found, missing))
    }

    pub async fn list(&self, request: ListRequest) -> Result<ListResponse<F::From>, ServiceError> {
        let (projection, native) = self.read_at();
        if native {
            return self.native.list_at(projection, request).await;
        }
        let other_parent = self.forward_parent(&request.parent)?;
        let other_filter = translate_filter(&self.forward, &request.filter)?;
        let other_order = translate_order(&self.forward, &request.order_by)?;
        let page_token = if request.page_token.is_empty() {
            String::new()
        } else {
            self.reseal(
                (
                    &self.native,
                    &request.parent,
                    &request.filter,
                    &request.order_by,
                ),
                (&self.other, &other_parent, &other_filter, &other_order),
                &request.page_token,
                |name| self.forward_name("page_token", name),
            )?
        };
        let page = self
            .other
            .list_at(
                projection,
                ListRequest {
                    parent: other_parent.clone(),
                    page_size: request.page_size,
                    page_token,
                    filter: other_filter.clone(),
                    order_by: other_order.clone(),
                    field_mask: self.forward_mask(request.field_mask, "field_mask")?,
                    min_revision: request.min_revision,
                },
            )
            .await?;
        let next_page_token = if page.next_page_token.is_empty() {
            String::new()
        } else {
            self.reseal(
                (&self.other, &other_parent, &other_filter, &other_order),
                (
                    &self.native,
                    &request.parent,
                    &request.filter,
                    &request.order_by,
                ),
                &page.next_page_token,
                |name| self.back_name(name),
            )?
        };
        Ok(ListResponse {
            items: page
                .items
                .into_iter()
                .map(|r| self.back.resource(r))
                .collect(),
            next_page_token,
            revision: page.revision,
        })
    }

    /// Re-binds a page token from one version's query to the equivalent
    /// query of the other version, translating the cursor's name. Clients of
    /// an API version only ever hold tokens of that version, so a token
    /// survives a switch between its pages.
    fn reseal<X: Resource, Y: Resource>(
        &self,
        from: (&Engine<X>, &str, &str, &str),
        to: (&Engine<Y>, &str, &str, &str),
        token: &str,
        translate_name: impl Fn(&str) -> Result<String, ServiceError>,
    ) -> Result<String, ServiceError> {
        let keys = &self.native.context().page_tokens;
        let (Some(from_binding), Some(to_binding)) = (
            from.0.list_binding(from.1, from.2, from.3),
            to.0.list_binding(to.1, to.2, to.3),
        ) else {
            return Ok(token.to_owned());
        };
        let mut cursor = keys
            .open(&from_binding, token)
            .map_err(fleetlog_projections::ProjectionError::from)?;
        cursor.name = translate_name(&cursor.name)?;
        Ok(keys.seal(&to_binding, &cursor))
    }

    pub async fn watch(
        &self,
        target: WatchTarget,
        field_mask: Option<prost_types::FieldMask>,
        resume_revision: i64,
    ) -> Result<WatchBatches<F::From>, ServiceError> {
        if self.native_is_storage {
            return self.native.watch(target, field_mask, resume_revision).await;
        }
        let target = match target {
            WatchTarget::One(name) => WatchTarget::One(self.forward_name("name", &name)?),
            WatchTarget::Collection { parent, filter } => WatchTarget::Collection {
                parent: self.forward_parent(&parent)?,
                filter: translate_filter(&self.forward, &filter)?,
            },
        };
        let mask = self.forward_mask(field_mask, "field_mask")?;
        let batches = self.other.watch(target, mask, resume_revision).await?;
        let back = self.back.clone();
        Ok(Box::pin(batches.map(move |batch| {
            batch.map(|batch| WatchBatch {
                changes: batch
                    .changes
                    .into_iter()
                    .map(|c| Change {
                        change_type: c.change_type,
                        name: c
                            .name
                            .parse::<NameOf<F::To>>()
                            .map(|n| back.name(&n).to_string())
                            .unwrap_or(c.name),
                        resource: c.resource.map(|r| back.resource(r)),
                        revision: c.revision,
                    })
                    .collect(),
                is_current: batch.is_current,
                revision: batch.revision,
            })
        })))
    }

    pub async fn create(&self, request: CreateRequest<F::From>) -> Result<F::From, ServiceError> {
        let ctx = self.native.context();
        ctx.check_writable(F::From::API_VERSION)?;
        if self.native_is_storage {
            return self.native.create(request).await;
        }
        let created = self
            .other
            .create(CreateRequest {
                parent: self.forward_parent(&request.parent)?,
                id: request.id,
                resource: request.resource.map(|r| self.forward.resource(r)),
                request_id: request.request_id,
            })
            .await
            .map_err(|e| self.back_error(e, ""))?;
        Ok(self.back.resource(created))
    }

    pub async fn update(&self, request: UpdateRequest<F::From>) -> Result<F::From, ServiceError> {
        self.native.context().check_writable(F::From::API_VERSION)?;
        if self.native_is_storage {
            return self.native.update(request).await;
        }
        let Some(patch) = request.resource else {
            return Err(ServiceError::invalid(F::From::FIELD, "is required"));
        };
        let name_field = format!("{}.name", F::From::FIELD);
        let name = patch.name().to_owned();
        self.forward_name(&name_field, &name)?;
        let update_mask = self.forward_mask(request.update_mask, "update_mask")?;
        let updated = self
            .other
            .update(UpdateRequest {
                resource: Some(self.forward.resource(patch)),
                update_mask,
                expected_revision: request.expected_revision,
                allow_missing: request.allow_missing,
                request_id: request.request_id,
            })
            .await
            .map_err(|e| self.back_error(e, &name))?;
        Ok(self.back.resource(updated))
    }

    pub async fn delete(&self, request: DeleteRequest) -> Result<(), ServiceError> {
        self.native.context().check_writable(F::From::API_VERSION)?;
        if self.native_is_storage {
            return self.native.delete(request).await;
        }
        let other_name = self.forward_name("name", &request.name)?;
        self.other
            .delete(DeleteRequest {
                name: other_name,
                ..request
            })
            .await
            .map_err(|e| self.back_error(e, &request.name))
    }

    /// A name of this API's version as the other version names it.
    pub fn forward_name(&self, field: &str, name: &str) -> Result<String, ServiceError> {
        let parsed = self.native.parse_name(field, name)?;
        Ok(self.forward.name(&parsed).to_string())
    }

    fn forward_parent(&self, parent: &str) -> Result<String, ServiceError> {
        let parsed = self.native.parse_parent(parent)?;
        Ok(self.forward.parent(&parsed).to_string())
    }

    fn back_name(&self, name: &str) -> Result<String, ServiceError> {
        let parsed: NameOf<F::To> = name.parse().map_err(|e: fleetlog_events::NameError| {
            ServiceError::Internal(format!("a stored name does not parse: {e}"))
        })?;
        Ok(self.back.name(&parsed).to_string())
    }

    fn forward_mask(
        &self,
        mask: Option<prost_types::FieldMask>,
        field: &'static str,
    ) -> Result<Option<prost_types::FieldMask>, ServiceError> {
        Ok(translate_mask(&self.forward, mask, field)?)
    }

    /// Errors of the other version's engine, in this version's terms: the
    /// resource name the client sent, and its field paths.
    fn back_error(&self, err: ServiceError, name: &str) -> ServiceError {
        match err {
            ServiceError::NotFound(_) if !name.is_empty() => {
                ServiceError::NotFound(name.to_owned())
            }
            ServiceError::AlreadyExists(other) => {
                ServiceError::AlreadyExists(self.back_name(&other).unwrap_or(other))
            }
            ServiceError::InvalidArgument { field, message } => {
                let prefix = format!("{}.", F::To::FIELD);
                let field = match field.strip_prefix(&prefix) {
                    Some(path) => {
                        let mapped = self.back.paths(path);
                        format!("{}.{}", F::From::FIELD, mapped.first().map_or(path, |p| p))
                    }
                    None => field,
                };
                ServiceError::InvalidArgument { field, message }
            }
            other => other,
        }
    }
}
