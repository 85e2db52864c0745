//! Coalescing: many concurrent deliveries ask for one small piece of database work each; one
//! task takes every request that is waiting and answers them all with one statement (or one
//! transaction). The way ingest's batcher amortises its commits, for the worker's reads and
//! writes: the busier the worker, the larger each batch, and a request alone never waits for
//! company (the task runs as soon as anything arrives).

use std::{future::Future, sync::Arc};

use tokio::sync::{mpsc, oneshot};

/// Why a coalesced request got no answer. Cloned to every request of a failed batch.
pub type BatchError = Arc<anyhow::Error>;

type Request<K, V> = (K, oneshot::Sender<Result<V, BatchError>>);

/// A handle to one coalescing task. Cheap to clone.
pub struct Coalescer<K, V> {
    tx: mpsc::Sender<Request<K, V>>,
}

impl<K, V> Clone for Coalescer<K, V> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

impl<K: Send + 'static, V: Send + 'static> Coalescer<K, V> {
    /// Start the task. `run` gets up to `max_batch` requests and must answer each, in order
    /// (`Ok` with one value per key); the task ends when every handle is dropped.
    pub fn spawn<F, Fut>(max_batch: usize, run: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<Vec<V>>> + Send,
    {
        let max_batch = max_batch.max(1);
        let (tx, mut rx) = mpsc::channel::<Request<K, V>>(max_batch * 4);
        tokio::spawn(async move {
            let mut waiting = Vec::with_capacity(max_batch);
            while rx.recv_many(&mut waiting, max_batch).await > 0 {
                let (keys, replies): (Vec<K>, Vec<_>) = waiting.drain(..).unzip();
                let expected = keys.len();
                match run(keys).await {
                    Ok(values) if values.len() == expected => {
                        for (reply, value) in replies.into_iter().zip(values) {
                            let _ = reply.send(Ok(value));
                        }
                    }
                    Ok(values) => {
                        let error = Arc::new(anyhow::anyhow!(
                            "a batch of {expected} got {} answers",
                            values.len()
                        ));
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                    Err(e) => {
                        let error = Arc::new(e);
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Queue `key` with whatever else is waiting and wait for its answer.
    pub async fn call(&self, key: K) -> Result<V, BatchError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((key, reply))
            .await
            .map_err(|_| Arc::new(anyhow::anyhow!("the batching task has stopped")))?;
        answer
            .await
            .map_err(|_| Arc::new(anyhow::anyhow!("the batching task dropped the request")))?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_requests_share_batches_and_each_gets_its_own_answer() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let doubler = Coalescer::spawn(64, move |keys: Vec<u32>| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok(keys.into_iter().map(|k| k * 2).collect())
            }
        });
        let calls = (0..200u32).map(|k| {
            let doubler = doubler.clone();
            tokio::spawn(async move { (k, doubler.call(k).await.expect("answer")) })
        });
        for call in futures::future::join_all(calls).await {
            let (k, v) = call.expect("join");
            assert_eq!(v, k * 2);
        }
        let n = batches.load(Ordering::SeqCst);
        assert!(
            (4..200).contains(&n),
            "{n} batches for 200 requests of at most 64"
        );
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_request_in_it() {
        let failing = Coalescer::spawn(8, |_keys: Vec<u32>| async {
            Err::<Vec<u32>, _>(anyhow::anyhow!("db down"))
        });
        let err = failing.call(1).await.expect_err("fails");
        assert!(err.to_string().contains("db down"));
    }
}
