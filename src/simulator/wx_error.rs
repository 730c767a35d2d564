//! WeChat-shaped errors (`{"errcode":..,"errmsg":..}`) and the `rid` WeChat
//! appends to every error message, so clients that parse or log `errmsg`
//! see what they would see in production.

use rand::Rng;
use serde_json::{json, Value};

/// An error answer as WeChat would send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WxError {
    pub errcode: i64,
    pub errmsg: String,
}

impl WxError {
    /// An Official Account / Mini Program error: the message gets WeChat's
    /// ` rid: xxxxxxxx-xxxxxxxx-xxxxxxxx` suffix.
    pub(crate) fn wechat(errcode: i64, message: &str) -> Self {
        WxError {
            errcode,
            errmsg: format!("{message} rid: {}", rid()),
        }
    }

    /// A WeCom error: WeCom appends a hint and a link instead of a rid.
    pub(crate) fn wecom(errcode: i64, message: &str) -> Self {
        WxError {
            errcode,
            errmsg: format!(
                "{message}, hint: [{}], more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}",
                rid()
            ),
        }
    }

    /// The usual message for a code, used when a fault injects a bare code.
    pub(crate) fn from_code(errcode: i64) -> Self {
        let message = match errcode {
            -1 => "system error",
            40001 => "invalid credential, access_token is invalid or not latest",
            40002 => "invalid grant_type",
            40013 => "invalid appid",
            40014 => "invalid access_token",
            40125 => "invalid appsecret",
            40164 => "invalid ip, not in whitelist",
            40097 => "invalid args",
            42001 => "access_token expired",
            45009 => "reach max api daily quota limit",
            45011 => "api minute-quota reach limit  mustslower  retry next minute",
            _ => "simulated error",
        };
        WxError::wechat(errcode, message)
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({ "errcode": self.errcode, "errmsg": self.errmsg })
    }
}

/// A request id shaped like WeChat's: three groups of 8 hex digits.
pub(crate) fn rid() -> String {
    let mut rng = rand::thread_rng();
    format!(
        "{:08x}-{:08x}-{:08x}",
        rng.gen::<u32>(),
        rng.gen::<u32>(),
        rng.gen::<u32>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wechat_errors_carry_a_rid() {
        let e = WxError::wechat(40013, "invalid appid");
        assert!(e.errmsg.starts_with("invalid appid rid: "));
        assert_eq!(e.errmsg.len(), "invalid appid rid: ".len() + 26);
    }
}
