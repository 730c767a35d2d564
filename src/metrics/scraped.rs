//! Gauges read at scrape time: a [`ScrapedGauge`] declares a gauge's
//! name, help and labels, and builds a fresh [`GaugeFamily`] of its
//! series for each scrape, written exactly as the registry's own gauge
//! vectors are; or, for a gauge with a series per app, a [`TextFamily`]
//! that writes them as text directly.

use std::collections::HashMap;

use prometheus::core::Desc;
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

use super::text::{Kind, TextFamily};

/// A gauge read when the registry is gathered, by the collector that
/// declares it: its name, help and label names. Its series are built
/// afresh for each scrape ([`ScrapedGauge::family`]), so they are exactly
/// the credentials there are now, valued now.
#[derive(Debug, Clone, Copy)]
pub struct ScrapedGauge {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

impl ScrapedGauge {
    /// The descriptor its collector declares, so the registry refuses any
    /// other metric of the same name.
    pub fn desc(&self) -> Desc {
        Desc::new(
            self.name.to_owned(),
            self.help.to_owned(),
            self.labels
                .iter()
                .map(|label| (*label).to_owned())
                .collect(),
            HashMap::new(),
        )
        .expect("valid metric")
    }

    /// An empty family of this gauge written as text, for one scrape.
    pub fn text(&self) -> TextFamily {
        TextFamily::new(self.name, self.help, Kind::Gauge, self.labels)
    }

    /// An empty family of this gauge, for one scrape.
    pub fn family(&self) -> GaugeFamily {
        let mut family = MetricFamily::default();
        family.set_name(self.name.to_owned());
        family.set_help(self.help.to_owned());
        family.set_field_type(MetricType::GAUGE);
        // The registry's own vectors write a series' labels sorted by
        // name; so do these, and the exposition cannot tell them apart.
        let mut by_name: Vec<usize> = (0..self.labels.len()).collect();
        by_name.sort_by_key(|&at| self.labels[at]);
        GaugeFamily {
            labels: self.labels,
            by_name,
            family,
        }
    }
}

/// One scrape's series of a [`ScrapedGauge`].
pub struct GaugeFamily {
    labels: &'static [&'static str],
    /// Indices into `labels`, in the order of their names.
    by_name: Vec<usize>,
    family: MetricFamily,
}

impl GaugeFamily {
    /// Adds the series whose label values are `values` (in the gauge's
    /// label order).
    pub fn push(&mut self, values: &[&str], value: f64) {
        assert_eq!(
            values.len(),
            self.labels.len(),
            "{}: one value per label",
            self.family.get_name()
        );
        let labels: Vec<LabelPair> = self
            .by_name
            .iter()
            .map(|&at| {
                let mut pair = LabelPair::default();
                pair.set_name(self.labels[at].to_owned());
                pair.set_value(values[at].to_owned());
                pair
            })
            .collect();
        let mut gauge = proto::Gauge::default();
        gauge.set_value(value);
        let mut metric = proto::Metric::default();
        metric.set_label(labels.into());
        metric.set_gauge(gauge);
        self.family.mut_metric().push(metric);
    }

    /// The family, for [`prometheus::core::Collector::collect`]. One with
    /// no series is left out of the exposition by the registry.
    pub fn finish(self) -> MetricFamily {
        self.family
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

    /// A collector of one scraped gauge and its series, as the kinds'
    /// collectors are.
    struct Scraped(ScrapedGauge, Desc, Vec<(Vec<&'static str>, f64)>);

    impl Scraped {
        fn new(gauge: ScrapedGauge, series: &[(Vec<&'static str>, f64)]) -> Box<Scraped> {
            Box::new(Scraped(gauge, gauge.desc(), series.to_vec()))
        }
    }

    impl prometheus::core::Collector for Scraped {
        fn desc(&self) -> Vec<&Desc> {
            vec![&self.1]
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let mut family = self.0.family();
            for (values, value) in &self.2 {
                family.push(values, *value);
            }
            vec![family.finish()]
        }
    }

    /// Labels declared out of name order, a help that needs escaping.
    const HELD: ScrapedGauge = ScrapedGauge {
        name: "wxbroker_scraped_held",
        help: "Held \"children\", by reason \\ parent.",
        labels: &["suite", "reason"],
    };

    const EXPIRY: ScrapedGauge = ScrapedGauge {
        name: "wxbroker_scraped_expiry_timestamp_seconds",
        help: "When.",
        labels: &["app"],
    };

    fn exposition(registry: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_scraped_gauge_exposes_exactly_what_a_gauge_vector_did() {
        let counts = [
            (vec!["crm", "quota"], 3),
            (vec!["crm", "budget"], 0),
            (vec!["a\"b", "config"], i64::MAX),
        ];
        let times = [(vec!["shop"], 1_767_225_600.125), (vec!["mini"], 1.5e9)];

        let vectors = Registry::new();
        let held = IntGaugeVec::new(Opts::new(HELD.name, HELD.help), HELD.labels).unwrap();
        let expiry =
            prometheus::GaugeVec::new(Opts::new(EXPIRY.name, EXPIRY.help), EXPIRY.labels).unwrap();
        vectors.register(Box::new(held.clone())).unwrap();
        vectors.register(Box::new(expiry.clone())).unwrap();
        for (values, count) in &counts {
            held.with_label_values(values).set(*count);
        }
        for (values, at) in &times {
            expiry.with_label_values(values).set(*at);
        }

        let scraped = Registry::new();
        let counts: Vec<_> = counts
            .iter()
            .map(|(values, count)| (values.clone(), *count as f64))
            .collect();
        scraped.register(Scraped::new(HELD, &counts)).unwrap();
        scraped.register(Scraped::new(EXPIRY, &times)).unwrap();

        assert_eq!(exposition(&scraped), exposition(&vectors));
        assert!(
            exposition(&scraped).contains(r#"wxbroker_scraped_held{reason="quota",suite="crm"} 3"#)
        );
    }

    #[test]
    fn a_scraped_gauge_with_no_series_is_left_out() {
        let registry = Registry::new();
        registry.register(Scraped::new(HELD, &[])).unwrap();
        assert!(registry.gather().is_empty());
    }

    #[test]
    fn a_scraped_gauge_keeps_its_name_from_any_other_metric() {
        let registry = Registry::new();
        registry.register(Scraped::new(HELD, &[])).unwrap();
        let same_name = IntGaugeVec::new(Opts::new(HELD.name, HELD.help), HELD.labels).unwrap();
        assert!(registry.register(Box::new(same_name)).is_err());
    }
}
