//! The credentials the broker owns (DESIGN.md section 11). Every one has
//! the access token's shape, fetched with a secret or with another
//! credential, living about two hours on a scarce daily quota, and one
//! refresher engine serves them all; this module names them.

use std::fmt;

/// A JS-SDK ticket kind, as configured (`tickets = [...]`) and as it
/// appears in the API's paths. On a WeCom app, [`TicketKind::Jsapi`] is
/// the corp's ticket (`get_jsapi_ticket`) and [`TicketKind::AgentConfig`]
/// the agent's own (`ticket/get?type=agent_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TicketKind {
    Jsapi,
    WxCard,
    AgentConfig,
}

impl TicketKind {
    pub const ALL: [TicketKind; 3] = [
        TicketKind::Jsapi,
        TicketKind::WxCard,
        TicketKind::AgentConfig,
    ];

    /// The configuration's and the API's name; also WeChat's `type`.
    pub fn name(self) -> &'static str {
        match self {
            TicketKind::Jsapi => "jsapi",
            TicketKind::WxCard => "wx_card",
            TicketKind::AgentConfig => "agent_config",
        }
    }

    pub fn from_name(name: &str) -> Option<TicketKind> {
        TicketKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for TicketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One credential of an app: what the refresher engine fetches, stores,
/// budgets and labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Credential {
    AccessToken,
    Ticket(TicketKind),
    /// An Open Platform component app's token (DESIGN.md section 13).
    ComponentToken,
    /// An authorizer's token, fetched with the component token; refreshed
    /// by the platform's own compact scheduler, not one engine task each.
    AuthorizerToken,
    /// An installed corp's token under a WeCom suite (DESIGN.md section
    /// 19), refreshed by the suite's compact scheduler.
    CorpToken,
}

impl Credential {
    /// Every value of the `credential` metric label an app can have.
    pub const ALL: [Credential; 7] = [
        Credential::AccessToken,
        Credential::Ticket(TicketKind::Jsapi),
        Credential::Ticket(TicketKind::WxCard),
        Credential::Ticket(TicketKind::AgentConfig),
        Credential::ComponentToken,
        Credential::AuthorizerToken,
        Credential::CorpToken,
    ];

    /// The `credential` metric label, and the name in logs and records.
    pub fn label(self) -> &'static str {
        match self {
            Credential::AccessToken => "access_token",
            Credential::Ticket(TicketKind::Jsapi) => "jsapi_ticket",
            Credential::Ticket(TicketKind::WxCard) => "wx_card_ticket",
            Credential::Ticket(TicketKind::AgentConfig) => "agent_config_ticket",
            Credential::ComponentToken => "component_access_token",
            Credential::AuthorizerToken => "authorizer_access_token",
            Credential::CorpToken => "corp_access_token",
        }
    }

    /// The field that carries the value in the broker's answers (the
    /// token API, the remote listener) and in an invalidation's body.
    pub fn answer_field(self) -> &'static str {
        match self {
            Credential::AccessToken => "access_token",
            Credential::Ticket(_) => "ticket",
            Credential::ComponentToken => "component_access_token",
            // `/v1/platforms/{platform}/authorizers/{appid}/token`
            // answers an authorizer's token as an access token.
            Credential::AuthorizerToken | Credential::CorpToken => "access_token",
        }
    }

    /// Where a follower reads this credential of the app `owner` on its
    /// leader's remote listener, or `None` for a credential no broker
    /// follows (a platform's: `follow` is an app's setting, and the
    /// remote listener serves app credentials only).
    pub fn leader_path(self, owner: &str) -> Option<String> {
        match self {
            Credential::AccessToken => Some(format!("/v1/apps/{owner}/token")),
            Credential::Ticket(kind) => Some(format!("/v1/apps/{owner}/tickets/{kind}")),
            Credential::ComponentToken | Credential::AuthorizerToken | Credential::CorpToken => {
                None
            }
        }
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_labels_are_distinct() {
        for kind in TicketKind::ALL {
            assert_eq!(TicketKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(TicketKind::from_name("card"), None);
        let labels: std::collections::HashSet<_> =
            Credential::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(labels.len(), Credential::ALL.len());
    }

    #[test]
    fn each_kind_names_its_answer_field_and_where_it_is_followed() {
        let jsapi = Credential::Ticket(TicketKind::Jsapi);
        assert_eq!(Credential::AccessToken.answer_field(), "access_token");
        assert_eq!(jsapi.answer_field(), "ticket");
        assert_eq!(
            Credential::ComponentToken.answer_field(),
            "component_access_token"
        );
        assert_eq!(
            Credential::AccessToken.leader_path("shop").as_deref(),
            Some("/v1/apps/shop/token")
        );
        assert_eq!(
            jsapi.leader_path("shop").as_deref(),
            Some("/v1/apps/shop/tickets/jsapi")
        );
        assert_eq!(Credential::ComponentToken.leader_path("saas"), None);
        assert_eq!(Credential::AuthorizerToken.leader_path("saas"), None);
    }
}
