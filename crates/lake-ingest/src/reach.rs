//! Where an HTTP source may connect: a server that answers with a redirect must not send lake
//! into this machine or the network it sits in (a cloud's metadata endpoint at
//! 169.254.169.254 hands out credentials, which would land in raw/).
//!
//! Unless the source's own URL is on such an address (a server on this machine, in tests or on
//! a private network), or it sets `allow_private_redirects = true`, connections to loopback,
//! link-local, private, shared and unique-local addresses are refused: a redirect to such an
//! address literal by the redirect policy, and a name by the resolver, which drops those
//! addresses from every lookup (so a name that resolves to a public address when checked and
//! to 127.0.0.1 when connected is caught too: the check is the lookup that is connected to).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// True for addresses of this machine or of a private network.
pub(crate) fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [o0, o1, ..] = a.octets();
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || o0 == 0
                // Carrier-grade NAT, 100.64.0.0/10.
                || (o0 == 100 && (64..128).contains(&o1))
        }
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            a.is_loopback()
                || a.is_unspecified()
                // Unique local fc00::/7 and link-local fe80::/10.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

/// A URL host (`example.com`, `127.0.0.1`, `[::1]`) as an address, when it is one.
fn literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether one source's requests may reach private addresses: set once its configured URL is
/// known to be on one (or by `allow_private_redirects`).
#[derive(Debug, Clone)]
pub(crate) struct Reach {
    private_ok: Arc<AtomicBool>,
    always: bool,
}

impl Reach {
    pub(crate) fn new(allow_private_redirects: bool) -> Self {
        Self {
            private_ok: Arc::new(AtomicBool::new(allow_private_redirects)),
            always: allow_private_redirects,
        }
    }

    fn private_ok(&self) -> bool {
        self.always || self.private_ok.load(Ordering::SeqCst)
    }

    /// Note the configured URL of a request about to be made: when its host is a private
    /// address, `localhost`, or a name that resolves to one, the source lives there, and
    /// redirects within that network are its own.
    pub(crate) async fn configured(&self, url: &reqwest::Url) {
        if self.always {
            return;
        }
        let Some(host) = url.host_str() else { return };
        let private = match literal(host) {
            Some(ip) => is_private(ip),
            None if host.eq_ignore_ascii_case("localhost") => true,
            None => tokio::net::lookup_host((host, url.port_or_known_default().unwrap_or(443)))
                .await
                .map(|mut addrs| addrs.any(|a| is_private(a.ip())))
                .unwrap_or(false),
        };
        self.private_ok.store(private, Ordering::SeqCst);
    }

    /// The refusal of a redirect to `url`, if it is refused: an address literal on a private
    /// network when the source's own URL is not (names are checked as they are resolved).
    pub(crate) fn refuse_redirect(&self, url: &reqwest::Url) -> Option<String> {
        let ip = url.host_str().and_then(literal)?;
        (is_private(ip) && !self.private_ok()).then(|| {
            format!(
                "refused a redirect to {}: it is an address of this machine or a private network, and the source's URL is not (set allow_private_redirects = true to follow it)",
                url.origin().ascii_serialization()
            )
        })
    }

    /// `addrs` of `name`, without the private ones unless they are allowed; an error when
    /// nothing is left.
    fn filter(
        &self,
        name: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        if self.private_ok() {
            return Ok(addrs);
        }
        let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| !is_private(a.ip())).collect();
        if public.is_empty() {
            return Err(format!(
                "refused to connect to {name}: it resolves to an address of this machine or a private network, and the source's URL is not on one (set allow_private_redirects = true to allow it)"
            )
            .into());
        }
        Ok(public)
    }
}

impl reqwest::dns::Resolve for Reach {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let reach = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = reach.filter(&host, addrs)?;
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_known() {
        for p in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_private(p.parse().unwrap()), "{p}");
        }
        for p in [
            "8.8.8.8",
            "203.0.113.7",
            "100.128.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_private(p.parse().unwrap()), "{p}");
        }
    }

    #[tokio::test]
    async fn a_public_source_is_kept_out_of_private_networks() {
        let reach = Reach::new(false);
        reach
            .configured(&"https://203.0.113.7/api".parse().unwrap())
            .await;
        let meta: reqwest::Url = "http://169.254.169.254/latest/meta-data/".parse().unwrap();
        let refusal = reach.refuse_redirect(&meta).expect("refused");
        assert!(refusal.contains("allow_private_redirects"), "{refusal}");
        assert!(
            reach
                .refuse_redirect(&"http://[::1]:9/".parse().unwrap())
                .is_some()
        );
        assert!(
            reach
                .refuse_redirect(&"https://198.51.100.1/x".parse().unwrap())
                .is_none()
        );
        let addrs = vec![
            "127.0.0.1:80".parse().unwrap(),
            "198.51.100.1:80".parse().unwrap(),
        ];
        assert_eq!(
            reach.filter("rebinding.example", addrs).unwrap(),
            vec!["198.51.100.1:80".parse::<SocketAddr>().unwrap()]
        );
        let only_local = vec!["127.0.0.1:80".parse().unwrap()];
        assert!(reach.filter("rebinding.example", only_local).is_err());
        // A source on this machine may be redirected within it; and the key allows it.
        let local = Reach::new(false);
        local
            .configured(&"http://127.0.0.1:8080/".parse().unwrap())
            .await;
        assert!(local.refuse_redirect(&meta).is_none());
        let allowed = Reach::new(true);
        allowed
            .configured(&"https://203.0.113.7/api".parse().unwrap())
            .await;
        assert!(allowed.refuse_redirect(&meta).is_none());
    }
}
