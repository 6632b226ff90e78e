//! Telling, from a failed call, whether the replica answered, never saw the request, or was lost
//! with the request in flight: that decides whether the call may be tried on another replica.

use std::error::Error as _;

use tonic::Status;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The replica itself answered with this status (it came in the response trailers).
    Answered,
    /// The request never reached the replica: the connection was refused or timed out, the
    /// connection closed while the request still waited to be sent (hyper cancels it), or the
    /// HTTP/2 stream was refused (REFUSED_STREAM, or above the last stream id of a graceful
    /// GOAWAY), which
    /// RFC 9113 §8.7 guarantees was not processed. Safe to retry even for writes.
    NotReached,
    /// The connection broke while the request was in flight: the replica may or may not have
    /// acted on it. Safe to retry only for reads.
    Lost,
    /// The replica's HTTP/2 layer refused the request itself as too large or abusive (a 431
    /// answer, or ENHANCE_YOUR_CALM as a stream reset or GOAWAY). The caller's fault, not the
    /// replica's: it stays in the rotation, and the call is not tried on another replica, which
    /// would refuse it the same way.
    Refused,
}

/// Statuses made by the server come from its trailers and carry no source; tonic attaches the
/// underlying error as the source of every status it makes from a transport failure.
pub fn classify(status: &Status) -> Failure {
    let Some(source) = status.source() else {
        // tonic's only trace of an HTTP answer without gRPC status (what h2 sends for headers
        // over the server's limit) is the message it makes from the HTTP status.
        if status.code() == tonic::Code::Unknown
            && status.message().ends_with("HTTP status code 431")
        {
            return Failure::Refused;
        }
        return Failure::Answered;
    };
    let mut next = Some(source);
    while let Some(error) = next {
        if error.downcast_ref::<tonic::ConnectError>().is_some() {
            return Failure::NotReached;
        }
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return Failure::NotReached;
        }
        if error.downcast_ref::<tonic::TimeoutExpired>().is_some() {
            return Failure::Answered;
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) {
                return Failure::Refused;
            }
            let refused = h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            // Only a graceful GOAWAY promises the failed stream was above the last one the
            // server processed; with an error code, h2 fails processed streams as well.
            let graceful_go_away =
                h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
            if refused || graceful_go_away {
                return Failure::NotReached;
            }
        }
        next = error.source();
    }
    Failure::Lost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_from_the_server_is_an_answer() {
        assert_eq!(
            classify(&Status::unavailable("draining")),
            Failure::Answered
        );
        assert_eq!(
            classify(&Status::not_found("no such person")),
            Failure::Answered
        );
    }

    #[test]
    fn a_refused_stream_never_reached_the_replica() {
        let status = Status::from_error(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        assert_eq!(classify(&status), Failure::NotReached);
    }

    #[test]
    fn enhance_your_calm_is_a_refusal_of_the_request() {
        let reset = Status::from_error(Box::new(h2::Error::from(h2::Reason::ENHANCE_YOUR_CALM)));
        assert_eq!(classify(&reset), Failure::Refused);
    }

    #[test]
    fn an_http_431_without_grpc_status_is_a_refusal_of_the_request() {
        let status =
            Status::unknown("grpc-status header missing, mapped from HTTP status code 431");
        assert_eq!(classify(&status), Failure::Refused);
    }

    #[test]
    fn a_reset_connection_may_have_reached_the_replica() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let status = Status::from_error(Box::new(io));
        assert_eq!(classify(&status), Failure::Lost);
    }
}
