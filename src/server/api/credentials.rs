//! The token API's credential routes as one table's entries over the
//! server's credential operations ([`crate::server::credentials`]): a
//! route names its credential ([`Names`]), and one handler reads it and
//! one invalidates it, whatever it is: an app's token or ticket, a
//! platform's component token or an authorizer's, a suite's, its
//! provider's, a corp's token or ticket. Each answer names the
//! credential as its route does, with its value under the credential's
//! field (`access_token`, `ticket`, `component_access_token`, …), or
//! bare with `?format=text`; the remote listener's answers carry what a
//! follower checks.

use http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use super::context::{visible_names, Ctx};
use super::route::Answer;
use super::{corps, platforms, suites, tickets};
use crate::credential::Credential;
use crate::engine::{AppHandle, CredentialRecord};
use crate::http_io::RequestBody;
use crate::identity::{Act, Resource};
use crate::server::api_error::ApiError;
use crate::server::credentials::{CredentialRef, Invalidated};
use crate::server::respond::{self, Body};
use crate::store::grant_label;

/// A method check, made where the route makes it.
pub(super) type Allow = fn(&Ctx<'_>) -> Result<(), ApiError>;
/// A read: GET (or HEAD).
pub(super) const GET: Allow = |ctx| ctx.allow_get();
const POST: Allow = |ctx| ctx.allow_post();

/// How a route finds the credential it names: the checks on the way
/// (the caller's access, the method, what exists) in the route's order.
pub(super) trait Names {
    fn named(ctx: &Ctx<'_>, allow: Allow) -> Result<Named, ApiError>;
}

/// A credential a route names, and how its answers name it.
pub(super) struct Named {
    pub target: CredentialRef,
    pub shape: Shape,
}

/// How an answer names its credential.
pub(super) enum Shape {
    /// An app's token: the token read's own answer ([`respond::token`]).
    AppToken { app: String },
    /// These fields, then the value and its lifetime.
    Fields(Vec<(&'static str, String)>),
    /// The remote listener's: the app's appid and grant, which credential
    /// it is, and a `version` to watch from.
    Remote(AppHandle),
}

impl Named {
    /// The answer carrying `record`; `invalidated` says how an
    /// invalidation went.
    pub fn answer(
        &self,
        record: &CredentialRecord,
        as_text: bool,
        invalidated: Option<&Invalidated>,
    ) -> Response<Body> {
        let now = self.target.now_ms();
        let refreshed = invalidated.map(|done| done.refreshed);
        let names = match &self.shape {
            Shape::AppToken { app } => {
                return respond::token(app, record, now, as_text, refreshed);
            }
            Shape::Remote(app) => return self.remote_answer(app, record, invalidated),
            Shape::Fields(names) => names,
        };
        if as_text {
            return respond::no_store(respond::text(
                StatusCode::OK,
                record.value.expose().to_owned(),
            ));
        }
        let mut body: Map<String, Value> = names
            .iter()
            .map(|(key, value)| ((*key).to_owned(), json!(value)))
            .collect();
        let field = self.target.credential().answer_field();
        body.insert(field.to_owned(), json!(record.value.expose()));
        body.insert("expires_in".into(), json!(record.expires_in(now)));
        body.insert("expires_at".into(), json!(record.expires_at()));
        if let Some(refreshed) = refreshed {
            body.insert("refreshed".into(), json!(refreshed));
        }
        respond::no_store(respond::json(StatusCode::OK, &Value::Object(body)))
    }

    fn remote_answer(
        &self,
        app: &AppHandle,
        record: &CredentialRecord,
        invalidated: Option<&Invalidated>,
    ) -> Response<Body> {
        let config = app.config();
        let credential = self.target.credential();
        let mut body = json!({
            "app": config.name,
            "appid": config.appid,
            "grant": grant_label(config.kind, config.grant),
            "credential": credential.label(),
            "expires_in": record.expires_in(self.target.now_ms()),
            "expires_at": record.expires_at(),
            "fetched_at": record.fetched_at(),
            "version": record.version(),
        });
        if let Credential::Ticket(kind) = credential {
            body["kind"] = json!(kind.name());
        }
        body[credential.answer_field()] = json!(record.value.expose());
        if let Some(done) = invalidated {
            body["refreshed"] = json!(done.refreshed);
            if let Some(outcome) = done.outcome {
                body["outcome"] = json!(outcome.metric_label());
            }
        }
        respond::no_store(respond::json(StatusCode::OK, &body))
    }

    /// The value an invalidation reports, from its body: `{"<field>":
    /// "<the value that failed>"}`, the field the credential's answers
    /// use. A local ticket's body holds that field alone.
    fn reported(&self, body: &[u8]) -> Result<String, ApiError> {
        let credential = self.target.credential();
        let only_field =
            matches!(credential, Credential::Ticket(_)) && !matches!(self.shape, Shape::Remote(_));
        reported(body, credential.answer_field(), only_field)
    }
}

/// The string `field` of a JSON object `body`; with `only_field`, the
/// object may hold no other.
fn reported(body: &[u8], field: &str, only_field: bool) -> Result<String, ApiError> {
    let expected = || format!("expected {{\"{field}\": \"<the value that failed>\"}}");
    let object: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|err| ApiError::BadRequest(format!("{}: {err}", expected())))?;
    if let Some(other) = object
        .keys()
        .find(|key| *key != field)
        .filter(|_| only_field)
    {
        return Err(ApiError::BadRequest(format!(
            "{}: unknown field `{}`",
            expected(),
            other.chars().take(64).collect::<String>()
        )));
    }
    match object.get(field) {
        Some(Value::String(reported)) => Ok(reported.clone()),
        Some(Value::Null) | None => Err(ApiError::BadRequest(format!(
            "{}: missing field `{field}`",
            expected()
        ))),
        Some(_) => Err(ApiError::BadRequest(format!(
            "{}: \"{field}\" is not a string",
            expected()
        ))),
    }
}

/// `GET` of a credential: a valid value, waiting up to
/// `token_wait_timeout` for one.
pub(super) async fn read<N: Names>(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    let named = N::named(&ctx, GET)?;
    let record = named.target.get(ctx.state.token_wait).await?;
    Ok(named.answer(&record, ctx.wants_text(), None))
}

/// `POST .../invalidate`: the caller reports the value that failed; the
/// broker decides (compare-and-refresh, `min_forced_interval`) and
/// answers the value to use, within `token_wait_timeout` in all.
pub(super) async fn invalidate<N: Names>(ctx: Ctx<'_>, body: RequestBody) -> Answer {
    let named = N::named(&ctx, POST)?;
    let body = ctx.body(body).await?;
    let reported = named.reported(&body)?;
    let done = named
        .target
        .invalidate(&reported, ctx.state.token_wait)
        .await?;
    Ok(named.answer(&done.record, ctx.wants_text(), Some(&done)))
}

/// `/v1/apps/{app}/token`.
pub(super) struct AppToken;

impl Names for AppToken {
    fn named(ctx: &Ctx<'_>, allow: Allow) -> Result<Named, ApiError> {
        allow(ctx)?;
        let app = ctx.app(ctx.param("app"))?;
        Ok(Named {
            target: CredentialRef::engine(app.name(), &app),
            shape: Shape::AppToken {
                app: app.name().to_owned(),
            },
        })
    }
}

/// `/v1/token`: the only app's.
pub(super) struct DefaultAppToken;

impl Names for DefaultAppToken {
    fn named(ctx: &Ctx<'_>, allow: Allow) -> Result<Named, ApiError> {
        allow(ctx)?;
        let broker = &ctx.state.broker;
        let app = broker.default_app().ok_or_else(|| ApiError::NoDefaultApp {
            configured: visible_names(broker, ctx.access),
        })?;
        ctx.check(Resource::App(app.name()), Act::Read)?;
        Ok(Named {
            target: CredentialRef::engine(app.name(), &app),
            shape: Shape::AppToken {
                app: app.name().to_owned(),
            },
        })
    }
}

/// `/v1/apps/{app}/tickets/{kind}`.
pub(super) struct AppTicket;

impl Names for AppTicket {
    fn named(ctx: &Ctx<'_>, allow: Allow) -> Result<Named, ApiError> {
        allow(ctx)?;
        let app = ctx.app(ctx.param("app"))?;
        let (kind, handle) = tickets::configured(&app, ctx.param("kind"))?;
        Ok(Named {
            target: CredentialRef::engine(app.name(), handle),
            shape: Shape::Fields(vec![
                ("app", app.name().to_owned()),
                ("kind", kind.name().to_owned()),
            ]),
        })
    }
}

/// The remote listener's `/v1/apps/{app}/token`.
pub(super) struct RemoteAppToken;

impl Names for RemoteAppToken {
    fn named(ctx: &Ctx<'_>, allow: Allow) -> Result<Named, ApiError> {
        allow(ctx)?;
        let app = ctx.app(ctx.param("app"))?;
        Ok(Named {
            target: CredentialRef::engine(app.name(), &app),
            shape: Shape::Remote(app),
        })
    }
}

/// The remote listener's `/v1/apps/{app}/tickets/{kind}`.
pub(super) struct RemoteAppTicket;

impl Names for RemoteAppTicket {
    fn named(ctx: &Ctx<'_>, allow: Allow) -> Result<Named, ApiError> {
        allow(ctx)?;
        let app = ctx.app(ctx.param("app"))?;
        let (_, handle) = tickets::configured(&app, ctx.param("kind"))?;
        Ok(Named {
            target: CredentialRef::engine(app.name(), handle),
            shape: Shape::Remote(app),
        })
    }
}

/// `/v1/platforms/{platform}/component_token`.
pub(super) struct ComponentToken;

impl Names for ComponentToken {
    fn named(ctx: &Ctx<'_>, allow: Allow) -> Result<Named, ApiError> {
        let platform = platforms::platform(ctx)?;
        allow(ctx)?;
        Ok(Named {
            target: CredentialRef::engine(platform.name(), platform.component()),
            shape: Shape::Fields(vec![("platform", platform.name().to_owned())]),
        })
    }
}

/// `/v1/platforms/{platform}/authorizers/{appid}/token`.
pub(super) struct AuthorizerToken;

impl Names for AuthorizerToken {
    fn named(ctx: &Ctx<'_>, allow: Allow) -> Result<Named, ApiError> {
        let platform = platforms::platform(ctx)?;
        allow(ctx)?;
        let appid = ctx.param("appid");
        Ok(Named {
            shape: Shape::Fields(vec![
                ("platform", platform.name().to_owned()),
                ("appid", appid.to_owned()),
            ]),
            target: CredentialRef::Authorizer {
                platform,
                appid: appid.to_owned(),
            },
        })
    }
}

/// `/v1/suites/{suite}/suite_token`.
pub(super) struct SuiteToken;

impl Names for SuiteToken {
    fn named(ctx: &Ctx<'_>, allow: Allow) -> Result<Named, ApiError> {
        let suite = suites::suite(ctx)?;
        allow(ctx)?;
        Ok(Named {
            target: CredentialRef::engine(suite.name(), suite.suite_token()),
            shape: Shape::Fields(vec![("suite", suite.name().to_owned())]),
        })
    }
}

/// `/v1/suites/{suite}/provider_token`.
pub(super) struct ProviderToken;

impl Names for ProviderToken {
    fn named(ctx: &Ctx<'_>, allow: Allow) -> Result<Named, ApiError> {
        let suite = suites::suite(ctx)?;
        allow(ctx)?;
        let handle = suite
            .provider_token()
            .ok_or_else(|| ApiError::ProviderNotConfigured {
                suite: suite.name().to_owned(),
            })?;
        Ok(Named {
            target: CredentialRef::engine(suite.name(), handle),
            shape: Shape::Fields(vec![("suite", suite.name().to_owned())]),
        })
    }
}

/// `/v1/suites/{suite}/corps/{corpid}/token`.
pub(super) struct CorpToken;

impl Names for CorpToken {
    fn named(ctx: &Ctx<'_>, allow: Allow) -> Result<Named, ApiError> {
        let suite = suites::suite(ctx)?;
        let corpid = corps::corpid(ctx)?;
        allow(ctx)?;
        Ok(Named {
            shape: Shape::Fields(vec![
                ("suite", suite.name().to_owned()),
                ("corpid", corpid.to_owned()),
            ]),
            target: CredentialRef::Corp {
                suite,
                corpid: corpid.to_owned(),
            },
        })
    }
}

/// `/v1/suites/{suite}/corps/{corpid}/tickets/{kind}`.
pub(super) struct CorpTicket;

impl Names for CorpTicket {
    fn named(ctx: &Ctx<'_>, allow: Allow) -> Result<Named, ApiError> {
        let suite = suites::suite(ctx)?;
        let corpid = corps::corpid(ctx)?;
        allow(ctx)?;
        let (kind, handle) = corps::ticket(&suite, corpid, ctx.param("kind"))?;
        Ok(Named {
            target: CredentialRef::engine(corps::owner(&suite, corpid), &handle),
            shape: Shape::Fields(vec![
                ("suite", suite.name().to_owned()),
                ("corpid", corpid.to_owned()),
                ("kind", kind.name().to_owned()),
            ]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalidation_reports_the_value_under_the_credentials_field() {
        let ok = |body: &str, field, only| reported(body.as_bytes(), field, only).ok();
        assert_eq!(
            ok(r#"{"access_token":"t","x":1}"#, "access_token", false).as_deref(),
            Some("t")
        );
        assert_eq!(
            ok(r#"{"ticket":"k"}"#, "ticket", true).as_deref(),
            Some("k")
        );
        for (body, field, only) in [
            (r#"{"ticket":"k","x":1}"#, "ticket", true),
            (r#"{"access_token":null}"#, "access_token", false),
            (r#"{"access_token":5}"#, "access_token", false),
            (r#"{}"#, "ticket", false),
            ("[]", "ticket", false),
            ("", "ticket", false),
        ] {
            let err = reported(body.as_bytes(), field, only).unwrap_err();
            assert_eq!(err.code(), "bad_request", "{body}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }
}
