//! Steady load for the fault tests: a few workers sending requests back to back through one
//! client while the test breaks something underneath, every answer kept (status, reason code,
//! request id) so the test can hold the trail and the upstream to account afterwards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use crate::support::{TestBody, TestClient};

/// What one request got back.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    /// The JSON body's `error`, for the proxy's own refusals.
    pub reason: Option<String>,
    pub id: Option<String>,
}

impl Answer {
    pub fn is(&self, status: u16, reason: &str) -> bool {
        self.status == status && self.reason.as_deref() == Some(reason)
    }
}

/// Workers sending until [`Load::stop`].
pub struct Load {
    answers: Arc<Mutex<Vec<Answer>>>,
    /// Requests that got no answer at all (the connection failed or was closed under them).
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

/// An error with every cause under it: hyper's top line (`client error (SendRequest)`) alone
/// does not say whether the connection was refused, reset or closed before the answer.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c} [{c:?}]"));
        cause = c.source();
    }
    text
}

impl Load {
    pub fn start(
        client: &TestClient,
        workers: usize,
        request: impl Fn() -> http::Request<TestBody> + Send + Sync + 'static,
    ) -> Load {
        let request = Arc::new(request);
        let answers = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|_| {
                let (client, request) = (client.clone(), request.clone());
                let (answers, failures, stop) = (answers.clone(), failures.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let sent = tokio::time::timeout(Duration::from_secs(10), async {
                            let resp = client.request(request()).await?;
                            let (parts, body) = resp.into_parts();
                            let body = body.collect().await?.to_bytes();
                            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((parts, body))
                        })
                        .await;
                        match sent {
                            Ok(Ok((parts, body))) => {
                                let reason = serde_json::from_slice::<serde_json::Value>(&body)
                                    .ok()
                                    .and_then(|v| v["error"].as_str().map(str::to_string));
                                let id = parts
                                    .headers
                                    .get("x-request-id")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string);
                                answers.lock().unwrap().push(Answer {
                                    status: parts.status.as_u16(),
                                    reason,
                                    id,
                                });
                            }
                            Ok(Err(e)) => failures.lock().unwrap().push(chain(&*e)),
                            Err(_) => failures.lock().unwrap().push("no answer in 10 s".into()),
                        }
                    }
                })
            })
            .collect();
        Load {
            answers,
            failures,
            stop,
            workers,
        }
    }

    /// Waits up to `limit` for an answer (counted from now) that `want` accepts.
    pub async fn until(&self, limit: Duration, want: impl Fn(&Answer) -> bool) -> bool {
        let from = self.answers.lock().unwrap().len();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.answers.lock().unwrap()[from..].iter().any(&want) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Answers so far.
    pub fn count(&self) -> usize {
        self.answers.lock().unwrap().len()
    }

    /// Stops the workers (each finishes the request it is in) and hands over every answer and
    /// every failure.
    pub async fn stop(self) -> (Vec<Answer>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        let answers = std::mem::take(&mut *self.answers.lock().unwrap());
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (answers, failures)
    }
}
