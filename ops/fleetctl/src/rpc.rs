//! Calls to any method the catalog lists, with `DynamicMessage`s: the path
//! is `/{service}/{method}`, the codec decodes the method's output type.

use fleetlog_proto::codec::{DynamicCodec, method_path};
use futures::Stream;
use prost_reflect::{DynamicMessage, MethodDescriptor};
use tonic::Streaming;
use tonic::client::Grpc;

use crate::connect::AuthedChannel;

/// A client for every service behind one channel.
#[derive(Debug, Clone)]
pub struct DynamicClient {
    channel: AuthedChannel,
}

/// What a call returns: one message or a stream of them.
pub enum Reply {
    One(DynamicMessage),
    Stream(Streaming<DynamicMessage>),
}

impl DynamicClient {
    pub fn new(channel: AuthedChannel) -> Self {
        DynamicClient { channel }
    }

    async fn ready(&self) -> Result<Grpc<AuthedChannel>, tonic::Status> {
        let mut grpc = Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|err| {
            let err: tonic::codegen::StdError = err.into();
            tonic::Status::unavailable(format!(
                "the connection is not ready: {}",
                crate::error::chain(err.as_ref())
            ))
        })?;
        Ok(grpc)
    }

    /// A unary call.
    pub async fn unary(
        &self,
        method: &MethodDescriptor,
        request: DynamicMessage,
    ) -> Result<DynamicMessage, tonic::Status> {
        let mut grpc = self.ready().await?;
        let codec = DynamicCodec::new(method.output());
        let response = grpc
            .unary(tonic::Request::new(request), method_path(method)?, codec)
            .await?;
        Ok(response.into_inner())
    }

    /// A server-streaming call.
    pub async fn server_streaming(
        &self,
        method: &MethodDescriptor,
        request: DynamicMessage,
    ) -> Result<Streaming<DynamicMessage>, tonic::Status> {
        let mut grpc = self.ready().await?;
        let codec = DynamicCodec::new(method.output());
        let response = grpc
            .server_streaming(tonic::Request::new(request), method_path(method)?, codec)
            .await?;
        Ok(response.into_inner())
    }

    /// Any call, by the method's streaming shape: the requests are sent as a
    /// stream when the method takes one (else there must be exactly one).
    pub async fn call(
        &self,
        method: &MethodDescriptor,
        mut requests: Vec<DynamicMessage>,
    ) -> Result<Reply, tonic::Status> {
        if !method.is_client_streaming() {
            let Some(request) = requests.pop().filter(|_| requests.is_empty()) else {
                return Err(tonic::Status::invalid_argument(format!(
                    "{} takes exactly one request",
                    method.name()
                )));
            };
            return if method.is_server_streaming() {
                Ok(Reply::Stream(self.server_streaming(method, request).await?))
            } else {
                Ok(Reply::One(self.unary(method, request).await?))
            };
        }
        let codec = DynamicCodec::new(method.output());
        let path = method_path(method)?;
        let mut grpc = self.ready().await?;
        let stream = requests_stream(requests);
        if method.is_server_streaming() {
            let response = grpc
                .streaming(tonic::Request::new(stream), path, codec)
                .await?;
            Ok(Reply::Stream(response.into_inner()))
        } else {
            let response = grpc
                .client_streaming(tonic::Request::new(stream), path, codec)
                .await?;
            Ok(Reply::One(response.into_inner()))
        }
    }
}

fn requests_stream(
    requests: Vec<DynamicMessage>,
) -> impl Stream<Item = DynamicMessage> + Send + 'static {
    futures::stream::iter(requests)
}
