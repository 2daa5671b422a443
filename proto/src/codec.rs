//! The gRPC codec of every Fleetlog service: prost's, except that a message
//! that does not decode is the sender's mistake — INVALID_ARGUMENT naming
//! the message type, where tonic-prost says INTERNAL.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

#[derive(Debug, Clone)]
pub struct FleetlogCodec<T, U> {
    prost: ProstCodec<T, U>,
}

impl<T, U> Default for FleetlogCodec<T, U> {
    fn default() -> Self {
        FleetlogCodec {
            prost: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for FleetlogCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder {
            _message: PhantomData,
        }
    }
}

/// Decodes `U`; malformed bytes are INVALID_ARGUMENT.
#[derive(Debug)]
pub struct StrictDecoder<U> {
    _message: PhantomData<U>,
}

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            Status::invalid_argument(format!(
                "the message is not a valid {}: {e}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("message")
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// A codec for messages known only by their descriptors: what the REST
/// gateway and fleetctl use to call any method the catalog lists.
#[derive(Debug, Clone)]
pub struct DynamicCodec {
    response: prost_reflect::MessageDescriptor,
}

impl DynamicCodec {
    /// A codec whose responses are `response` messages.
    pub fn new(response: prost_reflect::MessageDescriptor) -> Self {
        DynamicCodec { response }
    }
}

/// The HTTP/2 path a gRPC call to `method` goes to: `/{service}/{method}`.
pub fn method_path(
    method: &prost_reflect::MethodDescriptor,
) -> Result<tonic::codegen::http::uri::PathAndQuery, Status> {
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    tonic::codegen::http::uri::PathAndQuery::try_from(path.as_str())
        .map_err(|err| Status::internal(format!("method path {path}: {err}")))
}

impl Codec for DynamicCodec {
    type Encode = prost_reflect::DynamicMessage;
    type Decode = prost_reflect::DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder {
            message: self.response.clone(),
        }
    }
}

#[derive(Debug)]
pub struct DynamicEncoder;

impl tonic::codec::Encoder for DynamicEncoder {
    type Item = prost_reflect::DynamicMessage;
    type Error = Status;

    fn encode(
        &mut self,
        item: Self::Item,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        use prost_reflect::ReflectMessage;
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding {}: {e}", item.descriptor().name())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[derive(Debug)]
pub struct DynamicDecoder {
    message: prost_reflect::MessageDescriptor,
}

impl Decoder for DynamicDecoder {
    type Item = prost_reflect::DynamicMessage;
    type Error = Status;

    fn decode(
        &mut self,
        buf: &mut DecodeBuf<'_>,
    ) -> Result<Option<prost_reflect::DynamicMessage>, Status> {
        prost_reflect::DynamicMessage::decode(self.message.clone(), buf)
            .map(Some)
            .map_err(|e| {
                Status::internal(format!(
                    "the answer is not a valid {}: {e}",
                    self.message.name()
                ))
            })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
