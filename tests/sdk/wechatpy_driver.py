"""Drives wechatpy for tests/sdk_python.rs, one JSON request a line on stdin,
one JSON answer a line on stdout: {"ok": true, "value": ...} or
{"ok": false, "errcode": N or null, "error": "..."}. One process keeps one
client, so the SDK's own token cache lives across requests as in a service.

The first request is {"op": "init", "appid", "secret", "base"}. With a
"base", the SDK is pointed there by its own settings: the API_BASE_URL
class attributes of WeChatClient, of its wxa and cloud APIs and of
WeChatOAuth; fetch_access_token hardcodes https://api.weixin.qq.com, so it
is overridden to fetch from API_BASE_URL instead, with the SDK's own
_fetch_access_token. Without a "base" the SDK runs unchanged (transparent
mode: the process resolves api.weixin.qq.com to the broker).
"""

import json
import sys

from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatException
from wechatpy.oauth import WeChatOAuth


def make_clients(appid, secret, base):
    if base is None:
        return (
            WeChatClient(appid, secret),
            WeChatOAuth(appid, secret, redirect_uri="https://example.com/cb"),
        )

    class Client(WeChatClient):
        API_BASE_URL = base + "/cgi-bin/"

        def fetch_access_token(self):
            return self._fetch_access_token(
                url=self.API_BASE_URL + "token",
                params={
                    "grant_type": "client_credential",
                    "appid": self.appid,
                    "secret": self.secret,
                },
            )

    class OAuth(WeChatOAuth):
        API_BASE_URL = base + "/"

    client = Client(appid, secret)
    client.wxa.API_BASE_URL = base + "/"
    client.cloud.API_BASE_URL = base + "/"
    return client, OAuth(appid, secret, redirect_uri="https://example.com/cb")


def run(request, state):
    op = request["op"]
    if op == "init":
        state["client"], state["oauth"] = make_clients(
            request["appid"], request["secret"], request.get("base")
        )
        return None
    client, oauth = state["client"], state["oauth"]
    if op == "token":
        return client.access_token
    if op == "callback_ip":
        return client.misc.get_wechat_ips()
    if op == "cloud_function":
        return client.cloud.invoke_cloud_function(
            request["env"], request["name"], request.get("data")
        )
    if op == "user_info":
        return client.user.get(request["openid"])
    if op == "media":
        answer = client.media.download(request["media_id"])
        if isinstance(answer, dict):
            # A JSON body without an errcode the SDK raised on.
            return {"json": answer}
        return {
            "content_type": answer.headers.get("Content-Type"),
            "hex": answer.content.hex(),
        }
    if op == "oauth_userinfo":
        grant = oauth.fetch_access_token(request["code"])
        info = oauth.get_user_info()
        return {"grant": grant, "info": info}
    if op == "jscode2session":
        return client.wxa.code_to_session(request["js_code"])
    raise ValueError("unknown op " + op)


def main():
    state = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = {"ok": True, "value": run(json.loads(line), state)}
        except WeChatException as error:
            answer = {"ok": False, "errcode": error.errcode, "error": str(error)}
        except Exception as error:  # noqa: BLE001 - reported to the test
            answer = {"ok": False, "errcode": None, "error": repr(error)[:2000]}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
