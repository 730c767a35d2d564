//! The Prometheus text exposition (format 0.0.4) written directly, for
//! the families with a series per app. The prometheus crate builds a
//! protobuf message with owned label strings for every series before
//! encoding it, several allocations a line; with thousands of apps that
//! was most of a scrape's time. A [`TextFamily`] writes each line once,
//! into one buffer, byte for byte as the crate's `TextEncoder` would.

use std::collections::HashMap;
use std::fmt::Write as _;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

/// A family's type, as its `# TYPE` line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Something that writes whole families into the exposition when it is
/// rendered, beside the registry's own (registered with
/// [`super::Metrics::register_text`]). Its family names are its own: no
/// registered metric may share one.
pub trait TextCollector: Send + Sync {
    fn write(&self, out: &mut Vec<u8>);
}

/// Declares to a registry the families a [`TextCollector`] writes, so the
/// registry refuses any other metric of the same name; it collects
/// nothing itself.
pub struct Declared(Vec<Desc>);

impl Declared {
    /// `families`: each one's name, help and label names.
    pub fn new<'a>(
        families: impl IntoIterator<Item = (&'a str, &'a str, &'a [&'a str])>,
    ) -> Declared {
        Declared(
            families
                .into_iter()
                .map(|(name, help, labels)| {
                    Desc::new(
                        name.to_owned(),
                        help.to_owned(),
                        labels.iter().map(|label| (*label).to_owned()).collect(),
                        HashMap::new(),
                    )
                    .expect("valid metric")
                })
                .collect(),
        )
    }
}

impl Collector for Declared {
    fn desc(&self) -> Vec<&Desc> {
        self.0.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        Vec::new()
    }
}

/// One family's series, gathered for one rendering: the `# HELP` and
/// `# TYPE` lines are written by [`TextFamily::finish`], and only when
/// the family has a series (as the registry leaves out an empty one).
pub struct TextFamily {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    /// Indices into `labels`, in the order of their names: the crate's
    /// vectors write a series' labels sorted by name, and so does this.
    by_name: Vec<usize>,
    lines: Vec<u8>,
}

impl TextFamily {
    pub fn new(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &'static [&'static str],
    ) -> TextFamily {
        let mut by_name: Vec<usize> = (0..labels.len()).collect();
        by_name.sort_by_key(|&at| labels[at]);
        TextFamily {
            name,
            help,
            kind,
            labels,
            by_name,
            lines: Vec::new(),
        }
    }

    /// Adds the series whose label values are `values` (in the family's
    /// label order), with an integer value.
    pub fn push(&mut self, values: &[&str], value: u64) {
        self.start_line("", values, None);
        self.lines
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self.lines.push(b'\n');
    }

    /// Adds the series whose label values are `values`, valued `value`.
    pub fn push_f64(&mut self, values: &[&str], value: f64) {
        self.start_line("", values, None);
        self.write_f64(value);
        self.lines.push(b'\n');
    }

    /// Adds one histogram's series: a `_bucket` line for each upper bound
    /// (with its cumulative count) and for `+Inf`, then `_sum` and
    /// `_count`.
    pub fn push_histogram(
        &mut self,
        values: &[&str],
        bounds: &[f64],
        cumulative: &[u64],
        sum: f64,
        count: u64,
    ) {
        debug_assert_eq!(self.kind, Kind::Histogram);
        let mut bound = String::new();
        for (upper, below) in bounds.iter().zip(cumulative) {
            bound.clear();
            let _ = write!(bound, "{upper}");
            self.start_line("_bucket", values, Some(&bound));
            self.lines
                .extend_from_slice(itoa::Buffer::new().format(*below).as_bytes());
            self.lines.push(b'\n');
        }
        self.start_line("_bucket", values, Some("+Inf"));
        self.lines
            .extend_from_slice(itoa::Buffer::new().format(count).as_bytes());
        self.lines.push(b'\n');
        self.start_line("_sum", values, None);
        self.write_f64(sum);
        self.lines.push(b'\n');
        self.start_line("_count", values, None);
        self.lines
            .extend_from_slice(itoa::Buffer::new().format(count).as_bytes());
        self.lines.push(b'\n');
    }

    /// Appends the family to `out`: nothing when it has no series.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.lines.is_empty() {
            return;
        }
        if !self.help.is_empty() {
            out.extend_from_slice(b"# HELP ");
            out.extend_from_slice(self.name.as_bytes());
            out.push(b' ');
            escape_into(out, self.help, false);
            out.push(b'\n');
        }
        out.extend_from_slice(b"# TYPE ");
        out.extend_from_slice(self.name.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.kind.name().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&self.lines);
    }

    /// `name{a="x",b="y"} `, with `le` last when given.
    fn start_line(&mut self, suffix: &str, values: &[&str], le: Option<&str>) {
        assert_eq!(
            values.len(),
            self.labels.len(),
            "{}: one value per label",
            self.name
        );
        let lines = &mut self.lines;
        lines.extend_from_slice(self.name.as_bytes());
        lines.extend_from_slice(suffix.as_bytes());
        let mut separator = b'{';
        for &at in &self.by_name {
            lines.push(separator);
            lines.extend_from_slice(self.labels[at].as_bytes());
            lines.extend_from_slice(b"=\"");
            escape_into(lines, values[at], true);
            lines.push(b'"');
            separator = b',';
        }
        if let Some(le) = le {
            lines.push(separator);
            lines.extend_from_slice(b"le=\"");
            lines.extend_from_slice(le.as_bytes());
            lines.push(b'"');
            separator = b',';
        }
        if separator == b',' {
            lines.push(b'}');
        }
        lines.push(b' ');
    }

    /// A float as the crate writes one (Rust's `Display`).
    fn write_f64(&mut self, value: f64) {
        let mut text = String::new();
        let _ = write!(text, "{value}");
        self.lines.extend_from_slice(text.as_bytes());
    }
}

/// `value` escaped as the text format wants it: `\` and a newline always,
/// `"` in a label value.
fn escape_into(out: &mut Vec<u8>, value: &str, quote: bool) {
    for byte in value.bytes() {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if quote => out.extend_from_slice(b"\\\""),
            _ => out.push(byte),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{
        Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
    };

    fn encoded(registry: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Labels declared out of name order, a help and values that need
    /// escaping: the same bytes as the crate's own vectors and encoder.
    #[test]
    fn a_text_family_writes_what_the_crates_encoder_writes() {
        const LABELS: &[&str] = &["app", "credential", "errcode"];
        const HELP: &str = "Failed \"calls\" \\ by\nerrcode.";
        let registry = Registry::new();
        let counter = IntCounterVec::new(Opts::new("t_errors_total", HELP), LABELS).unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter
            .with_label_values(&["shop", "access_token", "-1"])
            .inc_by(3);
        counter
            .with_label_values(&["a\"b\\c\nd", "jsapi_ticket", "other"])
            .inc_by(u64::from(u32::MAX) * 4);
        let gauge = GaugeVec::new(Opts::new("t_expiry", "When."), &["kind", "app"]).unwrap();
        registry.register(Box::new(gauge.clone())).unwrap();
        gauge
            .with_label_values(&["jsapi", "shop"])
            .set(1_767_225_600.125);
        gauge.with_label_values(&["wx_card", "shop"]).set(0.0);
        let histogram = HistogramVec::new(
            HistogramOpts::new("t_duration_seconds", "Took.").buckets(vec![0.25, 1.0, 5.0]),
            &["app"],
        )
        .unwrap();
        registry.register(Box::new(histogram.clone())).unwrap();
        for took in [0.1, 0.3, 7.5] {
            histogram.with_label_values(&["shop"]).observe(took);
        }

        // The registry sorts a family's series by label values; these are
        // pushed in that order.
        let mut written = Vec::new();
        let mut family = TextFamily::new("t_duration_seconds", "Took.", Kind::Histogram, &["app"]);
        family.push_histogram(&["shop"], &[0.25, 1.0, 5.0], &[1, 2, 2], 0.1 + 0.3 + 7.5, 3);
        family.finish(&mut written);
        let mut family = TextFamily::new("t_errors_total", HELP, Kind::Counter, LABELS);
        family.push(
            &["a\"b\\c\nd", "jsapi_ticket", "other"],
            u64::from(u32::MAX) * 4,
        );
        family.push(&["shop", "access_token", "-1"], 3);
        family.finish(&mut written);
        let mut family = TextFamily::new("t_expiry", "When.", Kind::Gauge, &["kind", "app"]);
        family.push_f64(&["jsapi", "shop"], 1_767_225_600.125);
        family.push_f64(&["wx_card", "shop"], 0.0);
        family.finish(&mut written);
        TextFamily::new("t_empty", "Nothing.", Kind::Gauge, &["app"]).finish(&mut written);

        assert_eq!(String::from_utf8(written).unwrap(), encoded(&registry));
    }
}
