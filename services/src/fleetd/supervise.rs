//! The tasks fleetd cannot run without (its gRPC and HTTP servers, its
//! projectors): fleetd runs until shutdown is asked for or until one of
//! them ends by itself, which stops fleetd with an error naming it, as
//! mini-redis' `run` selects on its server's result. A server that ends
//! without an error before shutdown is a failure too: fleetd would be up
//! with a port that answers nothing.

use std::time::Duration;

use futures::future::{FutureExt, select_all};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A task fleetd needs, by the name errors give it.
pub struct Essential {
    name: &'static str,
    ends: Ends,
}

enum Ends {
    /// A spawned task; None once it has been seen to end.
    Task(Option<JoinHandle<anyhow::Result<()>>>),
    /// A signal that fires on failure (the projectors' shared one; the
    /// failure is logged where it happened).
    Signal(CancellationToken),
}

impl Essential {
    pub fn task(name: &'static str, task: JoinHandle<anyhow::Result<()>>) -> Self {
        Essential {
            name,
            ends: Ends::Task(Some(task)),
        }
    }

    pub fn failure_signal(name: &'static str, failed: CancellationToken) -> Self {
        Essential {
            name,
            ends: Ends::Signal(failed),
        }
    }

    /// Waits, at most `limit`, for a task that has not ended yet (after
    /// shutdown: the server draining its connections). False on timeout.
    pub async fn drain(&mut self, limit: Duration) -> bool {
        match &mut self.ends {
            Ends::Task(Some(task)) => tokio::time::timeout(limit, task).await.is_ok(),
            _ => true,
        }
    }
}

/// Waits for `shutdown`, or for the first essential task to end; then
/// cancels `shutdown` (so the rest stops in order) and returns the error
/// naming the task.
pub async fn until_shutdown(
    shutdown: &CancellationToken,
    essentials: &mut [Essential],
) -> anyhow::Result<()> {
    let (result, index) = {
        let waiting: Vec<_> = essentials
            .iter_mut()
            .map(|essential| {
                async move {
                    match &mut essential.ends {
                        Ends::Task(Some(task)) => match task.await {
                            Ok(result) => result,
                            Err(join) => Err(anyhow::anyhow!("it panicked or was aborted: {join}")),
                        },
                        Ends::Task(None) => std::future::pending().await,
                        Ends::Signal(failed) => {
                            failed.cancelled().await;
                            Err(anyhow::anyhow!("it failed (see the error logged before)"))
                        }
                    }
                }
                .boxed()
            })
            .collect();
        if waiting.is_empty() {
            shutdown.cancelled().await;
            return Ok(());
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            (result, index, _) = select_all(waiting) => (result, index),
        }
    };
    let essential = &mut essentials[index];
    if let Ends::Task(task) = &mut essential.ends {
        // It has ended: nothing to drain, and a JoinHandle is not polled twice.
        task.take();
    }
    if shutdown.is_cancelled() {
        // It ended because shutdown began meanwhile (servers stop on it).
        return Ok(());
    }
    let name = essential.name;
    let error = match result {
        Ok(()) => anyhow::anyhow!("the {name} stopped by itself"),
        Err(err) => err.context(format!("the {name} stopped")),
    };
    tracing::error!(error = %format!("{error:#}"), "shutting down: an essential task ended");
    shutdown.cancel();
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forever() -> JoinHandle<anyhow::Result<()>> {
        tokio::spawn(async {
            std::future::pending::<()>().await;
            Ok(())
        })
    }

    #[tokio::test]
    async fn a_failed_server_stops_fleetd_with_its_error() {
        let shutdown = CancellationToken::new();
        let http = tokio::spawn(async { Err(anyhow::anyhow!("address in use")) });
        let mut essentials = vec![
            Essential::task("gRPC server", forever()),
            Essential::task("HTTP server", http),
        ];
        let outcome = until_shutdown(&shutdown, &mut essentials).await;
        let message = format!("{:#}", outcome.expect_err("stopped"));
        assert_eq!(message, "the HTTP server stopped: address in use");
        assert!(
            shutdown.is_cancelled(),
            "the rest of fleetd is told to stop"
        );
        assert!(
            essentials[1].drain(Duration::from_millis(1)).await,
            "already ended"
        );
        assert!(
            !essentials[0].drain(Duration::from_millis(1)).await,
            "still serving"
        );
    }

    #[tokio::test]
    async fn a_server_that_ends_quietly_or_panics_is_a_failure_too() {
        let quiet = tokio::spawn(async { Ok(()) });
        let outcome = until_shutdown(
            &CancellationToken::new(),
            &mut [Essential::task("gRPC server", quiet)],
        )
        .await;
        assert_eq!(
            format!("{:#}", outcome.expect_err("stopped")),
            "the gRPC server stopped by itself"
        );
        let panics = tokio::spawn(async { panic!("boom") });
        let outcome = until_shutdown(
            &CancellationToken::new(),
            &mut [Essential::task("HTTP server", panics)],
        )
        .await;
        assert!(
            format!("{:#}", outcome.expect_err("stopped")).contains("panicked"),
            "a panic is seen"
        );
    }

    #[tokio::test]
    async fn a_failed_projector_stops_fleetd() {
        let failed = CancellationToken::new();
        failed.cancel();
        let outcome = until_shutdown(
            &CancellationToken::new(),
            &mut [
                Essential::task("gRPC server", forever()),
                Essential::failure_signal("projector", failed),
            ],
        )
        .await;
        assert!(outcome.is_err());
    }

    #[tokio::test]
    async fn a_server_ending_because_of_shutdown_is_no_failure() {
        let shutdown = CancellationToken::new();
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                Ok(())
            }
        });
        shutdown.cancel();
        // Let the server see it first.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let outcome =
            until_shutdown(&shutdown, &mut [Essential::task("gRPC server", server)]).await;
        assert!(outcome.is_ok(), "{outcome:?}");
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait_without_an_error() {
        let shutdown = CancellationToken::new();
        let waiting = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                until_shutdown(&shutdown, &mut [Essential::task("gRPC server", forever())]).await
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        shutdown.cancel();
        assert!(waiting.await.expect("joined").is_ok());
    }
}
