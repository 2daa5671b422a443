//! Live watch feeds: one JetStream consumer per watched subject filter,
//! shared by every watch call on it.
//!
//! A consumer per watch call does not scale: each one costs nats-server a
//! delivery and fleetd a decode per event, and nats-server 2.15 allows 1,000
//! consumers per stream by default. A watch call now uses a consumer of its
//! own only to catch up (the initial snapshot, or the changes after its
//! resume revision), then follows the shared feed from where its catch-up
//! ended.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use fleetlog_events::log::StartAt;
use fleetlog_events::{EventLog, Revision, StoredEvent};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::error::ServiceError;

/// Events a watcher may fall behind its feed before it is cut off (it then
/// resumes from its last revision).
const FEED_CAPACITY: usize = 4096;
/// Catch-up consumers open at once: a thundering herd of new watch calls
/// must not run into the server's consumer limit.
const CONCURRENT_CATCH_UPS: usize = 128;

/// The live feeds of one service's log.
pub struct WatchFeeds {
    log: EventLog,
    feeds: tokio::sync::Mutex<HashMap<String, Weak<Feed>>>,
    catch_ups: Arc<Semaphore>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// One subject filter's live events. Dropping the last handle stops its
/// consumer.
pub struct Feed {
    template: broadcast::Receiver<Arc<FeedEvent>>,
    /// The revision of the last event sent; held while sending, so a new
    /// subscriber knows exactly where its stream of events starts.
    last_sent: Arc<Mutex<Revision>>,
    ended: Arc<AtomicBool>,
    _stop: DropGuard,
}

/// An event as a feed hands it to every watcher, with the resource it
/// carries decoded by the first watcher that needs it and cloned by the
/// rest (decoding per watcher was a sixth of fleetd's CPU with 1,000).
pub struct FeedEvent {
    pub event: StoredEvent,
    decoded: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl FeedEvent {
    fn new(event: StoredEvent) -> Self {
        FeedEvent {
            event,
            decoded: OnceLock::new(),
        }
    }

    /// The carried resource as `T`, decoded at most once per type.
    pub fn decoded<T: Clone + Send + Sync + 'static, E>(
        &self,
        decode: impl FnOnce(&StoredEvent) -> Result<T, E>,
    ) -> Result<T, E> {
        if let Some(cached) = self.decoded.get().and_then(|d| d.downcast_ref::<T>()) {
            return Ok(cached.clone());
        }
        let value = decode(&self.event)?;
        let _ = self.decoded.set(Box::new(value.clone()));
        Ok(value)
    }
}

/// A subscription to a feed: every event matching the filter after `after`.
pub struct Live {
    pub events: broadcast::Receiver<Arc<FeedEvent>>,
    pub after: Revision,
    /// Keeps the feed running.
    _feed: Arc<Feed>,
}

impl WatchFeeds {
    pub fn new(log: EventLog, tasks: TaskTracker, shutdown: CancellationToken) -> Self {
        WatchFeeds {
            log,
            feeds: Default::default(),
            catch_ups: Arc::new(Semaphore::new(CONCURRENT_CATCH_UPS)),
            tasks,
            shutdown,
        }
    }

    /// Subscribes to the live events of `filter_subject`, starting the feed
    /// if none runs.
    pub async fn subscribe(&self, filter_subject: &str) -> Result<Live, ServiceError> {
        let feed = {
            let mut feeds = self.feeds.lock().await;
            match feeds.get(filter_subject).and_then(Weak::upgrade) {
                Some(feed) if !feed.ended.load(Ordering::Acquire) => feed,
                _ => {
                    let feed = self.start(filter_subject).await?;
                    feeds.retain(|_, feed| feed.strong_count() > 0);
                    feeds.insert(filter_subject.to_owned(), Arc::downgrade(&feed));
                    feed
                }
            }
        };
        let last_sent = lock(&feed.last_sent);
        Ok(Live {
            events: feed.template.resubscribe(),
            after: *last_sent,
            _feed: feed.clone(),
        })
    }

    /// Waits for a turn to open a catch-up consumer.
    pub async fn catch_up_turn(&self) -> Result<OwnedSemaphorePermit, ServiceError> {
        self.catch_ups
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ServiceError::Unavailable("the server is shutting down".into()))
    }

    async fn start(&self, filter_subject: &str) -> Result<Arc<Feed>, ServiceError> {
        let from = self.log.last_revision().await?;
        let name = format!("feed-{}", uuid::Uuid::new_v4().simple());
        let subscription = self
            .log
            .watch(filter_subject.to_owned(), StartAt::After(from), name)
            .await?;
        let (sender, template) = broadcast::channel(FEED_CAPACITY);
        let last_sent = Arc::new(Mutex::new(from));
        let ended = Arc::new(AtomicBool::new(false));
        let stop = self.shutdown.child_token();
        let feed = Arc::new(Feed {
            template,
            last_sent: last_sent.clone(),
            ended: ended.clone(),
            _stop: stop.clone().drop_guard(),
        });
        let log = self.log.clone();
        let filter = filter_subject.to_owned();
        self.tasks.spawn(async move {
            let mut events = subscription.events;
            loop {
                let delivered = tokio::select! {
                    _ = stop.cancelled() => break,
                    delivered = events.next() => delivered,
                };
                match delivered {
                    Some(Ok(delivered)) => {
                        let mut last = lock(&last_sent);
                        *last = delivered.event.revision;
                        // No subscriber right now is fine: the feed lives
                        // as long as a watch call holds it.
                        let _ = sender.send(Arc::new(FeedEvent::new(delivered.event)));
                    }
                    Some(Err(err)) => {
                        tracing::warn!(%filter, error = %err, "watch feed lost its consumer");
                        break;
                    }
                    None => break,
                }
            }
            // Subscribers see the channel close and end their calls with
            // UNAVAILABLE; the next watch call starts a new feed.
            ended.store(true, Ordering::Release);
            drop(sender);
            log.delete_consumer(&subscription.consumer_name).await;
        });
        Ok(feed)
    }
}

/// The revision is only ever replaced whole, so a panic elsewhere cannot
/// leave it half-written: poisoning is ignored.
fn lock(revision: &Mutex<Revision>) -> MutexGuard<'_, Revision> {
    revision
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
