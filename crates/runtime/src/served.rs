//! A producer whose events (delivery reports, errors) are served on a thread of its own that
//! sleeps until librdkafka has one for it.
//!
//! rdkafka's `ThreadedProducer` serves them by calling `poll(100 ms)` in a loop, and each of
//! those calls ends in a busy wait: rust-rdkafka hands librdkafka the time left in whole
//! milliseconds, so the last fraction of every 100 ms is polled with a zero timeout, again
//! and again ([`crate::waits`]). On an idle stack that thread was ~1 % of a core per
//! processor, nine tenths of all an idle processor did (docs/benchmarks.md).
//!
//! Here librdkafka wakes the thread itself: it writes a byte to a socket when the producer's
//! event queue stops being empty (`rd_kafka_queue_io_event_enable`, at most once until the
//! queue is next served). The thread serves the queue until it is empty, then blocks on the
//! socket again.
#![allow(unsafe_code)]

use std::{
    io::{ErrorKind, Read, Write},
    ops::Deref,
    os::{fd::AsRawFd, unix::net::UnixStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use rdkafka::{
    ClientConfig,
    error::{KafkaError, KafkaResult},
    producer::{BaseProducer, Producer, ProducerContext},
};

/// How long the thread blocks before it looks at the queue anyway: a safety net only
/// (librdkafka's byte is what wakes it), so that a wake-up lost to an error costs at most
/// this much delay.
const SAFETY_NET: Duration = Duration::from_secs(1);

/// Events served in one pass at most, before the thread looks at the stop flag again.
const MAX_PER_PASS: usize = 10_000;

/// A [`BaseProducer`] whose events a thread of its own serves as they arrive. Use it as the
/// producer (it dereferences to one); nobody else needs to poll it. Dropping it stops the
/// thread and then drops the producer (which flushes what is still queued).
pub struct ServedProducer<C: ProducerContext + 'static> {
    producer: Arc<BaseProducer<C>>,
    shared: Arc<Shared>,
    /// librdkafka writes to this end (by its raw descriptor), and so does [`Drop`].
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    stop: AtomicBool,
    /// Times the thread woke and looked at the queue (see [`ServedProducer::passes`]).
    passes: AtomicU64,
}

impl<C: ProducerContext + 'static> ServedProducer<C> {
    /// Creates the producer from `config` with `context`, and its serving thread.
    pub fn create(config: &ClientConfig, context: C) -> KafkaResult<Self> {
        let producer: BaseProducer<C> = config.create_with_context(context)?;
        Self::new(producer)
    }

    /// Serves `producer`'s events on a new thread.
    pub fn new(producer: BaseProducer<C>) -> KafkaResult<Self> {
        Self::with_safety_net(producer, SAFETY_NET)
    }

    /// As [`new`](Self::new), the thread looking at the queue unwoken after `net` (tests
    /// set it long, so that only librdkafka's wake-ups can serve the events).
    pub fn with_safety_net(producer: BaseProducer<C>, net: Duration) -> KafkaResult<Self> {
        let setup = |e: std::io::Error| KafkaError::ClientCreation(format!("event socket: {e}"));
        let (wake, listen) = UnixStream::pair().map_err(setup)?;
        // librdkafka must never block on the write (it writes under the queue's lock).
        wake.set_nonblocking(true).map_err(setup)?;
        listen.set_read_timeout(Some(net)).map_err(setup)?;
        let producer = Arc::new(producer);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            passes: AtomicU64::new(0),
        });
        let queue = MainQueue::of(&producer);
        queue.wake_on(&wake);
        let thread = std::thread::Builder::new()
            .name("producer events".to_owned())
            .spawn({
                let producer = Arc::clone(&producer);
                let shared = Arc::clone(&shared);
                move || serve(&producer, &queue, &shared, listen, net)
            })
            .map_err(setup)?;
        Ok(Self {
            producer,
            shared,
            wake,
            thread: Some(thread),
        })
    }

    /// How many times the serving thread has looked at the queue: once per wake-up (an event
    /// arrived, or [`SAFETY_NET`] passed), not once per poll.
    pub fn passes(&self) -> u64 {
        self.shared.passes.load(Ordering::Relaxed)
    }
}

impl<C: ProducerContext + 'static> Deref for ServedProducer<C> {
    type Target = BaseProducer<C>;

    fn deref(&self) -> &Self::Target {
        &self.producer
    }
}

impl<C: ProducerContext + 'static> Drop for ServedProducer<C> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the thread now rather than at its safety net; if the socket is full, a
        // wake-up is already waiting to be read.
        _ = (&self.wake).write(&[1]);
        if let Some(thread) = self.thread.take() {
            _ = thread.join();
        }
    }
}

/// The thread: serve the queue until it is empty, then sleep until librdkafka (or the
/// owner's drop) writes a byte.
fn serve<C: ProducerContext>(
    producer: &BaseProducer<C>,
    queue: &MainQueue,
    shared: &Shared,
    mut listen: UnixStream,
    net: Duration,
) {
    let mut bytes = [0_u8; 64];
    loop {
        _ = shared.passes.fetch_add(1, Ordering::Relaxed);
        let mut served = 0;
        while served < MAX_PER_PASS && !queue.is_empty() {
            // One event per call: its deadline has passed as soon as it starts.
            producer.poll(Duration::ZERO);
            served += 1;
        }
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        if served == MAX_PER_PASS {
            continue; // more are queued: no byte comes for them, so serve on
        }
        match listen.read(&mut bytes) {
            Ok(0) => break, // every writing end is closed: the owner is gone
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::warn!(%error, "Producer event socket unreadable: serving on the safety net.");
                std::thread::sleep(net.min(SAFETY_NET));
            }
        }
    }
}

/// A reference to a client's main event queue (where a producer's delivery reports and
/// errors go, and what `BaseProducer::poll` serves).
struct MainQueue(*mut rdkafka::bindings::rd_kafka_queue_t);

// SAFETY: librdkafka's queues are thread-safe; the reference is only used to ask for the
// queue's length and to set its wake-up, both under the queue's own lock.
unsafe impl Send for MainQueue {}
unsafe impl Sync for MainQueue {}

impl MainQueue {
    fn of<C: ProducerContext>(producer: &BaseProducer<C>) -> Self {
        // SAFETY: the client handle is valid while `producer` lives, and the queue reference
        // returned is our own (released in `drop`), valid as long as we hold it.
        Self(unsafe { rdkafka::bindings::rd_kafka_queue_get_main(producer.client().native_ptr()) })
    }

    /// librdkafka writes a byte to `socket` whenever the queue goes from empty to not.
    fn wake_on(&self, socket: &UnixStream) {
        let byte = [1_u8];
        // SAFETY: librdkafka copies the one-byte payload; the descriptor stays open until
        // the wake-up is turned off in `drop` (the owner closes it only after joining the
        // thread, which owns this queue reference).
        unsafe {
            rdkafka::bindings::rd_kafka_queue_io_event_enable(
                self.0,
                socket.as_raw_fd(),
                byte.as_ptr().cast(),
                byte.len(),
            );
        }
    }

    fn is_empty(&self) -> bool {
        // SAFETY: the queue reference is valid until `drop`.
        unsafe { rdkafka::bindings::rd_kafka_queue_length(self.0) == 0 }
    }
}

impl Drop for MainQueue {
    /// Turns the wake-up off before the socket can close (however the thread ends), then
    /// releases the reference.
    fn drop(&mut self) {
        // SAFETY: -1 turns the wake-up off (no payload is read); the reference taken in
        // `of` is released once.
        unsafe {
            rdkafka::bindings::rd_kafka_queue_io_event_enable(self.0, -1, std::ptr::null(), 0);
            rdkafka::bindings::rd_kafka_queue_destroy(self.0);
        }
    }
}
