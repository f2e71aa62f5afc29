//! The broker process: Tansu's protocol routes with devbroker's storage, fetch and EndTxn,
//! served from devbroker's own accept loop.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use rama::{
    Context, Layer as _, Service,
    layer::{MapErrLayer, MapStateLayer},
};
use tansu_broker::{
    Error as BrokerError,
    service::{auth, coordinator, storage as routes},
};
use tansu_sans_io::{
    AlterConfigsRequest, ApiKey, EndTxnRequest, EndTxnResponse, ErrorCode, FetchRequest,
};
use tansu_service::{
    FrameRequestLayer, FrameRouteBuilder, FrameRouteService, TcpBytesLayer, TcpContext,
    TcpContextLayer,
};
use tansu_storage::{BrokerRegistrationRequest, Error, Result, Storage};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::{
    admin::AlterConfigsService,
    compat::LegacyClientLayer,
    fetch::DevFetchService,
    frame::InlineFrameLayer,
    group::DevCoordinator,
    log::{Cleaning, Log},
    storage::DevStorage,
};

/// The node id devbroker registers as (a single-node cluster).
pub const NODE_ID: i32 = 111;

/// EndTxn (API key 26), which Tansu does not route: commits or aborts through
/// [`DevStorage::txn_end`], which writes the markers.
#[derive(Clone, Copy, Debug, Default)]
pub struct EndTxnService;

impl ApiKey for EndTxnService {
    const KEY: i16 = EndTxnRequest::KEY;
}

impl Service<DevStorage, EndTxnRequest> for EndTxnService {
    type Response = EndTxnResponse;
    type Error = Error;

    async fn serve(
        &self,
        ctx: Context<DevStorage>,
        req: EndTxnRequest,
    ) -> Result<Self::Response, Self::Error> {
        let code = match ctx
            .state()
            .txn_end(
                &req.transactional_id,
                req.producer_id,
                req.producer_epoch,
                req.committed,
            )
            .await
        {
            Ok(code) => code,
            Err(Error::Api(code)) => code,
            Err(error) => {
                warn!(?error, "EndTxn failed.");
                ErrorCode::UnknownServerError
            }
        };
        Ok(EndTxnResponse::default()
            .throttle_time_ms(0)
            .error_code(code.into()))
    }
}

type Routes = FrameRouteBuilder<(), BrokerError>;

/// Routes requests `Q` to one of devbroker's own services over its storage.
fn dev_route<Q, S>(
    builder: Routes,
    storage: DevStorage,
    service: S,
) -> std::result::Result<Routes, BrokerError>
where
    Q: tansu_sans_io::Request + Send + Sync + 'static,
    S: Service<DevStorage, Q, Error = Error> + Clone,
    S::Response: tansu_sans_io::Response,
    tansu_sans_io::Body: From<S::Response>,
    <Q as TryFrom<tansu_sans_io::Body>>::Error: Into<Error>,
{
    builder
        .with_route(
            Q::KEY,
            (
                MapErrLayer::new(BrokerError::from as fn(Error) -> BrokerError),
                MapStateLayer::new(move |_| storage),
                FrameRequestLayer::<Q>::new(),
            )
                .into_layer(service)
                .boxed(),
        )
        .map_err(Into::into)
}

/// Every route devbroker answers: Tansu's storage, group and SASL routes, with Fetch
/// replaced and EndTxn added.
pub fn routes(
    storage: DevStorage,
) -> std::result::Result<FrameRouteService<(), BrokerError>, BrokerError> {
    type Route = fn(Routes, DevStorage) -> std::result::Result<Routes, BrokerError>;
    let storage_routes: [Route; 25] = [
        routes::add_offsets_to_txn,
        routes::add_partitions_to_txn,
        routes::alter_user_scram_credentials,
        routes::consumer_group_describe,
        routes::create_acls,
        routes::create_topics,
        routes::delete_groups,
        routes::delete_records,
        routes::delete_topics,
        routes::describe_acls,
        routes::describe_cluster,
        routes::describe_configs,
        routes::describe_groups,
        routes::describe_topic_partitions,
        routes::describe_user_scram_credentials,
        routes::find_coordinator,
        routes::get_telemetry_subscriptions,
        routes::incremental_alter_configs,
        routes::init_producer_id,
        routes::list_groups,
        routes::list_offsets,
        routes::list_partition_reassignments,
        routes::metadata,
        routes::produce,
        routes::txn_offset_commit_request,
    ];
    let builder = storage_routes.iter().try_fold(
        FrameRouteService::<(), BrokerError>::builder(),
        |b, route| route(b, storage.clone()),
    )?;
    let builder = coordinator::services(builder, DevCoordinator::new(storage.clone())?)?;
    let builder = auth::services(builder)?;
    let builder = dev_route::<FetchRequest, _>(builder, storage.clone(), DevFetchService)?;
    let builder =
        dev_route::<AlterConfigsRequest, _>(builder, storage.clone(), AlterConfigsService)?;
    let builder = dev_route::<EndTxnRequest, _>(builder, storage, EndTxnService)?;
    builder.build().map_err(Into::into)
}

/// How often the server checks that Tansu's storage engine still answers.
const WATCHDOG_EVERY: Duration = Duration::from_secs(1);
/// Failed checks in a row after which the broker gives up serving and exits.
const WATCHDOG_FAILURES: u32 = 3;

/// A bound, registered broker ready to serve.
pub struct Server {
    listener: TcpListener,
    storage: DevStorage,
    cluster_id: String,
    clean_every: Duration,
}

impl Server {
    /// Registers the broker with its storage, ready to serve `listener`.
    pub async fn new(
        listener: TcpListener,
        storage: DevStorage,
        cluster_id: &str,
    ) -> anyhow::Result<Self> {
        storage
            .register_broker(BrokerRegistrationRequest {
                broker_id: NODE_ID,
                cluster_id: cluster_id.to_owned(),
                incarnation_id: Uuid::new_v4(),
                rack: None,
            })
            .await?;
        Ok(Self {
            listener,
            storage,
            cluster_id: cluster_id.to_owned(),
            clean_every: Duration::from_secs(1),
        })
    }

    /// Sets how often the log cleaner runs (every second by default).
    #[must_use]
    pub fn cleaning_every(self, every: Duration) -> Self {
        Self {
            clean_every: every,
            ..self
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves connections until `shutdown` is cancelled; aborts expired transactions
    /// meanwhile. Returns an error when the storage engine stops answering (a broker that
    /// cannot serve exits instead of answering every request with an error).
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let route = routes(self.storage.clone())?;
        let service = (
            TcpContextLayer::new(TcpContext::default().cluster_id(Some(self.cluster_id.clone()))),
            TcpBytesLayer::<()>::default(),
            LegacyClientLayer,
            InlineFrameLayer,
        )
            .into_layer(route);

        let cleaner = tokio::spawn(clean_periodically(
            self.storage.shared_log(),
            self.clean_every,
            shutdown.clone(),
        ));
        let mut reaper = tokio::time::interval(Duration::from_millis(250));
        let mut watchdog = tokio::time::interval(WATCHDOG_EVERY);
        let mut failed_pings = 0;
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            warn!(%error, "Accept failed.");
                            continue;
                        }
                    };
                    stream.set_nodelay(true)?;
                    let service = service.clone();
                    _ = connections.spawn(async move {
                        match service.serve(Context::default(), stream).await {
                            Err(BrokerError::Io(ref io)) if matches!(
                                io.kind(),
                                std::io::ErrorKind::UnexpectedEof
                                    | std::io::ErrorKind::BrokenPipe
                                    | std::io::ErrorKind::ConnectionReset
                            ) => debug!(%peer, "Connection closed."),
                            Err(error) => info!(%peer, ?error, "Connection ended on an error."),
                            Ok(()) => debug!(%peer, "Connection done."),
                        }
                    });
                }
                _ = reaper.tick() => self.storage.abort_expired().await,
                _ = watchdog.tick() => match self.storage.ping().await {
                    Ok(()) => failed_pings = 0,
                    Err(error) => {
                        failed_pings += 1;
                        warn!(?error, failed_pings, "The storage engine does not answer.");
                        if failed_pings >= WATCHDOG_FAILURES {
                            connections.abort_all();
                            anyhow::bail!(
                                "the storage engine stopped answering ({error:?}): exiting so \
                                 that a supervisor restarts the broker on its data directory"
                            );
                        }
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                () = shutdown.cancelled() => break,
            }
        }
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        cleaner.abort();
        Ok(())
    }
}

/// Runs the log cleaner every `every` on a blocking thread (it reads and writes segment
/// files), one pass at a time, until `shutdown`.
async fn clean_periodically(log: Arc<Log>, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => break,
        }
        let log = log.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        match tokio::task::spawn_blocking(move || log.clean(now)).await {
            Ok(done) if done != Cleaning::default() => info!(
                expired_segments = done.expired_segments,
                compacted_segments = done.compacted_segments,
                records_before = done.records_before,
                records_after = done.records_after,
                bytes_before = done.bytes_before,
                bytes_after = done.bytes_after,
                "Log cleaned."
            ),
            Ok(_) => {}
            Err(error) => warn!(%error, "The log cleaner stopped on a panic."),
        }
    }
}
