//! Whether a connection has a request in flight, and since when it has had none: what the idle
//! timer in [`super::serve`] reads. A request counts from the moment hyper hands it to the
//! service until its answer's body has been sent (or dropped), so a slow handler or a long body
//! keeps the connection busy. Per request this costs two atomic operations on the connection's
//! counter and one clock read when the last request ends: no allocation and no timer.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
};

use axum::http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Service;

/// One connection's requests in flight, shared by its service and its task.
#[derive(Debug)]
pub(super) struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Nanoseconds from `started` to the end of the last request that left none in flight;
    /// [`NEVER`] until a request has ended.
    idle_since: AtomicU64,
}

const NEVER: u64 = u64::MAX;

/// What [`Activity::idle`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Idle {
    /// No request has been received yet.
    NeverUsed,
    /// A request is in flight.
    Busy,
    /// No request in flight since then.
    Since(Instant),
}

impl Activity {
    pub(super) fn new(started: Instant) -> Self {
        Self {
            started,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(NEVER),
        }
    }

    pub(super) fn started(&self) -> Instant {
        self.started
    }

    pub(super) fn idle(&self) -> Idle {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Idle::Busy;
        }
        match self.idle_since.load(Ordering::Acquire) {
            NEVER => Idle::NeverUsed,
            nanos => Idle::Since(self.started + std::time::Duration::from_nanos(nanos)),
        }
    }

    fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// One request in flight; ends when dropped.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Saturating: a connection open for 584 years would otherwise wrap to `NEVER`.
            let nanos = u64::try_from(activity.started.elapsed().as_nanos()).unwrap_or(NEVER - 1);
            activity
                .idle_since
                .store(nanos.min(NEVER - 1), Ordering::Release);
        }
    }
}

/// A service that counts its requests in flight into an [`Activity`].
#[derive(Clone, Debug)]
pub(super) struct TrackActivity<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> TrackActivity<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TrackActivity<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<Tracked<ResBody>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let in_flight = self.activity.enter();
        TrackedFuture {
            inner: self.inner.call(request),
            in_flight: Some(in_flight),
        }
    }
}

pin_project! {
    /// The answer to come; hands its [`InFlight`] on to the answer's body.
    pub(super) struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Tracked<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|inner| Tracked {
            inner,
            _in_flight: in_flight,
        })))
    }
}

pin_project! {
    /// An answer's body, which keeps its request in flight until it is sent or dropped.
    pub(super) struct Tracked<B> {
        #[pin]
        inner: B,
        _in_flight: Option<InFlight>,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_busy_while_a_request_is_in_flight_and_idle_from_when_the_last_ends() {
        let activity = Arc::new(Activity::new(Instant::now()));
        assert_eq!(activity.idle(), Idle::NeverUsed);
        let first = activity.enter();
        let second = activity.enter();
        assert_eq!(activity.idle(), Idle::Busy);
        drop(first);
        assert_eq!(activity.idle(), Idle::Busy);
        let before = Instant::now();
        drop(second);
        let Idle::Since(since) = activity.idle() else {
            panic!("not idle after the last request");
        };
        assert!(since >= before && since <= Instant::now());
    }
}
