//! The `LOG_FORMAT=json` line: the same object `tracing_subscriber`'s JSON format writes with
//! `flatten_event(true)` and `with_current_span(true)` (timestamp, level, the event's fields,
//! target, the current span and the list of spans), written without its cost per line. That
//! format parses every span's stored fields back into a map, twice per line (for `span` and for
//! `spans`), to add the span's name; here the stored JSON object is copied as it is and the name
//! appended to it. The gateway writes one such line per request, so this is on the hot path.
//!
//! A span's fields come in the order they were recorded rather than sorted by name; the objects
//! are otherwise the same (tested against `tracing_subscriber`'s format below).

use std::{cell::Cell, fmt, time::UNIX_EPOCH};

use serde::ser::{SerializeMap, Serializer as _};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_log::NormalizeEvent;
use tracing_subscriber::{
    field::RecordFields,
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields,
        format::Writer,
        time::{FormatTime, SystemTime},
    },
    registry::{LookupSpan, SpanRef},
};

/// The event formatter of `LOG_FORMAT=json` (with [`JsonSpanFields`] for the spans' fields).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLines;

impl<S> FormatEvent<S, JsonSpanFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonSpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());

        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, std::time::SystemTime::now())?;
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

/// The current `time` as `SystemTime` (`tracing_subscriber`'s timer) writes it: RFC 3339 in UTC
/// with microseconds, e.g. `2026-11-26T16:31:03.599533Z`. The date and time of day are worked
/// out once a second on each thread rather than formatted for every line; a clock outside the
/// years 1970 to 9999 is left to `SystemTime`.
fn write_timestamp(writer: &mut Writer<'_>, time: std::time::SystemTime) -> fmt::Result {
    thread_local! {
        /// The last second written, and its text up to and including the dot.
        static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
    }
    const LAST_SECOND: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let since_epoch = match time.duration_since(UNIX_EPOCH) {
        Ok(since) if since.as_secs() <= LAST_SECOND => since,
        _ => return SystemTime.format_time(writer),
    };
    let seconds = since_epoch.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != seconds {
        text = second_text(seconds);
        SECOND.set((seconds, text));
    }
    let mut micros = [0; 7];
    digits(&mut micros[..6], since_epoch.subsec_micros().into());
    micros[6] = b'Z';
    writer.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)?;
    writer.write_str(std::str::from_utf8(&micros).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS.` for `seconds` since 1970 (at most [`write_timestamp`]'s last second).
fn second_text(seconds: u64) -> [u8; 20] {
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    // Days to the proleptic Gregorian calendar: Howard Hinnant's `civil_from_days`, with years
    // starting on 1 March so the leap day comes last.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);

    let mut text = *b"0000-00-00T00:00:00.";
    digits(&mut text[0..4], year);
    digits(&mut text[5..7], month);
    digits(&mut text[8..10], day);
    digits(&mut text[11..13], second_of_day / 3600);
    digits(&mut text[14..16], second_of_day / 60 % 60);
    digits(&mut text[17..19], second_of_day % 60);
    text
}

/// `n`'s last decimal digits, as many as `out` is long, zero-padded.
fn digits(out: &mut [u8], mut n: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// How [`JsonLines`] stores a span's fields: the JSON object `tracing_subscriber`'s
/// [`JsonFields`](tracing_subscriber::fmt::format::JsonFields) stores, written as the
/// fields are visited. `JsonFields` gathers them into a map of `serde_json::Value`s first (a
/// `String` for each formatted value) and serializes the map, for every span; the gateway makes
/// one per request. Here the fields come in the order they are given rather than by name.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        writer.write_str(&json_object(fields)?)
    }

    /// Fields recorded on a span that has some already are merged as `JsonFields` does: a
    /// field recorded again gets its new value.
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &span::Record<'_>,
    ) -> fmt::Result {
        let added = json_object(fields)?;
        if current.fields.is_empty() {
            current.fields = added;
            return Ok(());
        }
        let parse = |text: &str| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
                .map_err(|_| fmt::Error)
        };
        let mut merged = parse(&current.fields)?;
        merged.extend(parse(&added)?);
        current.fields = serde_json::to_string(&merged).map_err(|_| fmt::Error)?;
        Ok(())
    }
}

/// `fields` as one JSON object, each value as `JsonFields` writes it.
fn json_object<R: RecordFields>(fields: R) -> Result<String, fmt::Error> {
    let mut visitor = ObjectVisitor {
        out: Vec::with_capacity(256),
        failed: false,
    };
    fields.record(&mut visitor);
    if visitor.failed {
        return Err(fmt::Error);
    }
    let mut out = visitor.out;
    if out.is_empty() {
        out.push(b'{');
    }
    out.push(b'}');
    String::from_utf8(out).map_err(|_| fmt::Error)
}

/// Writes each field as a member of a JSON object (the opening brace before the first).
struct ObjectVisitor {
    out: Vec<u8>,
    failed: bool,
}

impl ObjectVisitor {
    fn member(&mut self, name: &str, value: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>) {
        if self.failed {
            return;
        }
        self.out.push(if self.out.is_empty() { b'{' } else { b',' });
        let written = serde_json::to_writer(&mut self.out, name).and_then(|()| {
            self.out.push(b':');
            value(&mut self.out)
        });
        self.failed = written.is_err();
    }

    fn serialized(&mut self, field: &Field, value: impl serde::Serialize) {
        self.member(field.name(), |out| serde_json::to_writer(out, &value));
    }
}

impl Visit for ObjectVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.serialized(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.serialized(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.serialized(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.serialized(field, value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.serialized(field, value);
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.serialized(field, value);
    }

    /// As text, straight into the escaped string; `log.` fields (the `log` crate's metadata,
    /// shown elsewhere) left out and a raw identifier's `r#` dropped, as `JsonFields` does.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.member(name, |out| {
            (&mut serde_json::Serializer::new(out)).collect_str(&format_args!("{value:?}"))
        });
    }
}

/// A span as the JSON format shows it: its recorded fields and its `name`.
fn span_object<S>(writer: &mut Writer<'_>, span: &SpanRef<'_, S>) -> fmt::Result
where
    S: for<'a> LookupSpan<'a>,
{
    let extensions = span.extensions();
    // `JsonSpanFields` stores a JSON object; anything else (never seen) is left out.
    let stored = extensions
        .get::<FormattedFields<JsonSpanFields>>()
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
    use serde_json::Value;
    use tracing_subscriber::{fmt, prelude::*};

    use super::*;
    use crate::test_writer::Buffer;

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
        // Recorded again: the new value replaces the first.
        call.record("n", -4i64);
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
                .fmt_fields(JsonSpanFields)
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

    /// What [`write_timestamp`] writes for `time`.
    fn timestamp(time: std::time::SystemTime) -> String {
        let mut text = String::new();
        write_timestamp(&mut Writer::new(&mut text), time).unwrap();
        text
    }

    #[test]
    fn timestamps_are_rfc_3339_in_utc_with_microseconds() {
        use std::time::Duration;
        let at = |seconds: u64, micros: u32| UNIX_EPOCH + Duration::new(seconds, micros * 1000);
        for (time, expected) in [
            (at(0, 0), "1970-01-01T00:00:00.000000Z"),
            (at(951_782_399, 999_999), "2000-02-28T23:59:59.999999Z"),
            (at(951_782_400, 7), "2000-02-29T00:00:00.000007Z"),
            (at(1_764_201_063, 599_533), "2025-11-26T23:51:03.599533Z"),
            // The same second again (from the thread's cache), another fraction.
            (at(1_764_201_063, 12), "2025-11-26T23:51:03.000012Z"),
            (at(4_107_542_399, 0), "2100-02-28T23:59:59.000000Z"),
            (at(253_402_300_799, 1), "9999-12-31T23:59:59.000001Z"),
        ] {
            assert_eq!(timestamp(time), expected);
        }
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
