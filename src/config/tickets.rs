//! `[[apps]] tickets`, `agentid` and `[apps.ticket_budget]` (DESIGN.md
//! section 11): which JS-SDK tickets the broker owns for an app.

use std::collections::BTreeMap;

use super::error::Problem;
use super::{AppKind, TicketConfig};
use crate::credential::TicketKind;

/// WeChat's own daily limit on `getticket` is generous; 200 a day is a
/// hundred refreshes' worth, and still stops a loop long before it hurts.
pub(crate) const DEFAULT_TICKET_BUDGET: u32 = 200;

/// The kinds an app of `kind` can own.
fn offered(kind: AppKind) -> &'static [TicketKind] {
    match kind {
        AppKind::Wechat => &[TicketKind::Jsapi, TicketKind::WxCard],
        AppKind::Wecom => &[TicketKind::Jsapi, TicketKind::AgentConfig],
    }
}

/// The app's tickets and WeCom agentid; `key` names one of the app's keys.
pub(super) fn tickets(
    key: &dyn Fn(&str) -> String,
    kind: AppKind,
    names: Option<Vec<String>>,
    agentid: Option<i64>,
    budgets: Option<BTreeMap<String, i64>>,
) -> Result<(Vec<TicketConfig>, Option<u64>), Problem> {
    let offered = offered(kind);
    let mut kinds: Vec<TicketKind> = Vec::new();
    for name in names.unwrap_or_default() {
        let ticket = TicketKind::from_name(&name).filter(|kind| offered.contains(kind));
        let Some(ticket) = ticket else {
            let choices: Vec<String> = offered.iter().map(|k| format!("\"{k}\"")).collect();
            return Err(Problem::new(
                key("tickets"),
                format!(
                    "\"{name}\" is not a ticket a {} app has; choose from {}",
                    kind_name(kind),
                    choices.join(", ")
                ),
            ));
        };
        if kinds.contains(&ticket) {
            return Err(Problem::new(
                key("tickets"),
                format!("\"{name}\" is listed twice"),
            ));
        }
        kinds.push(ticket);
    }

    let agentid = match (kind, agentid) {
        (_, None) => None,
        (AppKind::Wechat, Some(_)) => {
            return Err(Problem::new(
                key("agentid"),
                "agentid applies to wecom apps only",
            ))
        }
        (AppKind::Wecom, Some(id)) => Some(
            u64::try_from(id)
                .ok()
                .filter(|&id| id >= 1)
                .ok_or_else(|| Problem::new(key("agentid"), "must be a positive integer"))?,
        ),
    };
    if kinds.contains(&TicketKind::AgentConfig) && agentid.is_none() {
        return Err(Problem::new(
            key("agentid"),
            "required with the agent_config ticket: wx.agentConfig is signed for one agent",
        ));
    }

    let mut budgets = budgets.unwrap_or_default();
    let tickets = kinds
        .iter()
        .map(|&ticket| {
            let budget_key = key(&format!("ticket_budget.{ticket}"));
            let daily_budget = match budgets.remove(ticket.name()) {
                None => DEFAULT_TICKET_BUDGET,
                Some(n) => u32::try_from(n)
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| Problem::new(budget_key, "must be at least 1"))?,
            };
            Ok(TicketConfig {
                kind: ticket,
                daily_budget,
            })
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    if let Some(stray) = budgets.keys().next() {
        let configured: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        return Err(Problem::new(
            key(&format!("ticket_budget.{stray}")),
            format!(
                "not a configured ticket (tickets = [{}])",
                configured
                    .iter()
                    .map(|k| format!("\"{k}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok((tickets, agentid))
}

fn kind_name(kind: AppKind) -> &'static str {
    match kind {
        AppKind::Wechat => "wechat",
        AppKind::Wecom => "wecom",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(field: &str) -> String {
        format!("apps.shop.{field}")
    }

    fn names(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn defaults_and_budgets() {
        let budgets = BTreeMap::from([("wx_card".to_owned(), 5)]);
        let (tickets, agentid) = tickets(
            &key,
            AppKind::Wechat,
            names(&["jsapi", "wx_card"]),
            None,
            Some(budgets),
        )
        .unwrap();
        assert_eq!(agentid, None);
        assert_eq!(
            tickets,
            vec![
                TicketConfig {
                    kind: TicketKind::Jsapi,
                    daily_budget: DEFAULT_TICKET_BUDGET
                },
                TicketConfig {
                    kind: TicketKind::WxCard,
                    daily_budget: 5
                },
            ]
        );
    }

    /// An app's kind, tickets, agentid and budgets, and the key blamed.
    type Case = (
        AppKind,
        Option<Vec<String>>,
        Option<i64>,
        &'static [(&'static str, i64)],
        &'static str,
    );

    #[test]
    fn bad_input_names_the_key() {
        let cases: [Case; 7] = [
            (
                AppKind::Wechat,
                names(&["agent_config"]),
                None,
                &[],
                "apps.shop.tickets",
            ),
            (
                AppKind::Wecom,
                names(&["wx_card"]),
                None,
                &[],
                "apps.shop.tickets",
            ),
            (
                AppKind::Wechat,
                names(&["jsapi", "jsapi"]),
                None,
                &[],
                "apps.shop.tickets",
            ),
            (
                AppKind::Wechat,
                names(&["jsapi"]),
                Some(1),
                &[],
                "apps.shop.agentid",
            ),
            (
                AppKind::Wecom,
                names(&["agent_config"]),
                None,
                &[],
                "apps.shop.agentid",
            ),
            (
                AppKind::Wechat,
                names(&["jsapi"]),
                None,
                &[("wx_card", 3)],
                "apps.shop.ticket_budget.wx_card",
            ),
            (
                AppKind::Wechat,
                names(&["jsapi"]),
                None,
                &[("jsapi", 0)],
                "apps.shop.ticket_budget.jsapi",
            ),
        ];
        for (kind, list, agentid, budgets, expected) in cases {
            let budgets = budgets.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            let err = tickets(&key, kind, list.clone(), agentid, Some(budgets)).unwrap_err();
            assert_eq!(err.key, expected, "{list:?} {agentid:?}: {err:?}");
        }
    }
}
