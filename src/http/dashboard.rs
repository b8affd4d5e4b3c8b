//! The HTML dashboard at `/`, with the figures of Eureka's status page: lease expiration,
//! renewal threshold and last-minute renewals with the self-preservation banner, replicas,
//! and the registered instances grouped by application and status. `/v1/status` is its JSON
//! twin.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State;
use axum::response::Html;

use super::AppState;
use crate::core::model::Status;

/// app → status → [(instance id, status page URL)].
type Groups = BTreeMap<String, BTreeMap<Status, Vec<(String, Option<String>)>>>;

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

fn uptime(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let hm = format!("{:02}:{:02}", rem / 3600, (rem % 3600) / 60);
    match days {
        0 => hm,
        1 => format!("1 day {hm}"),
        d => format!("{d} days {hm}"),
    }
}

/// `GET /`.
pub async fn page(State(s): State<AppState>) -> Html<String> {
    let p = s.registry.preservation();
    let groups: Groups = s.registry.read(|st| {
        let mut g = Groups::new();
        for (app, instances) in st.apps() {
            for (id, e) in instances {
                g.entry(app.clone())
                    .or_default()
                    .entry(e.info.status)
                    .or_default()
                    .push((id.clone(), e.info.status_page_url.clone()));
            }
        }
        g
    });
    let total: usize = groups.values().flat_map(|m| m.values()).map(Vec::len).sum();
    let mut h = String::with_capacity(4096);
    h.push_str(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>synod</title><style>\
         body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}\
         .banner{color:#fff;background:#c00;padding:8px;margin:8px 0}.down{color:#c00;font-size:1.2em}\
         </style></head><body><h1>synod</h1><h2>System Status</h2><table>",
    );
    let row = |h: &mut String, k: &str, v: &str| {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    };
    row(&mut h, "Node id", &s.node_id.to_string());
    row(&mut h, "Replication", s.replicator.name());
    row(&mut h, "Role", s.replicator.role().as_str());
    row(&mut h, "Uptime", &uptime(s.started.elapsed().as_secs()));
    row(&mut h, "Lease expiration enabled", &(!p.active).to_string());
    row(&mut h, "Self-preservation enabled", &p.enabled.to_string());
    row(&mut h, "Expected renews (per min)", &format!("{:.1}", p.expected_renews_per_min));
    row(&mut h, "Renews threshold", &p.threshold.to_string());
    row(&mut h, "Renews (last min)", &p.renews_last_min.to_string());
    row(&mut h, "Instances silent past the window", &p.silent_instances.to_string());
    h.push_str("</table>");
    let below = p.renews_last_min < p.threshold;
    let banner = match (below, p.enabled) {
        (true, true) => Some(
            "EMERGENCY: renewals are below the threshold, so expired instances are not being evicted \
             (self-preservation). Instances shown UP may be gone.",
        ),
        (true, false) => Some(
            "Renewals are below the threshold and self-preservation is off: expired instances are evicted \
             even if the cause is a network problem.",
        ),
        (false, false) => Some("Self-preservation is off: eviction does not protect against network problems."),
        (false, true) => None,
    };
    if let Some(b) = banner {
        let _ = write!(h, "<div class=\"banner\">{}</div>", esc(b));
    }
    h.push_str("<h2>Replicas</h2>");
    if s.peers.is_empty() {
        h.push_str("<p>none (single node)</p>");
    } else {
        h.push_str("<ul>");
        for (id, url) in s.peers.iter() {
            let _ = write!(h, "<li>{} — {}</li>", id, esc(url));
        }
        h.push_str("</ul>");
    }
    let _ = write!(h, "<h2>Instances currently registered ({total})</h2>");
    if groups.is_empty() {
        h.push_str("<p>No instances available</p>");
    } else {
        h.push_str("<table><tr><th>Application</th><th>Status</th></tr>");
        for (app, by_status) in &groups {
            let _ = write!(h, "<tr><td><b>{}</b></td><td>", esc(app));
            for (status, ids) in by_status {
                let class = if *status == Status::Up { "" } else { " class=\"down\"" };
                let _ = write!(h, "<div{class}>{} ({}) - ", status.as_str(), ids.len());
                for (id, url) in ids {
                    match url.as_deref().filter(|u| u.starts_with("http")) {
                        Some(u) => {
                            let _ = write!(h, "<a href=\"{}\">{}</a> ", esc(u), esc(id));
                        }
                        None => {
                            let _ = write!(h, "{} ", esc(id));
                        }
                    }
                }
                h.push_str("</div>");
            }
            h.push_str("</td></tr>");
        }
        h.push_str("</table>");
    }
    h.push_str("<p><a href=\"/v1/status\">/v1/status</a> (JSON)</p></body></html>");
    Html(h)
}
