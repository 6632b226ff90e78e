//! The `LOG_FORMAT=json` line: the same object `tracing_subscriber`'s JSON format writes with
//! `flatten_event(true)` and `with_current_span(true)` (timestamp, level, the event's fields,
//! target, the current span and the list of spans), written without its cost per line. That
//! format parses every span's stored fields back into a map, twice per line (for `span` and for
//! `spans`), to add the span's name; here the stored JSON object is copied as it is and the name
//! appended to it. The gateway writes one such line per request, so this is on the hot path.
//!
//! A span's fields come in the order they were recorded rather than sorted by name; the objects
//! are otherwise the same (tested against `tracing_subscriber`'s format below).

use std::fmt;

use serde::ser::{SerializeMap, Serializer as _};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::{
    fmt::{
        FmtContext, FormatEvent, FormattedFields,
        format::{JsonFields, Writer},
        time::{FormatTime, SystemTime},
    },
    registry::{LookupSpan, SpanRef},
};

/// The event formatter of `LOG_FORMAT=json` (with [`JsonFields`] for the spans' fields).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());

        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;

        // The event's own fields, flattened into the line exactly as `tracing_serde` writes them:
        // serialized as a map, whose braces are then left out.
        let mut fields = Vec::with_capacity(128);
        let mut serializer = serde_json::Serializer::new(&mut fields);
        let map = serializer.serialize_map(None).map_err(|_| fmt::Error)?;
        let mut visitor = tracing_serde::SerdeMapVisitor::new(map);
        event.record(&mut visitor);
        visitor
            .take_serializer()
            .and_then(SerializeMap::end)
            .map_err(|_| fmt::Error)?;
        let fields = std::str::from_utf8(&fields).map_err(|_| fmt::Error)?;
        let entries = &fields[1..fields.len() - 1];
        if !entries.is_empty() {
            writer.write_char(',')?;
            writer.write_str(entries)?;
        }

        writer.write_str(",\"target\":")?;
        json_string(&mut writer, meta.target())?;

        let current = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(current) = current {
            writer.write_str(",\"span\":")?;
            span_object(&mut writer, &current)?;
            writer.write_str(",\"spans\":[")?;
            if let Some(scope) = ctx.event_scope() {
                for (n, span) in scope.from_root().enumerate() {
                    if n > 0 {
                        writer.write_char(',')?;
                    }
                    span_object(&mut writer, &span)?;
                }
            }
            writer.write_char(']')?;
        }
        writer.write_str("}\n")
    }
}

/// A span as the JSON format shows it: its recorded fields and its `name`.
fn span_object<S>(writer: &mut Writer<'_>, span: &SpanRef<'_, S>) -> fmt::Result
where
    S: for<'a> LookupSpan<'a>,
{
    let extensions = span.extensions();
    // `JsonFields` stores a JSON object; anything else (never seen) is left out.
    let stored = extensions
        .get::<FormattedFields<JsonFields>>()
        .map(|fields| fields.fields.trim())
        .filter(|fields| fields.starts_with('{') && fields.ends_with('}'))
        .map(|fields| fields[1..fields.len() - 1].trim())
        .unwrap_or("");
    writer.write_char('{')?;
    if !stored.is_empty() {
        writer.write_str(stored)?;
        writer.write_char(',')?;
    }
    writer.write_str("\"name\":")?;
    json_string(writer, span.metadata().name())?;
    writer.write_char('}')
}

/// `text` as a JSON string (targets and span names need no escaping but are escaped if they do).
fn json_string(writer: &mut Writer<'_>, text: &str) -> fmt::Result {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        writer.write_char('"')?;
        writer.write_str(text)?;
        return writer.write_char('"');
    }
    let quoted = serde_json::to_string(text).map_err(|_| fmt::Error)?;
    writer.write_str(&quoted)
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use serde_json::Value;
    use tracing_subscriber::{fmt, fmt::MakeWriter, prelude::*};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    /// Events outside and inside nested spans, with every kind of field value.
    fn emit() {
        tracing::info!("outside any span");
        let request = tracing::info_span!(
            "request",
            method = "GET",
            path = %"/api/persons/1",
            request_id = %"0b678842-f66c-49d1-b1cd-b2882969098d",
            trace_id = tracing::field::Empty,
        );
        let _request = request.enter();
        request.record("trace_id", "a8a867d172a2195cdafd64a56eb1915e");
        tracing::info!(status = 200u64, latency = %"3 ms", "finished processing request");
        let call = tracing::warn_span!("backend call", backend = "resource", n = -3i64, ok = true);
        let _call = call.enter();
        tracing::warn!(
            error = "a \"quoted\" \\ message\nwith ünïcode\t",
            ratio = 0.5,
            list = ?vec!["a", "b"],
            "retrying on another replica"
        );
        tracing::error!(target: "custom::target", "no message fields but this one");
        let empty = tracing::info_span!("empty");
        let _empty = empty.enter();
        tracing::info!(answer = 42, "in a span without fields");
        tracing::info!(answer = 43);
    }

    /// The lines `layer` writes for [`emit`], parsed, each without its timestamp (checked).
    fn lines(json_lines: bool) -> Vec<Value> {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry();
        if json_lines {
            let layer = fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(JsonLines)
                .with_writer(buffer.clone());
            tracing::subscriber::with_default(subscriber.with(layer), emit);
        } else {
            let layer = fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_writer(buffer.clone());
            tracing::subscriber::with_default(subscriber.with(layer), emit);
        }
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with('\n'));
        text.lines()
            .map(|line| {
                let mut value: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("not JSON ({e}): {line}");
                });
                let timestamp = value.as_object_mut().unwrap().remove("timestamp").unwrap();
                let timestamp = timestamp.as_str().unwrap();
                // RFC 3339 in UTC with microseconds, e.g. 2026-11-26T16:31:03.599533Z.
                assert_eq!(timestamp.len(), 27, "{timestamp}");
                assert!(
                    timestamp.ends_with('Z') && &timestamp[10..11] == "T",
                    "{timestamp}"
                );
                value
            })
            .collect()
    }

    #[test]
    fn lines_are_the_objects_tracing_subscribers_json_format_writes() {
        let ours = lines(true);
        let theirs = lines(false);
        assert_eq!(ours.len(), 6);
        assert_eq!(ours, theirs);
        // The request's fields, the one recorded later included, and the span's name.
        assert_eq!(
            ours[1]["span"],
            serde_json::json!({
                "method": "GET",
                "path": "/api/persons/1",
                "request_id": "0b678842-f66c-49d1-b1cd-b2882969098d",
                "trace_id": "a8a867d172a2195cdafd64a56eb1915e",
                "name": "request",
            })
        );
        assert_eq!(ours[2]["spans"].as_array().unwrap().len(), 2);
        assert_eq!(ours[4]["span"], serde_json::json!({ "name": "empty" }));
    }
}
