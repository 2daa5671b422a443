//! `standard_service!`: implements a tonic service trait's standard methods
//! by delegating to [`super::Engine`]. A resource module invokes it once with
//! its message and method names; custom actions follow as ordinary items.

/// See the module docs. Every identifier is spelled out so the generated
/// code reads like the proto service it implements.
#[macro_export]
macro_rules! standard_service {
    // A watch batch as a `Watch…Response`; both watch methods share it.
    (@response $response:ident, $change:ident, $field:ident) => {
        |batch: $crate::engine::watch::WatchBatch<_>| $response {
            changes: batch
                .changes
                .into_iter()
                .map(|c| $change {
                    r#type: c.change_type as i32,
                    name: c.name,
                    $field: c.resource,
                    revision: c.revision,
                })
                .collect(),
            is_current: batch.is_current,
            revision: batch.revision,
        }
    };
    (
        impl $service_trait:ident for $api:ty {
            resource: $resource:ty,
            field: $field:ident,
            plural: $plural:ident,
            id_field: $id_field:ident,
            change: $change:ident,
            get: $get:ident($get_req:ty),
            batch_get: $batch_get:ident($batch_get_req:ty) -> $batch_get_resp:ident,
            list: $list:ident($list_req:ty) -> $list_resp:ident,
            watch_one: $watch_one:ident($watch_one_req:ty) -> $watch_one_resp:ident, stream $watch_one_stream:ident,
            watch: $watch:ident($watch_req:ty) -> $watch_resp:ident, stream $watch_stream:ident,
            create: $create:ident($create_req:ty),
            update: $update:ident($update_req:ty),
            delete: $delete:ident($delete_req:ty),
        }
        $($custom:item)*
    ) => {
        #[tonic::async_trait]
        impl $service_trait for $api {
            async fn $get(
                &self,
                request: tonic::Request<$get_req>,
            ) -> Result<tonic::Response<$resource>, tonic::Status> {
                let ctx = self.engine.context();
                let caller = ctx.caller(&request)?;
                let r = request.into_inner();
                ctx.authorize_read_one::<$resource, _, _>(&caller, "name", &r.name, || {
                    self.engine.get(&r.name, None, 0)
                })
                .await?;
                let found = self.engine.get(&r.name, r.field_mask, r.min_revision).await?;
                Ok(tonic::Response::new(found))
            }

            async fn $batch_get(
                &self,
                request: tonic::Request<$batch_get_req>,
            ) -> Result<tonic::Response<$batch_get_resp>, tonic::Status> {
                let ctx = self.engine.context();
                let caller = ctx.caller(&request)?;
                let r = request.into_inner();
                ctx.authorize_names::<$resource>(&caller, &r.names)?;
                let (found, missing) =
                    self.engine.batch_get(&r.names, r.field_mask, r.min_revision).await?;
                Ok(tonic::Response::new($batch_get_resp { $plural: found, missing }))
            }

            async fn $list(
                &self,
                request: tonic::Request<$list_req>,
            ) -> Result<tonic::Response<$list_resp>, tonic::Status> {
                let ctx = self.engine.context();
                let caller = ctx.caller(&request)?;
                let r = request.into_inner();
                ctx.authorize_parent::<$resource>(&caller, $crate::engine::access::access_of($crate::engine::access::Standard::List), &r.parent)?;
                let page = self
                    .engine
                    .list($crate::engine::ListRequest {
                        parent: r.parent,
                        page_size: r.page_size,
                        page_token: r.page_token,
                        filter: r.filter,
                        order_by: r.order_by,
                        field_mask: r.field_mask,
                        min_revision: r.min_revision,
                    })
                    .await?;
                Ok(tonic::Response::new($list_resp {
                    $plural: page.items,
                    next_page_token: page.next_page_token,
                    revision: page.revision,
                }))
            }

            type $watch_one_stream = std::pin::Pin<Box<
                dyn futures::Stream<Item = Result<$watch_one_resp, tonic::Status>> + Send + 'static,
            >>;

            async fn $watch_one(
                &self,
                request: tonic::Request<$watch_one_req>,
            ) -> Result<tonic::Response<Self::$watch_one_stream>, tonic::Status> {
                let ctx = self.engine.context();
                let caller = ctx.caller(&request)?;
                let r = request.into_inner();
                ctx.authorize_read_one::<$resource, _, _>(&caller, "name", &r.name, || {
                    self.engine.get(&r.name, None, 0)
                })
                .await?;
                let batches = self
                    .engine
                    .watch($crate::engine::watch::WatchTarget::One(r.name), r.field_mask, r.resume_revision)
                    .await?;
                Ok(tonic::Response::new($crate::engine::watch::response_stream(
                    batches,
                    $crate::standard_service!(@response $watch_one_resp, $change, $field),
                )))
            }

            type $watch_stream = std::pin::Pin<Box<
                dyn futures::Stream<Item = Result<$watch_resp, tonic::Status>> + Send + 'static,
            >>;

            async fn $watch(
                &self,
                request: tonic::Request<$watch_req>,
            ) -> Result<tonic::Response<Self::$watch_stream>, tonic::Status> {
                let ctx = self.engine.context();
                let caller = ctx.caller(&request)?;
                let r = request.into_inner();
                ctx.authorize_parent::<$resource>(&caller, $crate::engine::access::access_of($crate::engine::access::Standard::WatchMany), &r.parent)?;
                let batches = self
                    .engine
                    .watch(
                        $crate::engine::watch::WatchTarget::Collection { parent: r.parent, filter: r.filter },
                        r.field_mask,
                        r.resume_revision,
                    )
                    .await?;
                Ok(tonic::Response::new($crate::engine::watch::response_stream(
                    batches,
                    $crate::standard_service!(@response $watch_resp, $change, $field),
                )))
            }

            async fn $create(
                &self,
                request: tonic::Request<$create_req>,
            ) -> Result<tonic::Response<$resource>, tonic::Status> {
                let ctx = self.engine.context();
                let caller = ctx.caller(&request)?;
                let r = request.into_inner();
                ctx.authorize_parent::<$resource>(&caller, $crate::engine::access::access_of($crate::engine::access::Standard::Create), &r.parent)?;
                let created = self.engine.create($crate::engine::CreateRequest {
                        parent: r.parent,
                        id: r.$id_field,
                        resource: r.$field,
                        request_id: r.request_id,
                    })
                    .await?;
                Ok(tonic::Response::new(created))
            }

            async fn $update(
                &self,
                request: tonic::Request<$update_req>,
            ) -> Result<tonic::Response<$resource>, tonic::Status> {
                let ctx = self.engine.context();
                let caller = ctx.caller(&request)?;
                let r = request.into_inner();
                let name = r.$field.as_ref().map(|resource| ::fleetlog_model::Resource::name(resource).to_owned()).unwrap_or_default();
                ctx.authorize_name::<$resource>(
                    &caller,
                    $crate::engine::access::access_of($crate::engine::access::Standard::Update),
                    concat!(stringify!($field), ".name"),
                    &name,
                )?;
                let updated = self.engine.update($crate::engine::UpdateRequest {
                        resource: r.$field,
                        update_mask: r.update_mask,
                        expected_revision: r.expected_revision,
                        allow_missing: r.allow_missing,
                        request_id: r.request_id,
                    })
                    .await?;
                Ok(tonic::Response::new(updated))
            }

            async fn $delete(
                &self,
                request: tonic::Request<$delete_req>,
            ) -> Result<tonic::Response<()>, tonic::Status> {
                let ctx = self.engine.context();
                let caller = ctx.caller(&request)?;
                let r = request.into_inner();
                ctx.authorize_name::<$resource>(&caller, $crate::engine::access::access_of($crate::engine::access::Standard::Delete), "name", &r.name)?;
                self.engine.delete($crate::engine::DeleteRequest {
                        name: r.name,
                        expected_revision: r.expected_revision,
                        allow_missing: r.allow_missing,
                        request_id: r.request_id,
                    })
                    .await?;
                Ok(tonic::Response::new(()))
            }

            $($custom)*
        }
    };
}
