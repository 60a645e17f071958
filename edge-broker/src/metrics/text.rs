//! A minimal writer for the Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;

/// Appends metric families to a text buffer in the Prometheus exposition format.
#[derive(Debug, Default)]
pub struct PromText {
    out: String,
}

/// One label pair.
pub type Label<'a> = (&'a str, &'a str);

/// One histogram of a family: its labels, per-bucket counts (not cumulative, +Inf last) and
/// the sum of its observations.
pub type HistogramSeries<'a> = (&'a [Label<'a>], &'a [u64], f64);

impl PromText {
    /// An empty document.
    pub fn new() -> Self {
        PromText::default()
    }

    /// The finished document.
    pub fn finish(self) -> String {
        self.out
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[Label<'_>], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    /// A counter family with one sample per label set (name should end in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(&[Label<'_>], u64)]) {
        self.header(name, help, "counter");
        for (labels, value) in samples {
            self.sample(name, labels, *value as f64);
        }
    }

    /// A counter family of one unlabelled sample with a fractional value (CPU seconds).
    pub fn counter_f64(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, help, "counter");
        self.sample(name, &[], value);
    }

    /// A gauge family with one sample per label set.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(&[Label<'_>], f64)]) {
        self.header(name, help, "gauge");
        for (labels, value) in samples {
            self.sample(name, labels, *value);
        }
    }

    /// A histogram from cumulative-ready bucket counts (`counts[i]` = observations ≤ `bounds[i]`
    /// but > `bounds[i-1]`; one extra count for +Inf), plus the sum of observations.
    pub fn histogram(&mut self, name: &str, help: &str, bounds: &[f64], counts: &[u64], sum: f64) {
        self.histograms(name, help, bounds, &[(&[], counts, sum)]);
    }

    /// A histogram family with one histogram per label set (`counts` and `sum` as in
    /// [`PromText::histogram`]; every one has the same `bounds`).
    pub fn histograms(
        &mut self,
        name: &str,
        help: &str,
        bounds: &[f64],
        series: &[HistogramSeries<'_>],
    ) {
        self.header(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        for (labels, counts, sum) in series {
            let mut cumulative = 0u64;
            let with_le = |le: &str| -> Vec<(String, String)> {
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .chain([("le".to_owned(), le.to_owned())])
                    .collect()
            };
            let les: Vec<String> = bounds
                .iter()
                .map(|b| format_value(*b))
                .chain(["+Inf".to_owned()])
                .collect();
            for (i, le) in les.iter().enumerate() {
                cumulative += counts.get(i).copied().unwrap_or(0);
                let pairs = with_le(le);
                let pairs: Vec<Label<'_>> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                self.sample(&bucket, &pairs, cumulative as f64);
            }
            self.sample(&format!("{name}_sum"), labels, *sum);
            self.sample(&format!("{name}_count"), labels, cumulative as f64);
        }
    }
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_with_labels() {
        let mut text = PromText::new();
        text.counter(
            "edge_messages_in_total",
            "Messages received.",
            &[(&[("protocol", "mqtt"), ("qos", "1")], 42)],
        );
        text.gauge("edge_log_bytes", "Bytes on disk.", &[(&[], 1.5)]);
        let out = text.finish();
        assert!(out.contains("# TYPE edge_messages_in_total counter\n"));
        assert!(out.contains("edge_messages_in_total{protocol=\"mqtt\",qos=\"1\"} 42\n"));
        assert!(out.contains("edge_log_bytes 1.5\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let mut text = PromText::new();
        text.histogram("h_seconds", "h", &[0.001, 0.01], &[2, 3, 1], 0.5);
        let out = text.finish();
        assert!(out.contains("h_seconds_bucket{le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("h_seconds_bucket{le=\"0.01\"} 5\n"), "{out}");
        assert!(out.contains("h_seconds_bucket{le=\"+Inf\"} 6\n"), "{out}");
        assert!(out.contains("h_seconds_count 6\n"), "{out}");
    }

    #[test]
    fn labelled_histograms_share_one_header() {
        let mut text = PromText::new();
        text.histograms(
            "a_seconds",
            "a",
            &[0.1],
            &[
                (&[("protocol", "mqtt")], &[1, 2], 0.3),
                (&[("protocol", "nats")], &[0, 1], 0.2),
            ],
        );
        let out = text.finish();
        assert_eq!(out.matches("# TYPE a_seconds histogram").count(), 1);
        assert!(
            out.contains("a_seconds_bucket{protocol=\"mqtt\",le=\"0.1\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("a_seconds_bucket{protocol=\"mqtt\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("a_seconds_count{protocol=\"nats\"} 1\n"),
            "{out}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut text = PromText::new();
        text.gauge("g", "g", &[(&[("topic", "a\"b\\c\nd")], 1.0)]);
        assert!(text.finish().contains(r#"g{topic="a\"b\\c\nd"} 1"#));
    }
}
