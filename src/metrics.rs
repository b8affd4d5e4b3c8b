//! Prometheus exposition: the lock-free histogram the hot paths record into, and
//! [`Exposition`], through which every layer writes its figures at scrape time. The text
//! format itself is `prometheus-client`'s (OpenMetrics); the values come from the counters
//! each component already keeps, so a scrape costs nothing between scrapes.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bounds (in nanoseconds) for request and disk latencies: 100 µs to 10 s.
pub const LATENCY_BOUNDS_NS: &[u64] = &[
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Bounds for sizes counted in items (group commits, batches): 1 to 1024.
pub const COUNT_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A histogram of `u64` observations in atomics: recording is a few relaxed adds, no lock,
/// so request paths can afford it (`prometheus-client`'s own takes a lock per observation).
/// A scrape may see an observation's bucket before its sum; Prometheus tolerates that.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Per bucket (not cumulative); the last one counts observations above every bound.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    /// Multiplier from the recorded unit to the exposed one (1e-9 for nanoseconds → seconds).
    scale: f64,
}

impl Histogram {
    /// A histogram with `bounds` (ascending), exposing values multiplied by `scale`.
    pub fn new(bounds: &'static [u64], scale: f64) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// A histogram holding `counts` per bucket (one per bound, then one above them) and
    /// `sum`: figures gathered elsewhere, for exposition.
    pub fn from_counts(bounds: &'static [u64], scale: f64, counts: &[u64], sum: u64) -> Histogram {
        let h = Histogram::new(bounds, scale);
        for (b, n) in h.buckets.iter().zip(counts) {
            b.store(*n, Ordering::Relaxed);
        }
        h.sum.store(sum, Ordering::Relaxed);
        h
    }

    /// A latency histogram exposed in seconds.
    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_BOUNDS_NS, 1e-9)
    }

    /// A histogram of item counts.
    pub fn counts() -> Histogram {
        Histogram::new(COUNT_BOUNDS, 1.0)
    }

    /// Records one observation.
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Records a duration (for histograms made by [`Histogram::latency`]).
    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// `(sum, count, buckets)` in the exposed unit; the counts per bucket are not
    /// cumulative (the encoder adds them up).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            total += n;
            // The encoder writes `f64::MAX` as `+Inf`.
            let bound = self.bounds.get(i).map_or(f64::MAX, |b| *b as f64 * self.scale);
            buckets.push((bound, n));
        }
        (self.sum.load(Ordering::Relaxed) as f64 * self.scale, total, buckets)
    }
}

/// Writes metric families at scrape time. Names carry the `synod_` prefix and their unit;
/// counters are named without `_total`, which the encoder appends.
pub struct Exposition<'a> {
    enc: DescriptorEncoder<'a>,
}

impl Exposition<'_> {
    /// One unlabelled counter.
    pub fn counter(&mut self, name: &str, help: &str, v: u64) -> fmt::Result {
        let mut m = self.enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        m.encode_counter::<NoLabelSet, _, f64>(&v, None)
    }

    /// A counter family, one sample per label set.
    pub fn counters<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, u64)>,
    ) -> fmt::Result {
        let mut m = self.enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in samples {
            m.encode_family(&labels)?.encode_counter::<NoLabelSet, _, f64>(&v, None)?;
        }
        Ok(())
    }

    /// One unlabelled gauge.
    pub fn gauge(&mut self, name: &str, help: &str, v: impl EncodeGaugeValue) -> fmt::Result {
        self.enc.encode_descriptor(name, help, None, MetricType::Gauge)?.encode_gauge(&v)
    }

    /// A gauge family, one sample per label set.
    pub fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, V)>,
    ) -> fmt::Result {
        let mut m = self.enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in samples {
            m.encode_family(&labels)?.encode_gauge(&v)?;
        }
        Ok(())
    }

    /// One unlabelled histogram.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) -> fmt::Result {
        let (sum, count, buckets) = h.snapshot();
        let mut m = self.enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
        m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    /// A histogram family, one histogram per label set.
    pub fn histograms<'h, L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, &'h Histogram)>,
    ) -> fmt::Result {
        let mut m = self.enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, h) in samples {
            let (sum, count, buckets) = h.snapshot();
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

/// Adapts a closure to `prometheus-client`'s collector interface.
struct Collect<F>(F);

impl<F> fmt::Debug for Collect<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Collect")
    }
}

impl<F: Fn(&mut Exposition<'_>) -> fmt::Result + Send + Sync + 'static> Collector for Collect<F> {
    fn encode(&self, enc: DescriptorEncoder<'_>) -> fmt::Result {
        (self.0)(&mut Exposition { enc })
    }
}

/// Renders what `collect` writes as OpenMetrics text (ending in `# EOF`).
pub fn render(collect: impl Fn(&mut Exposition<'_>) -> fmt::Result + Send + Sync + 'static) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Collect(collect)));
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String fails only if a collector returns an error, which ours do only
    // when the encoder itself does.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "metrics could not be encoded");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_scaled_and_exposed_cumulatively() {
        let h = std::sync::Arc::new(Histogram::latency());
        h.observe_duration(Duration::from_micros(50));
        h.observe_duration(Duration::from_millis(3));
        h.observe_duration(Duration::from_secs(60));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 60.003_05).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.0001, 1));
        assert_eq!(buckets.last().unwrap(), &(f64::MAX, 1));
        let text = render(move |e| e.histogram("synod_t_seconds", "T.", &h));
        for want in [
            "{le=\"0.0001\"} 1\n",
            "{le=\"0.0025\"} 1\n",
            "{le=\"0.005\"} 2\n",
            "{le=\"10.0\"} 2\n",
            "{le=\"+Inf\"} 3\n",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
    }

    #[test]
    fn renders_families_with_labels() {
        let h = std::sync::Arc::new(Histogram::counts());
        h.observe(3);
        let text = render(move |e| {
            e.counter("synod_things", "Things.", 7)?;
            e.gauges("synod_level", "Levels.", [([("app", "A")], 1i64), ([("app", "B")], 2)])?;
            e.histogram("synod_sizes", "Sizes.", &h)
        });
        assert!(text.contains("# TYPE synod_things counter\nsynod_things_total 7\n"), "{text}");
        assert!(text.contains("synod_level{app=\"B\"} 2\n"), "{text}");
        assert!(text.contains("synod_sizes_bucket{le=\"4.0\"} 1\n"), "{text}");
        assert!(text.contains("synod_sizes_count 1\n"), "{text}");
        assert!(text.contains("synod_sizes_bucket{le=\"+Inf\"} 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
