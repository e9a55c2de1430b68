//! A dependency-free SVG plot: latency over time (scatter) and delivery per node (bars).

use std::fmt::Write;

use crate::report::Report;

const W: f64 = 900.0;
const H: f64 = 300.0;
const PAD: f64 = 50.0;

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
        r#"<text x="{PAD}" y="{}">{}: publish-to-deliver latency (ms) over time (s); grey = baseline</text>"#,
        PAD - 15.0,
        r.scenario
    );
    axis(&mut s, PAD, PAD, H, tmax, lmax);
    if let Some(b) = baseline {
        for p in &b.samples {
            let _ = write!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="1.5" fill="#bbb"/>"##,
                x(p.sent_s),
                y(p.latency_ms)
            );
        }
    }
    for p in &r.samples {
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="1.5" fill="#1f77b4"/>"##,
            x(p.sent_s),
            y(p.latency_ms)
        );
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
