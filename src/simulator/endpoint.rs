//! The WeChat endpoints the simulator answers, their stable names (used by
//! the `/__sim/calls` admin route) and which URL path each lives at.

/// One simulated WeChat endpoint. Calls are counted and recorded per endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /cgi-bin/token` (classic grant).
    Token,
    /// `POST /cgi-bin/stable_token`.
    StableToken,
    /// WeCom `GET /cgi-bin/gettoken`.
    WecomGetToken,
    /// `POST /tcb/invokecloudfunction`.
    InvokeCloudFunction,
    /// `POST /tcb/databasequery`.
    DatabaseQuery,
    /// `POST /tcb/databaseadd`.
    DatabaseAdd,
    /// `POST /tcb/databaseupdate`.
    DatabaseUpdate,
    /// `POST /tcb/databasedelete`.
    DatabaseDelete,
    /// `POST /tcb/batchdownloadfile`.
    BatchDownloadFile,
    /// `POST /tcb/uploadfile`.
    UploadFile,
    /// `POST /tcb/batchdeletefile`.
    BatchDeleteFile,
    /// `GET` or `POST /cgi-bin/openapi/quota/get`.
    QuotaGet,
    /// `GET /sns/oauth2/access_token`: a web OAuth code for a user token.
    OAuthAccessToken,
    /// `GET /sns/oauth2/refresh_token`.
    OAuthRefreshToken,
    /// `GET /sns/userinfo` (user token).
    SnsUserInfo,
    /// `GET /sns/auth` (user token).
    SnsAuth,
    /// `GET /sns/jscode2session`: a Mini Program login.
    JsCode2Session,
    /// `GET /cgi-bin/media/get`: a temporary media file.
    MediaGet,
    /// `GET /cgi-bin/user/info`: a follower's profile (app token).
    UserInfo,
    /// `POST /cgi-bin/message/custom/send`.
    CustomSend,
    /// `GET /cgi-bin/getcallbackip`.
    GetCallbackIp,
    /// `GET /cgi-bin/get_api_domain_ip`: WeChat's and WeCom's API server
    /// addresses, for a valid app token of either.
    GetApiDomainIp,
    /// `GET /cgi-bin/ticket/getticket?type=jsapi|wx_card` (app token).
    GetTicket,
    /// WeCom `GET /cgi-bin/get_jsapi_ticket`: the corp's ticket.
    WecomGetJsapiTicket,
    /// WeCom `GET /cgi-bin/ticket/get?type=agent_config`: an agent's ticket.
    WecomTicketGet,
    /// `POST /cgi-bin/clear_quota` (app token): resets the account's quotas.
    ClearQuota,
    /// `POST /cgi-bin/clear_quota/v2` (appid and appsecret, no token).
    ClearQuotaV2,
    /// `POST /cgi-bin/openapi/rid/get` (app token): what a `rid` was.
    RidGet,
}

impl Endpoint {
    /// Every endpoint, in a fixed order (the order `/__sim/calls` lists them).
    pub const ALL: [Endpoint; 28] = [
        Endpoint::Token,
        Endpoint::StableToken,
        Endpoint::WecomGetToken,
        Endpoint::InvokeCloudFunction,
        Endpoint::DatabaseQuery,
        Endpoint::DatabaseAdd,
        Endpoint::DatabaseUpdate,
        Endpoint::DatabaseDelete,
        Endpoint::BatchDownloadFile,
        Endpoint::UploadFile,
        Endpoint::BatchDeleteFile,
        Endpoint::QuotaGet,
        Endpoint::OAuthAccessToken,
        Endpoint::OAuthRefreshToken,
        Endpoint::SnsUserInfo,
        Endpoint::SnsAuth,
        Endpoint::JsCode2Session,
        Endpoint::MediaGet,
        Endpoint::UserInfo,
        Endpoint::CustomSend,
        Endpoint::GetCallbackIp,
        Endpoint::GetApiDomainIp,
        Endpoint::GetTicket,
        Endpoint::WecomGetJsapiTicket,
        Endpoint::WecomTicketGet,
        Endpoint::ClearQuota,
        Endpoint::ClearQuotaV2,
        Endpoint::RidGet,
    ];

    /// The snake_case name used in admin answers and log fields.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::StableToken => "stable_token",
            Endpoint::WecomGetToken => "wecom_gettoken",
            Endpoint::InvokeCloudFunction => "invoke_cloud_function",
            Endpoint::DatabaseQuery => "database_query",
            Endpoint::DatabaseAdd => "database_add",
            Endpoint::DatabaseUpdate => "database_update",
            Endpoint::DatabaseDelete => "database_delete",
            Endpoint::BatchDownloadFile => "batch_download_file",
            Endpoint::UploadFile => "upload_file",
            Endpoint::BatchDeleteFile => "batch_delete_file",
            Endpoint::QuotaGet => "quota_get",
            Endpoint::OAuthAccessToken => "oauth_access_token",
            Endpoint::OAuthRefreshToken => "oauth_refresh_token",
            Endpoint::SnsUserInfo => "sns_userinfo",
            Endpoint::SnsAuth => "sns_auth",
            Endpoint::JsCode2Session => "jscode2session",
            Endpoint::MediaGet => "media_get",
            Endpoint::UserInfo => "user_info",
            Endpoint::CustomSend => "custom_send",
            Endpoint::GetCallbackIp => "getcallbackip",
            Endpoint::GetApiDomainIp => "get_api_domain_ip",
            Endpoint::GetTicket => "getticket",
            Endpoint::WecomGetJsapiTicket => "wecom_get_jsapi_ticket",
            Endpoint::WecomTicketGet => "wecom_ticket_get",
            Endpoint::ClearQuota => "clear_quota",
            Endpoint::ClearQuotaV2 => "clear_quota_v2",
            Endpoint::RidGet => "rid_get",
        }
    }

    /// The inverse of [`Endpoint::name`].
    pub fn from_name(name: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.name() == name)
    }

    /// True for the endpoints that issue app tokens; only these see faults,
    /// latency and the IP whitelist. User OAuth tokens are not app tokens.
    pub fn issues_tokens(self) -> bool {
        matches!(
            self,
            Endpoint::Token | Endpoint::StableToken | Endpoint::WecomGetToken
        )
    }

    /// True for the endpoints that issue JS-SDK tickets; these see the
    /// ticket fault queue ([`Simulator::inject_ticket_fault`]).
    ///
    /// [`Simulator::inject_ticket_fault`]: super::Simulator::inject_ticket_fault
    pub fn issues_tickets(self) -> bool {
        matches!(
            self,
            Endpoint::GetTicket | Endpoint::WecomGetJsapiTicket | Endpoint::WecomTicketGet
        )
    }

    /// The endpoint served at a URL path, if any.
    pub(crate) fn from_path(path: &str) -> Option<Endpoint> {
        let endpoint = match path {
            "/cgi-bin/token" => Endpoint::Token,
            "/cgi-bin/stable_token" => Endpoint::StableToken,
            "/cgi-bin/gettoken" => Endpoint::WecomGetToken,
            "/tcb/invokecloudfunction" => Endpoint::InvokeCloudFunction,
            "/tcb/databasequery" => Endpoint::DatabaseQuery,
            "/tcb/databaseadd" => Endpoint::DatabaseAdd,
            "/tcb/databaseupdate" => Endpoint::DatabaseUpdate,
            "/tcb/databasedelete" => Endpoint::DatabaseDelete,
            "/tcb/batchdownloadfile" => Endpoint::BatchDownloadFile,
            "/tcb/uploadfile" => Endpoint::UploadFile,
            "/tcb/batchdeletefile" => Endpoint::BatchDeleteFile,
            "/cgi-bin/openapi/quota/get" => Endpoint::QuotaGet,
            "/sns/oauth2/access_token" => Endpoint::OAuthAccessToken,
            "/sns/oauth2/refresh_token" => Endpoint::OAuthRefreshToken,
            "/sns/userinfo" => Endpoint::SnsUserInfo,
            "/sns/auth" => Endpoint::SnsAuth,
            "/sns/jscode2session" => Endpoint::JsCode2Session,
            "/cgi-bin/media/get" => Endpoint::MediaGet,
            "/cgi-bin/user/info" => Endpoint::UserInfo,
            "/cgi-bin/message/custom/send" => Endpoint::CustomSend,
            "/cgi-bin/getcallbackip" => Endpoint::GetCallbackIp,
            "/cgi-bin/get_api_domain_ip" => Endpoint::GetApiDomainIp,
            "/cgi-bin/ticket/getticket" => Endpoint::GetTicket,
            "/cgi-bin/get_jsapi_ticket" => Endpoint::WecomGetJsapiTicket,
            "/cgi-bin/ticket/get" => Endpoint::WecomTicketGet,
            "/cgi-bin/clear_quota" => Endpoint::ClearQuota,
            "/cgi-bin/clear_quota/v2" => Endpoint::ClearQuotaV2,
            "/cgi-bin/openapi/rid/get" => Endpoint::RidGet,
            _ => return None,
        };
        Some(endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::from_name(e.name()), Some(e));
        }
    }
}
