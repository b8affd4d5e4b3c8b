//! The server list: same-zone servers first, failing servers skipped for a while.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A registry server.
#[derive(Debug, Clone)]
pub struct Server {
    /// Eureka service URL, e.g. `http://10.0.0.1:8761/eureka`.
    pub url: String,
    /// Its zone, if known.
    pub zone: Option<String>,
}

impl Server {
    /// A server in no particular zone.
    pub fn new(url: &str) -> Server {
        Server { url: url.trim_end_matches('/').to_string(), zone: None }
    }

    /// A server in `zone`.
    pub fn in_zone(url: &str, zone: &str) -> Server {
        Server { zone: Some(zone.to_string()), ..Server::new(url) }
    }
}

pub(crate) struct ServerList {
    /// In preference order.
    servers: Vec<Server>,
    /// When each server may be tried again after a failure.
    skip_until: Mutex<Vec<Option<Instant>>>,
    backoff: Duration,
}

impl ServerList {
    pub(crate) fn new(mut servers: Vec<Server>, zone: Option<&str>, backoff: Duration) -> ServerList {
        // Stable: same-zone servers first, each group in the given order.
        servers.sort_by_key(|s| zone.is_none() || s.zone.as_deref() != zone);
        let n = servers.len();
        ServerList { servers, skip_until: Mutex::new(vec![None; n]), backoff }
    }

    /// Servers to try now, in order: the preferred healthy ones, then those in back-off
    /// (a request must not fail only because every server failed once).
    pub(crate) fn order(&self) -> Vec<(usize, String)> {
        let now = Instant::now();
        let skip = self.skip_until.lock();
        let mut healthy = Vec::new();
        let mut resting = Vec::new();
        for (i, s) in self.servers.iter().enumerate() {
            if skip[i].is_some_and(|t| t > now) {
                resting.push((i, s.url.clone()));
            } else {
                healthy.push((i, s.url.clone()));
            }
        }
        healthy.extend(resting);
        healthy
    }

    pub(crate) fn failed(&self, i: usize) {
        if let Some(slot) = self.skip_until.lock().get_mut(i) {
            *slot = Some(Instant::now() + self.backoff);
        }
    }

    pub(crate) fn succeeded(&self, i: usize) {
        if let Some(slot) = self.skip_until.lock().get_mut(i) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str, zone: &str) -> Server {
        Server { url: url.into(), zone: Some(zone.into()) }
    }

    #[test]
    fn same_zone_first_and_failing_servers_last_until_their_backoff_ends() {
        let list = ServerList::new(
            vec![server("http://a", "z1"), server("http://b", "z2"), server("http://c", "z2")],
            Some("z2"),
            Duration::from_millis(50),
        );
        let urls = |l: &ServerList| l.order().into_iter().map(|(_, u)| u).collect::<Vec<_>>();
        assert_eq!(urls(&list), ["http://b", "http://c", "http://a"]);
        let (first, _) = list.order()[0].clone();
        list.failed(first);
        assert_eq!(urls(&list), ["http://c", "http://a", "http://b"]);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(urls(&list), ["http://b", "http://c", "http://a"]);
        list.failed(first);
        list.succeeded(first);
        assert_eq!(urls(&list)[0], "http://b");
    }
}
