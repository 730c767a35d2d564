//! `wxbroker_requests_total{listener,route,status}` and
//! `wxbroker_request_duration_seconds{route}`: every request a listener
//! answers counts into them, so they are counted on per-thread shards (no cache
//! line shared between the workers) and written as text.
//!
//! A (listener, route) pair's series is made on first use, or declared
//! up front by a listener that shows its routes' answers at 0 from the
//! start (the token API). The duration histogram is by route alone: a
//! scrape adds the route's listeners together.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use http::StatusCode;

use super::labels::{status_index, STATUS_LABELS, STATUS_LABEL_NAMES};
use super::shards::Shards;
use super::text::{Kind, TextFamily};

pub const REQUESTS: (&str, &str, &[&str]) = (
    "wxbroker_requests_total",
    "HTTP requests by listener, route template and status.",
    &["listener", "route", "status"],
);

pub const DURATION: (&str, &str, &[&str]) = (
    "wxbroker_request_duration_seconds",
    "HTTP request handling time by route template.",
    &["route"],
);

/// The upper bounds of the duration histogram: a token read takes tens
/// of microseconds, a forwarded call as long as WeChat takes.
pub const DURATION_BUCKETS: [f64; 11] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25, 1.0,
];

/// Every (listener, route) pair's series, in label order.
#[derive(Default)]
pub struct Requests {
    series: RwLock<BTreeMap<(&'static str, &'static str), Arc<RouteSeries>>>,
}

impl Requests {
    /// The series of `route` on `listener`, made on first use. A caller
    /// on a hot path keeps it rather than asking each time.
    pub fn series(&self, listener: &'static str, route: &'static str) -> Arc<RouteSeries> {
        let known = self
            .series
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&(listener, route))
            .cloned();
        known.unwrap_or_else(|| {
            self.series
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .entry((listener, route))
                .or_default()
                .clone()
        })
    }

    /// [`Requests::series`], shown with its 200 answers and its route's
    /// durations from the start, at 0 until it counts.
    pub fn declared(&self, listener: &'static str, route: &'static str) -> Arc<RouteSeries> {
        let series = self.series(listener, route);
        series.declared.store(true, Ordering::Relaxed);
        series
    }

    /// Writes both families.
    pub fn write(&self, out: &mut Vec<u8>) {
        let (name, help, labels) = REQUESTS;
        let mut requests = TextFamily::new(name, help, Kind::Counter, labels);
        let mut by_status: Vec<usize> = (0..STATUS_LABELS).collect();
        by_status.sort_by_key(|&at| STATUS_LABEL_NAMES[at]);
        let ok = status_index(StatusCode::OK);
        let mut durations: BTreeMap<&'static str, Durations> = BTreeMap::new();
        let series = self
            .series
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (&(listener, route), one) in series.iter() {
            let declared = one.declared.load(Ordering::Relaxed);
            let totals = one.totals();
            for &at in &by_status {
                if totals.statuses[at] > 0 || (declared && at == ok) {
                    let status = STATUS_LABEL_NAMES[at];
                    requests.push(&[listener, route, status], totals.statuses[at]);
                }
            }
            if declared || totals.durations.count > 0 {
                durations.entry(route).or_default().add(&totals.durations);
            }
        }
        drop(series);
        let (name, help, labels) = DURATION;
        let mut histogram = TextFamily::new(name, help, Kind::Histogram, labels);
        for (route, durations) in durations {
            let mut cumulative = [0; DURATION_BUCKETS.len()];
            let mut below = 0;
            for (at, count) in durations.buckets.iter().enumerate() {
                below += count;
                cumulative[at] = below;
            }
            histogram.push_histogram(
                &[route],
                &DURATION_BUCKETS,
                &cumulative,
                durations.nanos as f64 / 1e9,
                durations.count,
            );
        }
        // In name order, as the registry writes its families.
        histogram.finish(out);
        requests.finish(out);
    }
}

/// One (listener, route) pair's answers and their durations.
#[derive(Default)]
pub struct RouteSeries {
    declared: AtomicBool,
    /// Made when the pair first counts.
    cells: OnceLock<Shards<Cell>>,
}

impl RouteSeries {
    /// Counts an answer.
    pub fn count(&self, status: StatusCode) {
        self.cell().statuses[status_index(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an answer, and how long it took.
    pub fn record(&self, status: StatusCode, seconds: f64) {
        let cell = self.cell();
        cell.statuses[status_index(status)].fetch_add(1, Ordering::Relaxed);
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|upper| seconds <= *upper)
            .unwrap_or(DURATION_BUCKETS.len());
        if let Some(count) = cell.buckets.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        cell.observed.fetch_add(1, Ordering::Relaxed);
        cell.nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }

    fn cell(&self) -> &Cell {
        self.cells.get_or_init(Shards::new).local()
    }

    /// The shards added up.
    fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for cell in self.cells.get().into_iter().flat_map(Shards::all) {
            for (total, count) in totals.statuses.iter_mut().zip(&cell.statuses) {
                *total += count.load(Ordering::Relaxed);
            }
            for (total, count) in totals.durations.buckets.iter_mut().zip(&cell.buckets) {
                *total += count.load(Ordering::Relaxed);
            }
            totals.durations.count += cell.observed.load(Ordering::Relaxed);
            totals.durations.nanos += cell.nanos.load(Ordering::Relaxed);
        }
        totals
    }
}

/// One shard's counts of a pair.
#[derive(Default)]
struct Cell {
    /// By [`status_index`].
    statuses: [AtomicU64; STATUS_LABELS],
    /// Answers above the previous bound and at most this one; those above
    /// the last are counted in `observed` only.
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    observed: AtomicU64,
    nanos: AtomicU64,
}

#[derive(Default)]
struct Totals {
    statuses: [u64; STATUS_LABELS],
    durations: Durations,
}

#[derive(Default)]
struct Durations {
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    nanos: u64,
}

impl Durations {
    fn add(&mut self, other: &Durations) {
        for (total, count) in self.buckets.iter_mut().zip(&other.buckets) {
            *total += count;
        }
        self.count += other.count;
        self.nanos += other.nanos;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

    /// The same answers counted here and in the crate's own vectors are
    /// written byte for byte alike (durations that are whole nanoseconds,
    /// so both sums are exact).
    #[test]
    fn the_families_are_written_as_the_crate_writes_them() {
        let registry = Registry::new();
        let (name, help, labels) = REQUESTS;
        let crate_requests = IntCounterVec::new(Opts::new(name, help), labels).unwrap();
        let (name, help, labels) = DURATION;
        let crate_durations = HistogramVec::new(
            HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()),
            labels,
        )
        .unwrap();
        registry.register(Box::new(crate_requests.clone())).unwrap();
        registry
            .register(Box::new(crate_durations.clone()))
            .unwrap();

        let ours = Requests::default();
        let answers: &[(&str, &str, u16, Option<f64>)] = &[
            ("tcp", "/v1/token", 200, Some(0.25)),
            ("tcp", "/v1/token", 200, Some(0.5)),
            ("tcp", "/v1/apps/{app}/token", 200, Some(0.000_03)),
            ("unix", "/v1/token", 503, Some(2.0)),
            ("tcp", "/v1/apps", 404, Some(0.001)),
            ("compat", "cgi-bin/token", 418, Some(0.25)),
            ("metrics", "/metrics", 200, None),
            ("metrics", "/metrics", 200, None),
        ];
        let threads: Vec<_> = answers
            .iter()
            .map(|&(listener, route, status, seconds)| {
                let series = ours.series(listener, route);
                std::thread::spawn(move || {
                    let status = StatusCode::from_u16(status).unwrap();
                    match seconds {
                        Some(seconds) => series.record(status, seconds),
                        None => series.count(status),
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        for &(listener, route, status, seconds) in answers {
            let label = super::super::labels::status_label(StatusCode::from_u16(status).unwrap());
            crate_requests
                .with_label_values(&[listener, route, label])
                .inc();
            if let Some(seconds) = seconds {
                crate_durations.with_label_values(&[route]).observe(seconds);
            }
        }
        // Declared and never used: shown at 0, with an empty histogram.
        ours.declared("remote", "/v1/token");
        crate_requests
            .with_label_values(&["remote", "/v1/token", "200"])
            .inc_by(0);

        let mut expected = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut expected)
            .unwrap();
        let mut written = Vec::new();
        ours.write(&mut written);
        assert_eq!(
            String::from_utf8(written).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }
}
