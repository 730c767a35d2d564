//! Log output: `pretty` for people, `json` for collectors. `RUST_LOG`
//! overrides the configured level.
//!
//! Long-lived work runs inside a span that names what it works for (a
//! credential's writer: `app`, `credential`; a platform's or a suite's
//! tasks: `platform`, `suite`), so its log lines do not repeat those
//! fields. `pretty` prints the span's fields after the event's; `json`
//! puts them at the top level of the object beside the event's own, as a
//! collector expects: `{"timestamp":..,"level":..,"message":..,"app":..,
//! "credential":..,<the event's fields>,"target":..}`.

use std::fmt;

use serde::ser::{SerializeMap, Serializer as _};
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // A second init (tests, or demo after serve) keeps the first subscriber.
    let _ = match format {
        LogFormat::Pretty => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .compact()
            .try_init(),
        LogFormat::Json => json(std::io::stderr).with_env_filter(filter).try_init(),
    };
}

/// The `json` format, writing to `writer`.
fn json<W>(
    writer: W,
) -> tracing_subscriber::fmt::SubscriberBuilder<
    JsonFields,
    FlatJson,
    tracing::level_filters::LevelFilter,
    W,
>
where
    W: for<'writer> MakeWriter<'writer> + 'static,
{
    tracing_subscriber::fmt()
        .with_writer(writer)
        .json()
        .event_format(FlatJson)
}

/// One JSON object a line: the time, the level, the message, the fields
/// of the spans the event is in (the outermost first; an inner span's
/// field, and the event's own, win over an outer one of the same name),
/// the event's fields, and the target.
struct FlatJson;

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let mut spans: Vec<(String, Value)> = Vec::new();
        for span in ctx
            .event_scope()
            .into_iter()
            .flat_map(|scope| scope.from_root())
        {
            let extensions = span.extensions();
            let Some(formatted) = extensions.get::<FormattedFields<JsonFields>>() else {
                continue;
            };
            let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&formatted.fields) else {
                continue;
            };
            for (name, value) in map {
                match spans.iter_mut().find(|(known, _)| *known == name) {
                    Some(known) => known.1 = value,
                    None => spans.push((name, value)),
                }
            }
        }
        let meta = event.metadata();
        // An event from the `log` crate names its real target in a field.
        let target = match (meta.target(), fields.get("log.target")) {
            ("log", Some(Value::String(target))) => target.clone(),
            (target, _) => target.to_owned(),
        };

        let mut line = Vec::new();
        let mut serializer = serde_json::Serializer::new(&mut line);
        let mut write = || -> Result<(), serde_json::Error> {
            let mut map = (&mut serializer).serialize_map(None)?;
            map.serialize_entry("timestamp", &timestamp)?;
            map.serialize_entry("level", meta.level().as_str())?;
            if let Some(message) = fields.get("message") {
                map.serialize_entry("message", message)?;
            }
            for (name, value) in &spans {
                let reserved = matches!(name.as_str(), "timestamp" | "level" | "target");
                if !reserved && fields.get(name).is_none() {
                    map.serialize_entry(name, value)?;
                }
            }
            for (name, value) in &fields.0 {
                if *name != "message" {
                    map.serialize_entry(name, value)?;
                }
            }
            map.serialize_entry("target", &target)?;
            map.end()
        };
        write().map_err(|_| fmt::Error)?;
        let line = std::str::from_utf8(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

/// An event's fields in the order given, as the stock JSON format
/// renders each kind of value.
#[derive(Default)]
struct EventFields(Vec<(&'static str, Value)>);

impl EventFields {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, value)| value)
    }
}

impl Visit for EventFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name(), Value::from(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name(), Value::from(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name(), Value::from(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name(), Value::from(value)));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), Value::from(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .push((field.name(), Value::from(format!("{value:?}"))));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing::{info, info_span, warn};

    /// Everything written, shared with the subscriber.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The JSON lines `emit` logs.
    fn json_lines(emit: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = super::json(move || sink.clone()).finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn keys(line: &str) -> Vec<String> {
        // Parsed key by key, in the order written.
        let object: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
        let mut keys: Vec<(usize, String)> = object
            .keys()
            .map(|key| (line.find(&format!("\"{key}\":")).unwrap(), key.clone()))
            .collect();
        keys.sort();
        keys.into_iter().map(|(_, key)| key).collect()
    }

    #[test]
    fn a_span_s_fields_are_at_the_top_level_of_each_line() {
        let lines = json_lines(|| {
            let span = info_span!("refresher", app = %"shop", credential = %"access_token");
            let _entered = span.enter();
            info!(
                grant = "classic",
                expires_in = 7200u64,
                "access_token refreshed"
            );
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "access_token refreshed");
        assert_eq!(line["app"], "shop");
        assert_eq!(line["credential"], "access_token");
        assert_eq!(line["grant"], "classic");
        assert_eq!(line["expires_in"], 7200);
        assert_eq!(line["target"], module_path!());
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(
            keys(&lines[0]),
            [
                "timestamp",
                "level",
                "message",
                "app",
                "credential",
                "grant",
                "expires_in",
                "target"
            ]
        );
    }

    #[test]
    fn inner_fields_win_and_a_line_outside_any_span_has_only_its_own() {
        let lines = json_lines(|| {
            let outer = info_span!("suite", suite = %"crm", id = %"outer");
            let _outer = outer.enter();
            let inner = info_span!("child", id = %"wwcorp1");
            let _inner = inner.enter();
            warn!(suite = "given", "in both");
            drop(_inner);
            drop(_outer);
            info!("outside");
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        let inside: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(inside["id"], "wwcorp1");
        assert_eq!(inside["suite"], "given");
        assert_eq!(lines[0].matches("\"suite\":").count(), 1, "{}", lines[0]);
        let outside: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(
            keys(&lines[1]),
            ["timestamp", "level", "message", "target"],
            "{outside}"
        );
    }
}
