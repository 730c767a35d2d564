//! What a WeChat `errmsg` says besides its message: the request id WeChat
//! appends to it (`… rid: 6523f1a2-0123abcd-4567ef89`), which `rid/get`
//! and WeChat's support look calls up by, and the address an IP whitelist
//! refusal names (`invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in
//! whitelist rid: …`), which is exactly what the operator must add.
//!
//! Both are read out of text an upstream wrote, so both are checked to be
//! what they claim (a rid of hex digits and dashes, an address that
//! parses) before anything quotes them.

use std::net::IpAddr;

/// The errcodes that mean "WeChat refuses the address this call came
/// from": the account's IP whitelist (40164), the Open Platform's
/// (61004), and an address waiting for an administrator's confirmation
/// (89503). WeCom's trusted-IP refusal (60020) names the address too.
pub const BLOCKED_IP_ERRCODES: [i64; 4] = [40164, 61004, 89503, 60020];

/// The longest rid quoted; WeChat's are 26 characters.
const MAX_RID: usize = 64;

/// The `rid` at the end of `errmsg`, if it carries a well-formed one.
pub fn rid(errmsg: &str) -> Option<&str> {
    let (_, after) = errmsg.rsplit_once("rid:")?;
    let rid = after.split_whitespace().next()?;
    let well_formed = !rid.is_empty()
        && rid.len() <= MAX_RID
        && rid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    well_formed.then_some(rid)
}

/// The address WeChat says it refused, for an errcode that means so: the
/// first IPv4 or IPv6 address after `invalid ip` (WeChat) or `from ip`
/// (WeCom).
pub fn blocked_ip(errcode: i64, errmsg: &str) -> Option<IpAddr> {
    if !BLOCKED_IP_ERRCODES.contains(&errcode) {
        return None;
    }
    let lower = errmsg.to_ascii_lowercase();
    let start = ["invalid ip", "from ip"]
        .iter()
        .filter_map(|marker| lower.find(marker).map(|at| at + marker.len()))
        .min()?;
    errmsg[start..]
        .split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
        .filter(|word| !word.is_empty())
        .find_map(|word| word.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rid_is_the_last_one_and_well_formed() {
        assert_eq!(
            rid("invalid credential rid: 6523f1a2-0123abcd-4567ef89"),
            Some("6523f1a2-0123abcd-4567ef89")
        );
        assert_eq!(rid("a rid: 1-2 then rid: abc-def "), Some("abc-def"));
        assert_eq!(rid("ok"), None);
        assert_eq!(rid("rid: "), None);
        assert_eq!(rid("rid: <script>"), None);
        assert_eq!(rid(&format!("rid: {}", "a".repeat(65))), None);
    }

    #[test]
    fn the_blocked_address_is_the_first_after_the_marker() {
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        assert_eq!(
            blocked_ip(
                40164,
                "invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist rid: 6523f1a2-0123abcd-4567ef89"
            ),
            ip("203.0.113.7")
        );
        assert_eq!(
            blocked_ip(
                61004,
                "access clientip is not registered, invalid ip 2001:db8::7, not in whitelist"
            ),
            ip("2001:db8::7")
        );
        assert_eq!(
            blocked_ip(40164, "invalid ip ::ffff:198.51.100.2, not in whitelist"),
            ip("198.51.100.2"),
            "an IPv4-mapped address is named as IPv4"
        );
        assert_eq!(
            blocked_ip(
                60020,
                "not allow to access from your ip, from ip: 198.51.100.9, hint: [x]"
            ),
            ip("198.51.100.9")
        );
        assert_eq!(blocked_ip(40164, "invalid ip, not in whitelist"), None);
        assert_eq!(
            blocked_ip(40013, "invalid ip 203.0.113.7"),
            None,
            "only a whitelist errcode names a blocked address"
        );
    }
}
