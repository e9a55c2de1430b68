//! A dependency-free SVG plot: latency over time (scatter, with p50 and p99 lines) and
//! delivery per node (bars).
//!
//! Runs at scale hold millions of (message, receiver) samples; drawing each made SVGs of
//! 10-100 MB. Samples are binned to [`CELL`]-pixel cells instead, one dot per occupied cell
//! (outliers stay visible, density does not), and the p50/p99 lines say where the mass is.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::report::{Report, Sample};

const W: f64 = 900.0;
const H: f64 = 300.0;
const PAD: f64 = 50.0;
/// Side of a scatter cell, in pixels.
const CELL: f64 = 2.0;
/// Time bins of the percentile lines.
const BINS: usize = 100;

/// Renders the report (and the baseline's latency, in grey, when given).
pub fn render(r: &Report, baseline: Option<&Report>) -> String {
    let mut s = String::new();
    let total_h = 2.0 * H + 3.0 * PAD;
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{total_h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    // Latency over time.
    let all = r
        .samples
        .iter()
        .chain(baseline.iter().flat_map(|b| b.samples.iter()));
    let (mut tmax, mut lmax) = (1e-9f64, 1e-9f64);
    for x in all {
        tmax = tmax.max(x.sent_s);
        lmax = lmax.max(x.latency_ms);
    }
    let x = |t: f64| PAD + (t / tmax) * (W - 2.0 * PAD);
    let y = |l: f64| PAD + H - (l / lmax) * H;
    let _ = write!(
        s,
        r#"<text x="{PAD}" y="{}">{}: publish-to-deliver latency (ms) over time (s); grey = baseline; lines: p50 (dark), p99 (orange)</text>"#,
        PAD - 15.0,
        r.scenario
    );
    axis(&mut s, PAD, PAD, H, tmax, lmax);
    if let Some(b) = baseline {
        dots(&mut s, &b.samples, &x, &y, "#bbb");
    }
    dots(&mut s, &r.samples, &x, &y, "#1f77b4");
    for (q, colour) in [(0.5, "#08306b"), (0.99, "#ff7f0e")] {
        let points: Vec<String> = percentile_line(&r.samples, tmax, q)
            .into_iter()
            .map(|(t, l)| format!("{:.1},{:.1}", x(t), y(l)))
            .collect();
        if points.len() > 1 {
            let _ = write!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#,
                points.join(" ")
            );
        }
    }
    // Delivery per node.
    let top = 2.0 * PAD + H;
    let _ = write!(
        s,
        r#"<text x="{PAD}" y="{}">live delivery ratio per node (journal catch-up not included)</text>"#,
        top + 5.0
    );
    let n = r.per_node_delivery.len().max(1) as f64;
    let bw = (W - 2.0 * PAD) / n;
    for (i, d) in r.per_node_delivery.iter().enumerate() {
        let h = d * (H - 20.0);
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"##,
            PAD + i as f64 * bw,
            top + 20.0 + (H - 20.0) - h,
            (bw - 1.0).max(0.5),
            h,
            if *d >= 1.0 { "#2ca02c" } else { "#d62728" }
        );
    }
    s.push_str("</svg>\n");
    s
}

/// One dot per occupied cell.
fn dots(
    s: &mut String,
    samples: &[Sample],
    x: &impl Fn(f64) -> f64,
    y: &impl Fn(f64) -> f64,
    fill: &str,
) {
    let cells: BTreeSet<(i64, i64)> = samples
        .iter()
        .map(|p| {
            (
                (x(p.sent_s) / CELL).round() as i64,
                (y(p.latency_ms) / CELL).round() as i64,
            )
        })
        .collect();
    for (cx, cy) in cells {
        let _ = write!(
            s,
            r##"<circle cx="{:.0}" cy="{:.0}" r="1.5" fill="{fill}"/>"##,
            cx as f64 * CELL,
            cy as f64 * CELL
        );
    }
}

/// The `q` quantile of latency in each of [`BINS`] time bins that has samples, at the
/// bin's middle: (time s, latency ms).
fn percentile_line(samples: &[Sample], tmax: f64, q: f64) -> Vec<(f64, f64)> {
    let mut bins: Vec<Vec<f64>> = vec![Vec::new(); BINS];
    for p in samples {
        let i = ((p.sent_s / tmax) * BINS as f64) as usize;
        bins[i.min(BINS - 1)].push(p.latency_ms);
    }
    bins.into_iter()
        .enumerate()
        .filter(|(_, v)| !v.is_empty())
        .map(|(i, mut v)| {
            v.sort_by(f64::total_cmp);
            let at = ((v.len() - 1) as f64 * q).round() as usize;
            ((i as f64 + 0.5) * tmax / BINS as f64, v[at])
        })
        .collect()
}

fn axis(s: &mut String, x0: f64, y0: f64, h: f64, tmax: f64, lmax: f64) {
    let _ = write!(
        s,
        r#"<line x1="{x0}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{}" stroke="black"/>"#,
        y0 + h,
        W - PAD,
        y0 + h,
        y0 + h
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="{}">{tmax:.0} s</text><text x="2" y="{}">{lmax:.0} ms</text>"#,
        W - PAD - 20.0,
        y0 + h + 15.0,
        y0 + 10.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: usize) -> Sample {
        Sample {
            sent_s: (i % 30_000) as f64 / 1000.0,
            // Spread evenly over 0..500 ms, independently of the time.
            latency_ms: (((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 5000) as f64
                / 10.0,
            node: i % 200,
        }
    }

    #[test]
    fn millions_of_samples_make_a_small_plot() {
        let samples: Vec<Sample> = (0..2_000_000).map(sample).collect();
        let lines = percentile_line(&samples, 30.0, 0.99);
        assert_eq!(lines.len(), BINS);
        // Latencies are spread evenly over 0..500 ms in every bin.
        assert!(
            lines.iter().all(|(_, l)| (485.0..=500.0).contains(l)),
            "{lines:?}"
        );
        let p50 = percentile_line(&samples, 30.0, 0.5);
        assert!(
            p50.iter().all(|(_, l)| (235.0..=265.0).contains(l)),
            "{p50:?}"
        );
        let mut s = String::new();
        let x = |t: f64| PAD + (t / 30.0) * (W - 2.0 * PAD);
        let y = |l: f64| PAD + H - (l / 500.0) * H;
        dots(&mut s, &samples, &x, &y, "#000");
        let circles = s.matches("<circle").count();
        // At most one dot per 2x2-pixel cell of the 800x300 plot.
        assert!(circles > 1000 && circles <= 401 * 151, "{circles} dots");
        assert!(s.len() < 4 * 1024 * 1024, "{} bytes", s.len());
    }

    #[test]
    fn a_lone_outlier_is_still_drawn() {
        let mut samples: Vec<Sample> = (0..10_000).map(|_| sample(0)).collect();
        samples.push(Sample {
            sent_s: 29.0,
            latency_ms: 480.0,
            node: 3,
        });
        let mut s = String::new();
        dots(&mut s, &samples, &|t| t * 10.0, &|l| l, "#000");
        assert_eq!(s.matches("<circle").count(), 2);
    }
}
