//! `RUST_LOG`'s filter, without its per-span bookkeeping when no directive needs it.
//!
//! `EnvFilter` tracks the spans that a span directive (`target[span{field=value}]=level`)
//! matched, and asks that table under a read lock on every span creation, enter, exit and close,
//! whether or not there are such directives. Every call makes a span and enters it several times.
//! Without span directives the table stays empty, so [`LogFilter`] skips those calls; what is
//! enabled is still `EnvFilter`'s own answer, so `RUST_LOG` means what its documentation says.

use tracing::{Metadata, Subscriber, span, subscriber::Interest};
use tracing_subscriber::{EnvFilter, Layer, filter::LevelFilter, layer::Context};

/// An [`EnvFilter`] that is told about spans only when one of its directives names a span.
pub struct LogFilter {
    filter: EnvFilter,
    /// Whether a directive names a span or its fields (written in brackets).
    span_directives: bool,
}

impl LogFilter {
    pub fn new(filter: EnvFilter) -> Self {
        // A directive's text has brackets exactly when it names a span or fields; targets
        // cannot contain them.
        let span_directives = filter.to_string().contains('[');
        Self {
            filter,
            span_directives,
        }
    }
}

impl<S: Subscriber> Layer<S> for LogFilter {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        Layer::<S>::register_callsite(&self.filter, metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<S>::max_level_hint(&self.filter)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        Layer::<S>::enabled(&self.filter, metadata, ctx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if self.span_directives {
            Layer::<S>::on_new_span(&self.filter, attrs, id, ctx);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if self.span_directives {
            Layer::<S>::on_record(&self.filter, id, values, ctx);
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        if self.span_directives {
            Layer::<S>::on_enter(&self.filter, id, ctx);
        }
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        if self.span_directives {
            Layer::<S>::on_exit(&self.filter, id, ctx);
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        if self.span_directives {
            Layer::<S>::on_close(&self.filter, id, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::{fmt, prelude::*};

    use super::*;
    use crate::test_writer::Buffer;

    /// The messages logged by [`emit`] under `directives`.
    fn logged(directives: &str) -> Vec<String> {
        let buffer = Buffer::default();
        let filter = LogFilter::new(EnvFilter::new(directives));
        let layer = fmt::layer()
            .without_time()
            .with_ansi(false)
            .with_target(false)
            .with_level(false)
            .with_writer(buffer.clone());
        let subscriber = tracing_subscriber::registry().with(filter).with(layer);
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| line.rsplit(' ').next().unwrap().to_owned())
            .collect()
    }

    fn emit() {
        tracing::info!(target: "app::a", "info_a");
        tracing::debug!(target: "app::a", "debug_a");
        tracing::debug!(target: "app::b", "debug_b");
        let span = tracing::info_span!(target: "app::b", "request", method = "/get");
        span.in_scope(|| {
            tracing::debug!(target: "app::a", "debug_a_in_request");
            tracing::trace!(target: "app::a", "trace_a_in_request");
        });
        let other = tracing::info_span!(target: "app::b", "request", method = "/put");
        other.in_scope(|| tracing::debug!(target: "app::a", "debug_a_in_put"));
    }

    #[test]
    fn targets_and_levels_filter_as_env_filter_does() {
        assert_eq!(logged("info"), ["info_a"]);
        assert_eq!(
            logged("info,app::a=debug"),
            ["info_a", "debug_a", "debug_a_in_request", "debug_a_in_put"]
        );
        assert_eq!(logged("app::b=debug"), ["debug_b"]);
        assert!(!LogFilter::new(EnvFilter::new("info,app::a=debug")).span_directives);
    }

    #[test]
    fn span_directives_still_enable_what_happens_inside_the_span() {
        assert!(LogFilter::new(EnvFilter::new("info,[request]=debug")).span_directives);
        assert_eq!(
            logged("info,[request]=debug"),
            ["info_a", "debug_a_in_request", "debug_a_in_put"]
        );
        assert_eq!(
            logged("info,[request{method=/get}]=trace"),
            ["info_a", "debug_a_in_request", "trace_a_in_request"]
        );
    }
}
