"""wxbroker client for Python 3.8+, standard library only.

Talks to a local wxbroker over its Unix socket (or TCP on loopback):
``get_access_token()`` with a short cache, ``invalidate(token)``,
``get_ticket(kind)`` and ``jssdk_config(url)`` for pages using WeChat's
JS-SDK, and the
usual cloud-development helpers (``call_cloud_fn``, ``call_cloud_db``,
``cloud_storage``) going through the broker's proxy, which adds the token
and refreshes and retries once when WeChat rejects it.

    from wxbroker_client import WxBroker

    broker = WxBroker(socket_path="/run/wxbroker/wxbroker.sock", app="shop",
                      client="orders-api")
    token = broker.get_access_token()
    config = broker.jssdk_config("https://shop.example.com/pay?order=42")
    answer = broker.call_cloud_fn("prod-3f9a", "music", {"$url": "playlist"})
    rows = broker.call_cloud_db("prod-3f9a", "databasequery",
                                'db.collection("playlist").limit(10).get()')
    links = broker.cloud_storage.download("prod-3f9a",
                                          [{"fileid": "cloud://...", "max_age": 7200}])
"""

import http.client
import json
import os
import socket
import threading
import time
import urllib.parse

__all__ = ["WxBroker", "WxBrokerError", "TOKEN_REJECTED"]

#: WeChat errcodes meaning "this access_token is dead".
TOKEN_REJECTED = frozenset({40001, 40014, 42001})

#: A token is reused for at most this long.
MAX_CACHE_SECONDS = 60.0

DATABASE_ACTIONS = ("databasequery", "databaseadd", "databaseupdate", "databasedelete")


class WxBrokerError(Exception):
    """The broker refused or failed a request; ``code`` is its error code."""

    def __init__(self, message, status=None, code=None, body=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.body = body


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class _CloudStorage:
    def __init__(self, broker):
        self._broker = broker

    def upload_link(self, env, path):
        """POST tcb/uploadfile: url, token, authorization, file_id, cos_file_id."""
        return self._broker.wechat("tcb/uploadfile", body={"env": env, "path": path})

    def download(self, env, file_list):
        """POST tcb/batchdownloadfile; file_list: [{"fileid": .., "max_age": ..}]."""
        return self._broker.wechat(
            "tcb/batchdownloadfile", body={"env": env, "file_list": file_list}
        )

    def delete(self, env, fileid_list):
        """POST tcb/batchdeletefile; fileid_list: ["cloud://..."]."""
        return self._broker.wechat(
            "tcb/batchdeletefile", body={"env": env, "fileid_list": fileid_list}
        )


class WxBroker:
    """A client of one wxbroker app. Thread-safe."""

    def __init__(self, socket_path=None, host=None, port=None, app=None,
                 client=None, timeout=35.0):
        env = os.environ
        self.host = host or (None if socket_path else env.get("WXBROKER_HOST"))
        self.port = int(port or env.get("WXBROKER_PORT") or 8930)
        self.socket_path = None if self.host else (
            socket_path or env.get("WXBROKER_SOCKET") or "/run/wxbroker/wxbroker.sock"
        )
        self.app = app or env.get("WXBROKER_APP") or None
        self.client = client or env.get("WXBROKER_CLIENT") or "python"
        # Above the broker's own 30 s upstream timeout.
        self.timeout = timeout
        self._lock = threading.Lock()
        self._cached = None  # (token, monotonic deadline)
        self._tickets = {}  # kind -> (ticket, monotonic deadline)
        self._app_name = None  # resolved once when no app is given
        self.cloud_storage = _CloudStorage(self)

    def _app_path(self, suffix):
        if self.app:
            return "/v1/apps/%s/%s" % (urllib.parse.quote(self.app, safe=""), suffix)
        return "/v1/" + suffix

    def request(self, method, path, body=None, headers=None):
        """One request to the broker: (status, headers, body), the body
        parsed when it is JSON."""
        sent = {"Wxbroker-Client": self.client}
        sent.update(headers or {})
        payload = None
        if body is not None:
            payload = body if isinstance(body, (bytes, str)) else json.dumps(body)
            if isinstance(payload, str):
                payload = payload.encode("utf-8")
            sent.setdefault("Content-Type", "application/json")
        if self.socket_path:
            conn = _UnixConnection(self.socket_path, self.timeout)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=payload, headers=sent)
            response = conn.getresponse()
            raw = response.read()
            answer_headers = dict(response.getheaders())
            status = response.status
        finally:
            conn.close()
        content_type = response.getheader("Content-Type", "") or ""
        parsed = raw
        if "json" in content_type.lower():
            try:
                parsed = json.loads(raw.decode("utf-8"))
            except ValueError:
                parsed = raw.decode("utf-8", "replace")
        return status, answer_headers, parsed

    @staticmethod
    def _fail(what, status, body):
        error = body.get("error", {}) if isinstance(body, dict) else {}
        return WxBrokerError(
            "%s: %s %s %s" % (what, status, error.get("code", ""), error.get("message", "")),
            status=status, code=error.get("code"), body=body,
        )

    def _remember(self, answer):
        lifetime = min(MAX_CACHE_SECONDS, max(0.0, float(answer["expires_in"])))
        self._cached = (answer["access_token"], time.monotonic() + lifetime)

    def get_access_token(self):
        """The app's current token, reused for at most 60 s (or until it expires)."""
        with self._lock:
            if self._cached and time.monotonic() < self._cached[1]:
                return self._cached[0]
            status, _, body = self.request("GET", self._app_path("token"))
            if status != 200:
                raise self._fail("token request failed", status, body)
            self._remember(body)
            return body["access_token"]

    def invalidate(self, token):
        """Reports a token WeChat rejected; returns the token to use now."""
        with self._lock:
            self._cached = None
            status, _, body = self.request(
                "POST", self._app_path("token/invalidate"), body={"access_token": token}
            )
            if status != 200:
                raise self._fail("invalidate failed", status, body)
            self._remember(body)
            return body["access_token"]

    def _resolved_app(self):
        """The app's name: the configured one, else the broker's only app."""
        if self.app:
            return self.app
        if self._app_name is None:
            status, _, body = self.request("GET", "/v1/apps")
            if status != 200:
                raise self._fail("listing apps failed", status, body)
            apps = body.get("apps", [])
            if len(apps) != 1:
                raise WxBrokerError(
                    "the broker has %d apps; name one with app=" % len(apps),
                    code="no_default_app",
                )
            self._app_name = apps[0]["name"]
        return self._app_name

    def _named_path(self, suffix):
        return "/v1/apps/%s/%s" % (urllib.parse.quote(self._resolved_app(), safe=""), suffix)

    def get_ticket(self, kind="jsapi"):
        """The app's current JS-SDK ticket of ``kind`` (``"jsapi"``,
        ``"wx_card"``, or for WeCom ``"agent_config"``), reused for at most
        60 s. Most pages need no ticket: ``jssdk_config`` signs inside the
        broker."""
        with self._lock:
            cached = self._tickets.get(kind)
            if cached and time.monotonic() < cached[1]:
                return cached[0]
            path = self._named_path("tickets/" + urllib.parse.quote(kind, safe=""))
            status, _, body = self.request("GET", path)
            if status != 200:
                raise self._fail("%s ticket request failed" % kind, status, body)
            lifetime = min(MAX_CACHE_SECONDS, max(0.0, float(body["expires_in"])))
            self._tickets[kind] = (body["ticket"], time.monotonic() + lifetime)
            return body["ticket"]

    def jssdk_config(self, url, agent=False):
        """The dict ``wx.config`` takes for the page at ``url`` (its full URL;
        the ``#`` part is ignored): appId, timestamp, nonceStr, signature.
        With ``agent=True`` on a WeCom app, ``wx.agentConfig``'s: corpid,
        agentid, timestamp, nonceStr, signature. Never cached."""
        body = {"url": url, "agent": True} if agent else {"url": url}
        status, _, answer = self.request("POST", self._named_path("jssdk/config"), body=body)
        if status != 200:
            raise self._fail("jssdk config failed", status, answer)
        return answer

    def with_access_token(self, call):
        """Runs ``call(token)`` (your own WeChat call, returning its JSON
        answer); on 40001/40014/42001 invalidates and runs it once more."""
        token = self.get_access_token()
        answer = call(token)
        errcode = answer.get("errcode") if isinstance(answer, dict) else None
        if errcode not in TOKEN_REJECTED:
            return answer
        fresh = self.invalidate(token)
        return answer if fresh == token else call(fresh)

    def wechat(self, path, method="POST", query=None, body=None):
        """Any WeChat API through the broker's proxy; ``path`` is relative
        to the API base, e.g. ``"tcb/databasequery"``. Returns WeChat's answer."""
        clean = path.lstrip("/")
        target = self._app_path("proxy/" + clean)
        if query:
            target += "?" + urllib.parse.urlencode(query)
        if body is None and method == "POST":
            body = {}
        status, _, answer = self.request(method, target, body=body)
        if status != 200 and not (isinstance(answer, dict) and "errcode" in answer):
            raise self._fail("proxied call to %s failed" % clean, status, answer)
        return answer

    def call_cloud_fn(self, env, name, params=None):
        """POST tcb/invokecloudfunction with ``params`` as the event."""
        return self.wechat(
            "tcb/invokecloudfunction", query={"env": env, "name": name}, body=params or {}
        )

    def call_cloud_db(self, env, action, query):
        """The cloud database: ``action`` is one of databasequery,
        databaseadd, databaseupdate, databasedelete."""
        if action not in DATABASE_ACTIONS:
            raise WxBrokerError(
                "unknown database action %r; expected one of %s"
                % (action, ", ".join(DATABASE_ACTIONS))
            )
        return self.wechat("tcb/" + action, body={"env": env, "query": query})
