//! Connections: a re-dialling multiplexed (or cluster) connection, dial functions, and how a
//! Redis error is classified (drop the connection, or keep it).

use super::*;

/// A connection to one node or to a cluster.
#[derive(Clone)]
pub(super) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Aborts a connection's driver task when the last user of the connection is gone.
pub(super) struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a dialer produces: a ready connection, and the task driving it if the dialer spawned one.
pub struct Dialed {
    pub(super) conn: Conn,
    pub(super) driver: Option<AbortOnDrop>,
}

impl Dialed {
    /// A multiplexed connection whose driver, if any, is managed elsewhere (as `redis::Client`
    /// does for the connections it makes).
    pub fn multiplexed(conn: MultiplexedConnection) -> Self {
        Self {
            conn: Conn::Single(conn),
            driver: None,
        }
    }

    /// A cluster connection (it manages its own tasks).
    pub fn cluster(conn: ClusterConnection) -> Self {
        Self {
            conn: Conn::Cluster(conn),
            driver: None,
        }
    }

    /// Spawn `driver` on the current tokio runtime; it is aborted when the connection is
    /// dropped (re-dialled or the adapter dropped). Must be called within a tokio runtime.
    pub fn with_driver(mut self, driver: impl Future<Output = ()> + Send + 'static) -> Self {
        let handle = tokio::spawn(driver);
        self.driver = Some(AbortOnDrop(handle.abort_handle()));
        self
    }
}

/// Handshake over any stream (a turmoil `TcpStream` in the simulator) and spawn the connection's
/// driver: the building block of a simulation dialer.
pub async fn dial_stream<S>(info: &RedisConnectionInfo, stream: S) -> RedisResult<Dialed>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Timeouts are the adapter's (it wraps every call), not the connection's.
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(None)
        .set_response_timeout(None);
    let (conn, driver) = MultiplexedConnection::new_with_config(info, stream, config).await?;
    Ok(Dialed::multiplexed(conn).with_driver(driver))
}

pub type DialFuture = Pin<Box<dyn Future<Output = RedisResult<Dialed>> + Send>>;

/// Makes a new connection. Implemented for every `Fn() -> impl Future<Output = RedisResult<Dialed>>`.
pub trait Dial: Send + Sync + 'static {
    fn dial(&self) -> DialFuture;
}

impl<F, Fut> Dial for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = RedisResult<Dialed>> + Send + 'static,
{
    fn dial(&self) -> DialFuture {
        Box::pin(self())
    }
}

/// The connection in use, shared by every in-flight command. Its driver stops when the last
/// clone is dropped, so commands still in flight on a replaced connection finish or fail on their own.
#[derive(Clone)]
pub(super) struct Live {
    pub(super) id: u64,
    pub(super) conn: Conn,
    pub(super) _driver: Option<Arc<AbortOnDrop>>,
}

#[derive(Default)]
pub(super) struct Slot {
    pub(super) live: Option<Live>,
    pub(super) last_failure: Option<StorageError>,
}

/// A connection that is dialled on first use and again after it failed.
pub(super) struct Redial {
    pub(super) dialer: Box<dyn Dial>,
    pub(super) connect_timeout_ms: u64,
    /// Dial attempts so far; a caller that waited for someone else's failed dial reports that
    /// failure instead of dialling again straight away (an outage costs one connect timeout per
    /// burst of calls, not one per call).
    pub(super) attempts: AtomicU64,
    pub(super) slot: tokio::sync::Mutex<Slot>,
}

impl Redial {
    pub(super) fn new(dialer: Box<dyn Dial>, connect_timeout_ms: u64) -> Self {
        Self {
            dialer,
            connect_timeout_ms,
            attempts: AtomicU64::new(0),
            slot: tokio::sync::Mutex::new(Slot::default()),
        }
    }

    pub(super) async fn live(&self, label: &str) -> StorageResult<Live> {
        let seen = self.attempts.load(Ordering::Acquire);
        let mut slot = self.slot.lock().await;
        if let Some(live) = &slot.live {
            return Ok(live.clone());
        }
        if self.attempts.load(Ordering::Acquire) != seen
            && let Some(e) = &slot.last_failure
        {
            return Err(e.clone());
        }
        let id = self.attempts.fetch_add(1, Ordering::AcqRel) + 1;
        let limit = Duration::from_millis(self.connect_timeout_ms);
        let outcome = match tokio::time::timeout(limit, self.dialer.dial()).await {
            Ok(Ok(dialed)) => Ok(Live {
                id,
                conn: dialed.conn,
                _driver: dialed.driver.map(Arc::new),
            }),
            Ok(Err(e)) => Err(StorageError::Unavailable(format!(
                "redis {label}: cannot connect: {e}"
            ))),
            Err(_) => Err(StorageError::Unavailable(format!(
                "redis {label}: no connection within {} ms",
                self.connect_timeout_ms
            ))),
        };
        match outcome {
            Ok(live) => {
                slot.last_failure = None;
                slot.live = Some(live.clone());
                Ok(live)
            }
            Err(e) => {
                slot.last_failure = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Drop connection `id` (if it is still the current one) so the next call dials afresh.
    pub(super) async fn invalidate(&self, id: u64) {
        let mut slot = self.slot.lock().await;
        if slot.live.as_ref().is_some_and(|l| l.id == id) {
            slot.live = None;
        }
    }
}

/// How a Redis error counts: an outage that spoils the connection, an outage that does not, or a
/// problem with the data at hand.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fault {
    Broken,
    Outage,
    Data,
}

pub(super) fn classify(e: &RedisError) -> Fault {
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
    {
        return Fault::Broken;
    }
    match e.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => Fault::Data,
        ErrorKind::Server(ServerErrorKind::ResponseError) => {
            let text = e.to_string();
            if text.contains("not an integer") || text.contains("overflow") {
                Fault::Data
            } else {
                Fault::Outage
            }
        }
        ErrorKind::ClusterConnectionNotFound => Fault::Broken,
        _ => Fault::Outage,
    }
}
