//! The bounded values of the metrics' labels: the `status` of a request.

/// The HTTP statuses that keep their own `status` label: those the broker
/// answers itself. Any other status (an upstream's, relayed by a
/// forwarding route) is counted in its class, so no upstream can grow
/// `/metrics` by answering many distinct statuses.
const LABELLED_STATUSES: [u16; 16] = [
    200, 204, 304, 400, 401, 403, 404, 405, 408, 412, 413, 429, 500, 502, 503, 504,
];

/// How many `status` labels there are.
pub const STATUS_LABELS: usize = LABELLED_STATUSES.len() + 6;

/// Every `status` label, by [`status_index`].
pub const STATUS_LABEL_NAMES: [&str; STATUS_LABELS] = [
    "200", "204", "304", "400", "401", "403", "404", "405", "408", "412", "413", "429", "500",
    "502", "503", "504", "1xx", "2xx", "3xx", "4xx", "5xx", "other",
];

/// The position of a status's label in [`STATUS_LABEL_NAMES`].
pub fn status_index(status: http::StatusCode) -> usize {
    let code = status.as_u16();
    if let Some(at) = LABELLED_STATUSES.iter().position(|known| *known == code) {
        return at;
    }
    LABELLED_STATUSES.len()
        + match code / 100 {
            class @ 1..=5 => usize::from(class) - 1,
            _ => 5,
        }
}

/// The bounded `status` label of `wxbroker_requests_total`: the status
/// itself for the few the broker answers itself, else its class (`2xx` to
/// `5xx`, `1xx`), else `other`.
pub fn status_label(status: http::StatusCode) -> &'static str {
    STATUS_LABEL_NAMES[status_index(status)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_bucketed_beyond_a_fixed_few() {
        let labels: std::collections::HashSet<&str> = (100..=999)
            .map(|code| status_label(http::StatusCode::from_u16(code).unwrap()))
            .collect();
        assert!(labels.len() <= LABELLED_STATUSES.len() + 6, "{labels:?}");
        let label = |code| status_label(http::StatusCode::from_u16(code).unwrap());
        assert_eq!(label(200), "200");
        assert_eq!(label(503), "503");
        assert_eq!(label(299), "2xx");
        assert_eq!(label(418), "4xx");
        assert_eq!(label(599), "5xx");
        assert_eq!(label(999), "other");
        for (at, code) in LABELLED_STATUSES.iter().enumerate() {
            assert_eq!(STATUS_LABEL_NAMES[at], code.to_string());
        }
    }
}
