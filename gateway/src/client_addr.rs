//! Who the client is on the network: the TCP peer, or, when that peer is a trusted proxy, the
//! address the proxies recorded in the one header they maintain: `X-Forwarded-For` (the
//! default) or RFC 7239 `Forwarded` (`GATEWAY_FORWARDED_HEADER`).
//!
//! Only that one header: a proxy appends to the header it maintains and passes any other through
//! untouched, so reading the other one (or falling back to it) would believe whatever the client
//! wrote there.
//!
//! Why only behind a trusted proxy: anyone can send those headers, so believing them from any
//! peer would let every client choose its own address. The chain is read from the right, the hop
//! nearest to us, and the first address that is not itself a trusted proxy is the client; an
//! entry that is no IP address (junk, `unknown`, an obfuscated name) ends the trust in the
//! header, which is then ignored.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, header};
use ipnet::IpNet;

/// The header the trusted proxies maintain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardedHeader {
    XForwardedFor,
    Forwarded,
}

/// The client's address as the gateway tells the services; `None` without a TCP peer (a router
/// driven in-process, as most tests do).
pub fn resolve(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: ForwardedHeader,
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    if !is_trusted(peer, trusted) {
        return Some(peer);
    }
    let hops = match header {
        ForwardedHeader::XForwardedFor => hops(headers, "x-forwarded-for", Some),
        ForwardedHeader::Forwarded => hops(headers, header::FORWARDED, forwarded_for),
    };
    client_of(&hops, trusted).or(Some(peer))
}

/// Whether the client reached us over TLS. The gateway serves plain HTTP, so only a trusted proxy
/// that terminated TLS can say so, in the header family it maintains: the `proto=` of the
/// client's own `Forwarded` element, or the right-most `X-Forwarded-Proto` value (the nearest
/// proxy's). Whatever an untrusted peer claims is ignored.
pub fn forwarded_https(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: ForwardedHeader,
) -> bool {
    let Some(peer) = peer.map(|p| p.to_canonical()) else {
        return false;
    };
    if !is_trusted(peer, trusted) {
        return false;
    }
    let proto = match header {
        ForwardedHeader::XForwardedFor => hops(headers, "x-forwarded-proto", Some)
            .last()
            .copied()
            .flatten(),
        ForwardedHeader::Forwarded => {
            client_element(headers, trusted).and_then(|element| parameter(element, "proto"))
        }
    };
    proto.is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The `Forwarded` element that names the client: the same hop [`resolve`] picks.
fn client_element<'a>(headers: &'a HeaderMap, trusted: &[IpNet]) -> Option<&'a str> {
    let elements: Vec<&str> = headers
        .get_all(header::FORWARDED)
        .iter()
        .flat_map(|line| line.to_str().unwrap_or("\u{fffd}").split(','))
        .map(str::trim)
        .collect();
    let mut furthest = None;
    for element in elements.iter().rev() {
        let ip = parse_ip(forwarded_for(element)?)?;
        if !is_trusted(ip, trusted) {
            return Some(element);
        }
        furthest = Some(*element);
    }
    furthest
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// Every hop of every line of the header, left to right, each as the text naming its address
/// (`None` for a hop that names none).
fn hops<'a>(
    headers: &'a HeaderMap,
    name: impl axum::http::header::AsHeaderName,
    address: impl Fn(&'a str) -> Option<&'a str>,
) -> Vec<Option<&'a str>> {
    headers
        .get_all(name)
        .iter()
        // A line that is not text names no address; it stays one hop so it still ends the trust.
        .flat_map(|line| line.to_str().unwrap_or("\u{fffd}").split(','))
        .map(|hop| address(hop.trim()))
        .collect()
}

/// The `for=` parameter of one RFC 7239 element, unquoted.
fn forwarded_for(element: &str) -> Option<&str> {
    parameter(element, "for")
}

/// One parameter of an RFC 7239 element, unquoted.
fn parameter<'a>(element: &'a str, name: &str) -> Option<&'a str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim().trim_matches('"'))
    })
}

/// The right-most hop that is not a trusted proxy; if every hop is one, the left-most. `None`
/// when the header is absent or a hop on the way is not an address.
fn client_of(hops: &[Option<&str>], trusted: &[IpNet]) -> Option<IpAddr> {
    let mut furthest = None;
    for hop in hops.iter().rev() {
        let ip = parse_ip((*hop)?)?;
        if !is_trusted(ip, trusted) {
            return Some(ip);
        }
        furthest = Some(ip);
    }
    furthest
}

/// `192.0.2.1`, `2001:db8::1`, or either with a port (`192.0.2.1:4711`, `[2001:db8::1]:4711`),
/// and RFC 7239's bracketed IPv6 without a port (`[2001:db8::1]`).
fn parse_ip(text: &str) -> Option<IpAddr> {
    let ip = text
        .parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|a| a.ip()))
        .or_else(|_| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .unwrap_or_default()
                .parse::<IpAddr>()
        })
        .ok()?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const PEER: [u8; 4] = [10, 0, 0, 2];

    fn resolve_in(
        headers: &[(&'static str, &'static str)],
        trusted: &[&str],
        header: ForwardedHeader,
    ) -> IpAddr {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        let trusted: Vec<IpNet> = trusted.iter().map(|n| n.parse().unwrap()).collect();
        resolve(Some(IpAddr::from(PEER)), &map, &trusted, header).unwrap()
    }

    /// Reads `Forwarded` when that is the only header given, `X-Forwarded-For` otherwise.
    fn resolve_with(headers: &[(&'static str, &'static str)], trusted: &[&str]) -> IpAddr {
        let header = if headers.iter().all(|(name, _)| *name == "forwarded") {
            ForwardedHeader::Forwarded
        } else {
            ForwardedHeader::XForwardedFor
        };
        resolve_in(headers, trusted, header)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_a_peer_there_is_no_address() {
        let header = ForwardedHeader::XForwardedFor;
        assert_eq!(resolve(None, &HeaderMap::new(), &[], header), None);
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let claimed = [
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=1.2.3.4"),
        ];
        assert_eq!(resolve_with(&claimed, &[]), ip("10.0.0.2"));
        assert_eq!(resolve_with(&claimed, &["10.0.1.0/24"]), ip("10.0.0.2"));
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
        let headers = [
            ("x-forwarded-for", "203.0.113.5, 198.51.100.7"),
            ("x-forwarded-for", "10.0.0.9"),
        ];
        assert_eq!(resolve_with(&headers, &["10.0.0.0/8"]), ip("198.51.100.7"));
        let all_trusted = [("x-forwarded-for", "10.1.1.1, 10.0.0.9")];
        assert_eq!(resolve_with(&all_trusted, &["10.0.0.0/8"]), ip("10.1.1.1"));
    }

    #[test]
    fn only_the_header_the_proxies_maintain_is_read() {
        // The proxy maintains X-Forwarded-For and passes the client's own Forwarded through.
        let spoofed = [
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=6.6.6.6"),
        ];
        let xff = ForwardedHeader::XForwardedFor;
        assert_eq!(
            resolve_in(&spoofed, &["10.0.0.0/8"], xff),
            ip("198.51.100.7")
        );
        // Nor is the other header a fallback when the maintained one names nobody.
        let only_forwarded = [("forwarded", "for=6.6.6.6")];
        assert_eq!(
            resolve_in(&only_forwarded, &["10.0.0.0/8"], xff),
            ip("10.0.0.2")
        );
        let only_xff = [("x-forwarded-for", "6.6.6.6")];
        let forwarded = ForwardedHeader::Forwarded;
        assert_eq!(
            resolve_in(&only_xff, &["10.0.0.0/8"], forwarded),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn forwarded_elements_give_their_for_address() {
        let headers = [(
            "forwarded",
            "for=\"[2001:db8:cafe::17]:4711\";proto=https, For=10.0.0.9;by=10.0.0.2",
        )];
        assert_eq!(
            resolve_with(&headers, &["10.0.0.0/8"]),
            ip("2001:db8:cafe::17")
        );
        let with_port = [("forwarded", "for=\"192.0.2.60:8080\"")];
        assert_eq!(resolve_with(&with_port, &["10.0.0.2/32"]), ip("192.0.2.60"));
    }

    #[test]
    fn junk_in_the_nearest_hops_is_ignored() {
        for junk in [
            ("x-forwarded-for", "198.51.100.7, not-an-address"),
            ("x-forwarded-for", ""),
            ("forwarded", "for=unknown"),
            ("forwarded", "proto=https"),
        ] {
            assert_eq!(
                resolve_with(&[junk], &["10.0.0.2/32"]),
                ip("10.0.0.2"),
                "{junk:?}"
            );
        }
        let junk_further_left = [("forwarded", "for=_hidden, for=198.51.100.7;proto=http")];
        assert_eq!(
            resolve_with(&junk_further_left, &["10.0.0.2/32"]),
            ip("198.51.100.7")
        );
    }

    fn https_in(headers: &[(&'static str, &'static str)], header: ForwardedHeader) -> bool {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        forwarded_https(Some(IpAddr::from(PEER)), &map, &trusted, header)
    }

    #[test]
    fn https_is_what_a_trusted_proxy_says_of_the_client() {
        let xff = ForwardedHeader::XForwardedFor;
        let forwarded = ForwardedHeader::Forwarded;
        assert!(https_in(&[("x-forwarded-proto", "https")], xff));
        assert!(https_in(&[("x-forwarded-proto", "http, https")], xff));
        assert!(!https_in(&[("x-forwarded-proto", "http")], xff));
        assert!(!https_in(&[], xff));
        // Only the header family the proxies maintain.
        assert!(!https_in(&[("forwarded", "for=1.2.3.4;proto=https")], xff));
        assert!(!https_in(&[("x-forwarded-proto", "https")], forwarded));
        // The client's element, not a trusted hop's.
        let chain = [(
            "forwarded",
            "for=1.2.3.4;proto=https, for=10.0.0.9;proto=http",
        )];
        assert!(https_in(&chain, forwarded));
        let plain = [(
            "forwarded",
            "for=1.2.3.4;proto=http, for=10.0.0.9;proto=https",
        )];
        assert!(!https_in(&plain, forwarded));
    }

    #[test]
    fn https_claimed_by_an_untrusted_peer_is_ignored() {
        let mut map = HeaderMap::new();
        map.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let header = ForwardedHeader::XForwardedFor;
        assert!(!forwarded_https(
            Some(IpAddr::from(PEER)),
            &map,
            &[],
            header
        ));
        assert!(!forwarded_https(None, &map, &[], header));
    }

    #[test]
    fn an_ipv4_mapped_peer_is_its_ipv4_address() {
        let peer = ip("::ffff:192.0.2.1");
        assert_eq!(
            resolve(
                Some(peer),
                &HeaderMap::new(),
                &[],
                ForwardedHeader::Forwarded
            ),
            Some(ip("192.0.2.1"))
        );
    }
}
