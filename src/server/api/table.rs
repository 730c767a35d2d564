//! Every route of the token API, each with its `route` label, the paths
//! it answers and its handlers on the local and the remote listeners: a
//! credential's read and invalidation are `credentials`' two handlers,
//! told which credential the route names.
//! The first route whose pattern matches a path answers it; the last
//! matches every path.

use super::credentials::{
    invalidate, read, AppTicket, AppToken, AuthorizerToken, ComponentToken, CorpTicket, CorpToken,
    DefaultAppToken, ProviderToken, RemoteAppTicket, RemoteAppToken, SuiteToken,
};
use super::route::Route;
use super::{apps, corps, diagnostics, platforms, probes, remote, suites, tickets};

/// Wraps an `async fn(Ctx<'_>, RequestBody) -> Answer` as a [`Handler`](super::route::Handler).
macro_rules! handler {
    ($handler:path) => {
        |ctx, body| Box::pin($handler(ctx, body))
    };
}

const PLATFORM: &str = "/v1/platforms/{platform}";
const SUITE: &str = "/v1/suites/{suite}";

/// The routes, the busiest first.
pub(super) const ROUTES: &[Route] = &[
    Route::new("/v1/apps/{app}/token", handler!(read::<AppToken>))
        .now(apps::token_now)
        .remote(handler!(remote::watched::<RemoteAppToken>)),
    Route::new("/v1/token", handler!(read::<DefaultAppToken>)).now(apps::default_token_now),
    Route::new("/v1/apps/{app}/proxy", handler!(apps::proxy)),
    Route::new("/v1/apps/{app}/proxy", handler!(apps::proxy))
        .matching("/v1/apps/{app}/proxy/{*path}"),
    Route::new("/v1/apps/{app}/tickets/{kind}", handler!(read::<AppTicket>))
        .remote(handler!(remote::watched::<RemoteAppTicket>)),
    Route::new("/livez", handler!(probes::livez)).probe(),
    Route::new("/readyz", handler!(probes::readyz)).probe(),
    Route::new("/v1/apps", handler!(apps::list)).remote(handler!(apps::list)),
    Route::new(
        "/v1/apps/{app}/token/invalidate",
        handler!(invalidate::<AppToken>),
    )
    .remote(handler!(invalidate::<RemoteAppToken>)),
    Route::new(
        "/v1/apps/{app}/tickets/{kind}/invalidate",
        handler!(invalidate::<AppTicket>),
    )
    .remote(handler!(invalidate::<RemoteAppTicket>)),
    Route::new(
        "/v1/apps/{app}/jssdk/config",
        handler!(tickets::jssdk_config),
    ),
    Route::new("/v1/apps/{app}/quota", handler!(diagnostics::quota)),
    Route::new(
        "/v1/apps/{app}/clear_quota",
        handler!(diagnostics::clear_quota),
    ),
    Route::new("/v1/apps/{app}/rids/{rid}", handler!(diagnostics::rid)),
    // Every platform route counts under the platform's label.
    Route::new(PLATFORM, handler!(read::<ComponentToken>))
        .matching("/v1/platforms/{platform}/component_token"),
    Route::new(PLATFORM, handler!(platforms::authorizers))
        .matching("/v1/platforms/{platform}/authorizers"),
    Route::new(PLATFORM, handler!(platforms::pre_auth_code))
        .matching("/v1/platforms/{platform}/pre_auth_code"),
    Route::new(PLATFORM, handler!(read::<AuthorizerToken>))
        .matching("/v1/platforms/{platform}/authorizers/{appid}/token"),
    Route::new(PLATFORM, handler!(invalidate::<AuthorizerToken>))
        .matching("/v1/platforms/{platform}/authorizers/{appid}/token/invalidate"),
    Route::new(PLATFORM, handler!(platforms::proxy))
        .matching("/v1/platforms/{platform}/authorizers/{appid}/proxy"),
    Route::new(PLATFORM, handler!(platforms::proxy))
        .matching("/v1/platforms/{platform}/authorizers/{appid}/proxy/{*path}"),
    Route::new(PLATFORM, handler!(platforms::unknown)),
    Route::new(PLATFORM, handler!(platforms::unknown)).matching("/v1/platforms/{platform}/{*rest}"),
    // And every suite route under the suite's.
    Route::new(SUITE, handler!(read::<SuiteToken>)).matching("/v1/suites/{suite}/suite_token"),
    Route::new(SUITE, handler!(read::<ProviderToken>))
        .matching("/v1/suites/{suite}/provider_token"),
    Route::new(SUITE, handler!(suites::corps)).matching("/v1/suites/{suite}/corps"),
    Route::new(SUITE, handler!(suites::pre_auth_code)).matching("/v1/suites/{suite}/pre_auth_code"),
    Route::new(SUITE, handler!(read::<CorpToken>))
        .matching("/v1/suites/{suite}/corps/{corpid}/token"),
    Route::new(SUITE, handler!(invalidate::<CorpToken>))
        .matching("/v1/suites/{suite}/corps/{corpid}/token/invalidate"),
    Route::new(SUITE, handler!(read::<CorpTicket>))
        .matching("/v1/suites/{suite}/corps/{corpid}/tickets/{kind}"),
    Route::new(SUITE, handler!(invalidate::<CorpTicket>))
        .matching("/v1/suites/{suite}/corps/{corpid}/tickets/{kind}/invalidate"),
    Route::new(SUITE, handler!(corps::jssdk_config))
        .matching("/v1/suites/{suite}/corps/{corpid}/jssdk/config"),
    Route::new(SUITE, handler!(corps::proxy)).matching("/v1/suites/{suite}/corps/{corpid}/proxy"),
    Route::new(SUITE, handler!(corps::proxy))
        .matching("/v1/suites/{suite}/corps/{corpid}/proxy/{*path}"),
    Route::new(SUITE, handler!(suites::unknown)),
    Route::new(SUITE, handler!(suites::unknown)).matching("/v1/suites/{suite}/{*rest}"),
    Route::new("other", handler!(apps::not_found)).matching("*"),
];

#[cfg(test)]
mod tests {
    use super::super::find;

    #[test]
    fn routes_parse_to_templates() {
        let cases = [
            ("/livez", "/livez"),
            ("/v1/apps", "/v1/apps"),
            ("/v1/token", "/v1/token"),
            ("/v1/apps/shop/token", "/v1/apps/{app}/token"),
            (
                "/v1/apps/shop/token/invalidate",
                "/v1/apps/{app}/token/invalidate",
            ),
            ("/v1/apps/shop/token/invalidate/x", "other"),
            (
                "/v1/apps/shop/proxy/tcb/databasequery",
                "/v1/apps/{app}/proxy",
            ),
            ("/v1/apps/shop/proxy", "/v1/apps/{app}/proxy"),
            ("/v1/apps/shop/proxyx", "other"),
            (
                "/v1/apps/shop/tickets/jsapi",
                "/v1/apps/{app}/tickets/{kind}",
            ),
            (
                "/v1/apps/shop/tickets/jsapi/invalidate",
                "/v1/apps/{app}/tickets/{kind}/invalidate",
            ),
            ("/v1/apps/shop/tickets/jsapi/invalidate/x", "other"),
            ("/v1/apps/shop/tickets", "other"),
            ("/v1/apps/shop/jssdk/config", "/v1/apps/{app}/jssdk/config"),
            ("/v1/apps/shop/jssdk/config/x", "other"),
            ("/v1/apps/shop/quota", "/v1/apps/{app}/quota"),
            ("/v1/apps/shop/clear_quota", "/v1/apps/{app}/clear_quota"),
            ("/v1/apps/shop/rids/1-2-3", "/v1/apps/{app}/rids/{rid}"),
            ("/v1/apps/shop/rids", "other"),
            ("/v1/apps/shop/rids/1/2", "other"),
            ("/v1/apps/shop/quota/x", "other"),
            ("/v1/apps/shop", "other"),
            (
                "/v1/platforms/saas/component_token",
                "/v1/platforms/{platform}",
            ),
            ("/v1/platforms/", "/v1/platforms/{platform}"),
            ("/v1/platforms", "other"),
            ("/v1/suites/crm/suite_token", "/v1/suites/{suite}"),
            (
                "/v1/suites/crm/corps/ww1/proxy/cgi-bin/user/get",
                "/v1/suites/{suite}",
            ),
            ("/v1/suites/crm/anything/else", "/v1/suites/{suite}"),
            ("/v1/suites", "other"),
            ("/", "other"),
            ("*", "other"),
        ];
        for (path, template) in cases {
            assert_eq!(find(path).1.template, template, "{path}");
        }
    }

    #[test]
    fn the_last_route_takes_every_path() {
        let last = super::ROUTES.last().unwrap();
        assert_eq!((last.template, last.pattern), ("other", "*"));
    }
}
