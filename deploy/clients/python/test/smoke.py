"""Drives the Python client against a running broker (and the WeChat
simulator behind it). Prints one JSON object on stdout for
tests/python_client.rs to check.

    WXBROKER_SOCKET=/path/to/wxbroker.sock WXBROKER_APP=shop \\
    PAGE_URL=https://... python3 test/smoke.py
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from wxbroker_client import WxBroker, WxBrokerError  # noqa: E402


def failure(call):
    try:
        call()
    except WxBrokerError as err:
        return {"status": err.status, "code": err.code}
    return None


def main():
    broker = WxBroker(client="python-smoke")
    calls = []
    request = broker.request

    def counted(*args, **kwargs):
        calls.append(args[1])
        return request(*args, **kwargs)

    broker.request = counted
    token = broker.get_access_token()
    again = broker.get_access_token()
    cached_token = again == token and len(calls) == 1

    # A token WeChat rejected: the broker replaces it (the test set
    # min_forced_interval to 0) and the client uses the new one.
    fresh = broker.invalidate(token)
    # A call through the broker's proxy: the broker adds its token.
    ip_list = broker.wechat("cgi-bin/getcallbackip", method="GET")

    ticket = broker.get_ticket("jsapi")
    before = len(calls)
    cached_ticket = broker.get_ticket() == ticket and len(calls) == before
    config = broker.jssdk_config(os.environ["PAGE_URL"])

    json.dump(
        {
            "token": token,
            "cached_token": cached_token,
            "fresh": fresh,
            "ip_list": ip_list,
            "ticket": ticket,
            "cached_ticket": cached_ticket,
            "config": config,
            "not_configured": failure(lambda: broker.get_ticket("agent_config")),
            "bad_url": failure(lambda: broker.jssdk_config("/relative/page")),
            "unknown_app": failure(lambda: WxBroker(app="nope").get_access_token()),
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
