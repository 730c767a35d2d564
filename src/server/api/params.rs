//! The parameters of a request path, matched against a route's pattern.
//!
//! A pattern is a path whose segments are literal, `{name}` (any one
//! segment, empty included) or, last, `{*name}` (whatever follows that
//! `/`, slashes included, empty included); the lone pattern `*` matches
//! every path.

/// The most parameters a pattern names.
const MAX_PARAMS: usize = 4;

/// The parameters a path matched, by the names its pattern gives them.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Params<'a> {
    found: [(&'static str, &'a str); MAX_PARAMS],
    len: usize,
}

impl<'a> Params<'a> {
    /// The parameters of `path`, if it matches `pattern`.
    pub fn of(pattern: &'static str, path: &'a str) -> Option<Self> {
        if pattern == "*" {
            return Some(Params::default());
        }
        Params::below(pattern.strip_prefix('/')?, path.strip_prefix('/')?)
    }

    /// [`Params::of`] for what follows a slash both have in the same
    /// place: a route's literal start, matched already.
    pub fn below(pattern: &'static str, path: &'a str) -> Option<Self> {
        let mut params = Params::default();
        let mut rest = Some(path);
        let mut wanted_rest = Some(pattern);
        while let Some(patterns) = wanted_rest {
            let (wanted, after_wanted) = first_segment(patterns);
            wanted_rest = after_wanted;
            let here = rest?;
            if let Some(name) = wanted.strip_prefix("{*").and_then(|w| w.strip_suffix('}')) {
                params.push(name, here);
                return Some(params);
            }
            let (segment, after) = first_segment(here);
            match wanted.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                Some(name) => params.push(name, segment),
                None if wanted == segment => {}
                None => return None,
            }
            rest = after;
        }
        rest.is_none().then_some(params)
    }

    fn push(&mut self, name: &'static str, value: &'a str) {
        self.found[self.len] = (name, value);
        self.len += 1;
    }

    /// The value of `{name}`; a name the route's pattern lacks is a
    /// mistake in the table, and reads as empty.
    pub fn get(&self, name: &str) -> &'a str {
        let found = self.found[..self.len]
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| *value);
        debug_assert!(found.is_some(), "no parameter {name}");
        found.unwrap_or("")
    }

    /// The value of `{name}` where the route has patterns with and
    /// without it; empty where it has none.
    pub fn get_or_empty(&self, name: &str) -> &'a str {
        self.found[..self.len]
            .iter()
            .find(|(key, _)| *key == name)
            .map_or("", |(_, value)| *value)
    }
}

/// The first segment of `path` and what follows its slash, if any. A byte
/// loop: segments are short, and this runs for every route a request
/// passes.
fn first_segment(path: &str) -> (&str, Option<&str>) {
    match path.bytes().position(|b| b == b'/') {
        Some(slash) => (&path[..slash], Some(&path[slash + 1..])),
        None => (path, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_segments() {
        let token = "/v1/apps/{app}/token";
        let app = |path| Params::of(token, path).map(|params| params.get("app"));
        assert_eq!(app("/v1/apps/shop/token"), Some("shop"));
        assert_eq!(app("/v1/apps//token"), Some(""));
        for other in [
            "/v1/apps/shop/token/",
            "/v1/apps/shop",
            "/v1/apps/a/b/token",
            "v1/apps/a/token",
        ] {
            assert_eq!(app(other), None, "{other}");
        }
        let below = "/v1/platforms/{*rest}";
        let rest = |path| Params::of(below, path).map(|params| params.get("rest"));
        assert_eq!(rest("/v1/platforms/"), Some(""));
        assert_eq!(rest("/v1/platforms/a//b"), Some("a//b"));
        assert_eq!(rest("/v1/platforms"), None);
        assert!(Params::of("*", "anything at all").is_some());
    }
}
