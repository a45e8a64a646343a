//! SSRF-safe outbound HTTP: every request the worker makes (media downloads, the RAG API,
//! platform APIs) goes through a client from here.
//!
//! A URL a webhook hands us (a media link) may point anywhere, including the edge's admin
//! port on loopback or a cloud metadata service. So a client from here:
//! - resolves host names with its own resolver, which drops loopback, private, link-local
//!   (169.254.169.254 included), CGNAT, unique-local, multicast, unspecified, broadcast,
//!   documentation and other special-purpose addresses (also in their IPv4-mapped, NAT64
//!   and 6to4 forms) and hands the connector only the addresses it checked, so there is no
//!   second lookup that could answer differently;
//! - checks IP-literal URLs (which the connector never resolves) before the request;
//! - re-checks every redirect the same way, at most [`MAX_REDIRECTS`];
//! - ignores `HTTP(S)_PROXY` variables (a proxy would do its own, unchecked, lookup).
//!
//! A per-use `allowed_hosts` list (`[platforms.<name>] allowed_hosts`, `[ai] allowed_hosts`)
//! exempts named hosts, e.g. a local stand-in on `127.0.0.1:PORT`. A refusal is a
//! [`Refused`] error, which the tasks turn into a permanent failure: retrying cannot help.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Most redirects one request follows.
pub const MAX_REDIRECTS: usize = 10;

/// Why a fetch was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused: {0}")]
pub struct Refused(pub String);

/// One `allowed_hosts` entry: a host name or IP address, with an optional port (then only
/// that port is allowed). Written `host`, `host:port`, `[v6]` or `[v6]:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllowedHost {
    /// As the `url` crate normalises it: lowercase, IPv6 in brackets.
    host: String,
    port: Option<u16>,
}

impl AllowedHost {
    pub fn parse(entry: &str) -> Result<AllowedHost, String> {
        let bad = || format!("{entry:?} is not a host, host:port, [ipv6] or [ipv6]:port");
        if entry.is_empty() || entry.contains(['/', '@', '?', '#']) {
            return Err(bad());
        }
        let u = Url::parse(&format!("http://{entry}/")).map_err(|_| bad())?;
        let host = u.host_str().ok_or_else(bad)?.to_string();
        // `url` drops http's default port; "host:80" still means only port 80.
        let port = u.port().or_else(|| entry.ends_with(":80").then_some(80));
        Ok(AllowedHost { host, port })
    }

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        self.host == host && self.port.is_none_or(|p| Some(p) == port)
    }
}

impl std::fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// Parses the entries of an `allowed_hosts` key, pushing a `key[i]: reason` per bad one.
pub fn parse_allowed(
    key: &str,
    entries: &[String],
    errors: &mut Vec<crate::config::ConfigError>,
) -> Vec<AllowedHost> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match AllowedHost::parse(e) {
            Ok(h) => out.push(h),
            Err(m) => errors.push(crate::config::ConfigError::new(format!("{key}[{i}]"), m)),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Why `ip` must not be fetched from, or `None` when it is a public unicast address.
pub fn forbidden_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified (0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) => "private (10.0.0.0/8)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (169, 254, _) => "link-local (169.254.0.0/16, cloud metadata)",
        (100, 64..=127, _) => "carrier-grade NAT (100.64.0.0/10)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast (240.0.0.0/4)",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4).map(|_| "IPv4-mapped address of a forbidden range");
    }
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    // Embedded IPv4 forms a gateway would translate to the IPv4 address.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated): ::a.b.c.d
        return forbidden_v4(embedded(s[6], s[7])).map(|_| "IPv4-compatible forbidden address");
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded(s[6], s[7])).map(|_| "NAT64 of a forbidden address");
    }
    if s[0] == 0x2002 {
        return forbidden_v4(embedded(s[1], s[2])).map(|_| "6to4 of a forbidden address");
    }
    Some(match s[0] {
        x if x & 0xfe00 == 0xfc00 => "unique-local (fc00::/7)",
        x if x & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        x if x & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        x if x & 0xff00 == 0xff00 => "multicast (ff00::/8)",
        0x2001 if s[1] == 0x0db8 => "documentation (2001:db8::/32)",
        0x2001 if s[1] == 0 => "Teredo (2001::/32)",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only (100::/64)",
        _ => return None,
    })
}

/// Checks a URL before a request or redirect: http(s), a host, and, when the host is an IP
/// literal that `allowed` does not name, a public address. Host names are checked when
/// they resolve (see the module doc).
pub fn check_url(url: &Url, allowed: &[AllowedHost]) -> Result<(), Refused> {
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(Refused(format!(
            "{url}: only http and https URLs are fetched"
        )));
    }
    let Some(host) = url.host_str() else {
        return Err(Refused(format!("{url}: no host")));
    };
    let port = url.port_or_known_default();
    if allowed.iter().any(|a| a.matches(host, port)) {
        return Ok(());
    }
    // Named, but for another port.
    let only_as = allowed
        .iter()
        .find(|a| a.host == host)
        .map(|a| format!(" (allowed_hosts allows it only as {a})"))
        .unwrap_or_default();
    let ip = match url.host() {
        Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
        // The resolver would let a named host through on any port: refuse it here.
        _ if !only_as.is_empty() => {
            return Err(Refused(format!("{url}: port not allowed{only_as}")))
        }
        _ => return Ok(()),
    };
    match forbidden_ip(ip) {
        Some(why) => Err(Refused(format!("{url}: {ip} is {why}{only_as}"))),
        None => Ok(()),
    }
}

/// Resolves with the system resolver and keeps only the addresses [`forbidden_ip`] passes,
/// unless the name is in the allowed list.
struct GuardedResolver {
    allowed_names: Vec<String>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let allowed = self.allowed_names.contains(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if allowed {
                return Ok(Box::new(addrs.into_iter()) as Addrs);
            }
            let (ok, bad): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
                .into_iter()
                .partition(|a| forbidden_ip(a.ip()).is_none());
            if ok.is_empty() {
                let why = bad
                    .first()
                    .map(|a| {
                        format!(
                            "{} is {}",
                            a.ip(),
                            forbidden_ip(a.ip()).unwrap_or("forbidden")
                        )
                    })
                    .unwrap_or_else(|| "no address".into());
                let err: Box<dyn std::error::Error + Send + Sync> = Box::new(Refused(format!(
                    "host {host} resolves only to forbidden addresses ({why})"
                )));
                return Err(err);
            }
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

/// A client bound to one allowed-hosts list. Cheap to clone.
#[derive(Clone)]
pub struct SafeClient {
    client: reqwest::Client,
    allowed: Arc<[AllowedHost]>,
}

impl SafeClient {
    pub fn new(allowed: &[AllowedHost]) -> Result<SafeClient, reqwest::Error> {
        let allowed: Arc<[AllowedHost]> = allowed.into();
        let resolver = GuardedResolver {
            allowed_names: allowed.iter().map(|a| a.host.clone()).collect(),
        };
        let for_redirects = allowed.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                let e = Refused(format!("more than {MAX_REDIRECTS} redirects"));
                return attempt.error(e);
            }
            match check_url(attempt.url(), &for_redirects) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .redirect(policy)
            .build()?;
        Ok(SafeClient { client, allowed })
    }

    /// A request to `url` once the URL passed [`check_url`].
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, Refused> {
        let u = Url::parse(url).map_err(|e| Refused(format!("{url:?} is not a URL: {e}")))?;
        check_url(&u, &self.allowed)?;
        Ok(self.client.request(method, u))
    }

    pub fn get(&self, url: &str) -> Result<reqwest::RequestBuilder, Refused> {
        self.request(reqwest::Method::GET, url)
    }

    pub fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, Refused> {
        self.request(reqwest::Method::POST, url)
    }
}

/// The [`Refused`] behind a reqwest error (from the resolver or the redirect policy).
pub fn refused_in(e: &reqwest::Error) -> Option<Refused> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refused>() {
            return Some(r.clone());
        }
        cur = err.source();
    }
    None
}

/// The worker's clients, one per allowed-hosts list, built on first use and shared (each
/// keeps its own connection pool).
#[derive(Default)]
pub struct SafeHttp {
    clients: Mutex<HashMap<Vec<AllowedHost>, SafeClient>>,
}

impl SafeHttp {
    pub fn client(&self, allowed: &[AllowedHost]) -> Result<SafeClient, reqwest::Error> {
        // A poisoned map only means a panic mid-insert elsewhere; the entries are whole.
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(allowed) {
            return Ok(c.clone());
        }
        let c = SafeClient::new(allowed)?;
        map.insert(allowed.to_vec(), c.clone());
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(s: &str) -> bool {
        forbidden_ip(s.parse().unwrap()).is_some() // unwrap: test-only
    }

    #[test]
    fn special_purpose_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:0001::",
            "2001:db8::1",
        ] {
            assert!(forbidden(ip), "{ip} must be forbidden");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!forbidden(ip), "{ip} is public");
        }
    }

    #[test]
    fn urls_are_checked_against_the_allowed_list() {
        let allowed = vec![AllowedHost::parse("127.0.0.1:9000").unwrap()]; // unwrap: test-only
        let ok = |u: &str| check_url(&Url::parse(u).unwrap(), &allowed).is_ok(); // unwrap: test-only
        assert!(ok("http://127.0.0.1:9000/x"));
        assert!(!ok("http://127.0.0.1:9180/metrics"));
        assert!(!ok("http://[::1]:9000/"));
        assert!(!ok("http://0x7f000001/"));
        assert!(!ok("http://169.254.169.254/latest/meta-data/"));
        assert!(!ok("file:///etc/passwd"));
        assert!(ok("https://example.com/a.jpg"));
        assert!(AllowedHost::parse("http://x/").is_err());
        assert!(AllowedHost::parse("").is_err());
        assert_eq!(
            AllowedHost::parse("[::1]:80").unwrap().to_string(), // unwrap: test-only
            "[::1]:80"
        );
    }
}
