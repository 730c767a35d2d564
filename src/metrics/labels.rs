//! The bounded values of the metrics' labels: the `status` of a request.

/// The HTTP statuses that keep their own `status` label: those the broker
/// answers itself. Any other status (an upstream's, relayed by a
/// forwarding route) is counted in its class, so no upstream can grow
/// `/metrics` by answering many distinct statuses.
const LABELLED_STATUSES: [(u16, &str); 16] = [
    (200, "200"),
    (204, "204"),
    (304, "304"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (408, "408"),
    (412, "412"),
    (413, "413"),
    (429, "429"),
    (500, "500"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
];

/// The bounded `status` label of `wxbroker_requests_total`: the status
/// itself for the few the broker answers itself, else its class (`2xx` to
/// `5xx`, `1xx`), else `other`.
pub fn status_label(status: http::StatusCode) -> &'static str {
    let code = status.as_u16();
    if let Some((_, label)) = LABELLED_STATUSES.iter().find(|(known, _)| *known == code) {
        return label;
    }
    match code / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
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
    }
}
