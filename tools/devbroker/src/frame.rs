//! Request frames decoded and responses encoded on the connection's own task.
//!
//! Tansu's `BytesFrameLayer` hands every frame to tokio's blocking pool twice (decode,
//! encode) — two thread hand-offs per request. devbroker's frames are small and its
//! clients pipeline many of them, so the hand-offs cost more than the codec: measured at
//! half load on the whole topology, two fifths of devbroker's CPU went to waking and
//! parking threads. This layer runs the codec inline. (devbroker has no SASL, so the
//! v0 handshake's unframed tokens, which Tansu's layer also handles, never occur.)

use bytes::Bytes;
use rama::{Context, Layer, Service};
use tansu_sans_io::{Frame, Header};

/// Turns request bytes into a [`Frame`] for the routes and the answer back into bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct InlineFrameLayer;

impl<S> Layer<S> for InlineFrameLayer {
    type Service = InlineFrameService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InlineFrameService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct InlineFrameService<S> {
    inner: S,
}

impl<S, State> Service<State, Bytes> for InlineFrameService<S>
where
    S: Service<State, Frame, Response = Frame>,
    State: Clone + Send + Sync + 'static,
    S::Error: From<tansu_sans_io::Error>,
{
    type Response = Bytes;
    type Error = S::Error;

    async fn serve(&self, ctx: Context<State>, req: Bytes) -> Result<Bytes, S::Error> {
        let request = Frame::request_from_bytes(req)?;
        let api_key = request.api_key()?;
        let api_version = request.api_version()?;
        let correlation_id = request.correlation_id()?;
        let Frame { body, .. } = self.inner.serve(ctx, request).await?;
        Ok(Frame::response(
            Header::Response { correlation_id },
            body,
            api_key,
            api_version,
        )?)
    }
}
