'use strict';
// wxbroker client for Node.js 18+, no dependencies.
//
// Talks to a local wxbroker over its Unix socket (or TCP on loopback):
// getAccessToken() with a short cache, invalidate(token), getTicket(kind)
// and jssdkConfig(url) for pages using WeChat's JS-SDK, and drop-in
// replacements for the usual Koa backend helpers (callCloudFn, callCloudDB,
// cloudStorage) that go through the broker's proxy, so the token never
// leaves the broker and a rejected token is refreshed and retried there.

const http = require('http');

/** WeChat errcodes meaning "this access_token is dead". */
const TOKEN_REJECTED = new Set([40001, 40014, 42001]);

/** A token is reused for at most this long (DESIGN: at most 60 s). */
const MAX_CACHE_MS = 60 * 1000;

const DATABASE_ACTIONS = new Set([
  'databasequery',
  'databaseadd',
  'databaseupdate',
  'databasedelete',
]);

class WxBrokerError extends Error {
  constructor(message, { status, code, body } = {}) {
    super(message);
    this.name = 'WxBrokerError';
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

class WxBroker {
  /**
   * @param {object} [options]
   * @param {string} [options.socketPath] Unix socket (default
   *   $WXBROKER_SOCKET or /run/wxbroker/wxbroker.sock unless host is given).
   * @param {string} [options.host] TCP host instead of the socket.
   * @param {number} [options.port] TCP port (default 8930).
   * @param {string} [options.app] App name; omitted: the only configured app.
   * @param {string} [options.client] Wxbroker-Client header (default
   *   $WXBROKER_CLIENT or "node").
   * @param {number} [options.timeoutMs] Per request (default 35000, above
   *   the broker's own 30 s upstream timeout).
   */
  constructor(options = {}) {
    const env = process.env;
    this.host = options.host || (options.socketPath ? undefined : env.WXBROKER_HOST);
    this.port = options.port || Number(env.WXBROKER_PORT) || 8930;
    this.socketPath = this.host
      ? undefined
      : options.socketPath || env.WXBROKER_SOCKET || '/run/wxbroker/wxbroker.sock';
    this.app = options.app || env.WXBROKER_APP || undefined;
    this.client = options.client || env.WXBROKER_CLIENT || 'node';
    this.timeoutMs = options.timeoutMs || 35000;
    this._cached = null; // { token, until }
    this._pending = null;
    this._tickets = new Map(); // kind -> { ticket, until }
    this._appName = null; // resolved once when no app is given
    const self = this;
    this.cloudStorage = {
      /** Upload link for `path` (POST tcb/uploadfile): url, token, authorization, file_id, cos_file_id. */
      uploadLink(env, path) {
        return self.wechat('tcb/uploadfile', { body: { env, path } });
      },
      /** Download links (POST tcb/batchdownloadfile); fileList: [{ fileid, max_age }]. */
      download(env, fileList) {
        return self.wechat('tcb/batchdownloadfile', { body: { env, file_list: fileList } });
      },
      /** Deletes files (POST tcb/batchdeletefile); fileidList: ['cloud://...']. */
      delete(env, fileidList) {
        return self.wechat('tcb/batchdeletefile', { body: { env, fileid_list: fileidList } });
      },
    };
  }

  _appPath(suffix) {
    return this.app
      ? `/v1/apps/${encodeURIComponent(this.app)}/${suffix}`
      : `/v1/${suffix}`;
  }

  /**
   * One request to the broker. Resolves { status, headers, body } with the
   * body parsed as JSON when it is JSON.
   */
  request(method, path, { body, headers = {} } = {}) {
    let payload;
    const sent = { 'wxbroker-client': this.client, ...headers };
    if (body !== undefined) {
      payload = Buffer.isBuffer(body) || typeof body === 'string' ? body : JSON.stringify(body);
      if (!Object.keys(sent).some((name) => name.toLowerCase() === 'content-type')) {
        sent['content-type'] = 'application/json';
      }
      sent['content-length'] = Buffer.byteLength(payload);
    }
    const target = this.socketPath
      ? { socketPath: this.socketPath }
      : { host: this.host, port: this.port };
    return new Promise((resolve, reject) => {
      const req = http.request(
        { ...target, method, path, headers: sent, timeout: this.timeoutMs },
        (res) => {
          const chunks = [];
          res.on('data', (chunk) => chunks.push(chunk));
          res.on('error', reject);
          res.on('end', () => {
            const raw = Buffer.concat(chunks);
            let parsed = raw;
            if (/json/i.test(res.headers['content-type'] || '')) {
              try {
                parsed = JSON.parse(raw.toString('utf8'));
              } catch (err) {
                parsed = raw.toString('utf8');
              }
            }
            resolve({ status: res.statusCode, headers: res.headers, body: parsed });
          });
        },
      );
      req.on('timeout', () => req.destroy(new WxBrokerError(`wxbroker did not answer within ${this.timeoutMs} ms`, { code: 'timeout' })));
      req.on('error', reject);
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }

  static _fail(what, reply) {
    const error = reply.body && reply.body.error ? reply.body.error : {};
    return new WxBrokerError(`${what}: ${reply.status} ${error.code || ''} ${error.message || ''}`.trim(), {
      status: reply.status,
      code: error.code,
      body: reply.body,
    });
  }

  /** The app's current token, reused for at most 60 s (or until it expires). */
  async getAccessToken() {
    const now = Date.now();
    if (this._cached && now < this._cached.until) return this._cached.token;
    if (!this._pending) {
      this._pending = (async () => {
        try {
          const reply = await this.request('GET', this._appPath('token'));
          if (reply.status !== 200) throw WxBroker._fail('token request failed', reply);
          this._remember(reply.body);
          return reply.body.access_token;
        } finally {
          this._pending = null;
        }
      })();
    }
    return this._pending;
  }

  _remember(answer) {
    const lifetime = Math.min(MAX_CACHE_MS, Math.max(0, answer.expires_in * 1000));
    this._cached = { token: answer.access_token, until: Date.now() + lifetime };
  }

  /**
   * Reports a token WeChat rejected (40001, 40014, 42001). The broker
   * refreshes only if it is still current; resolves the token to use now.
   */
  async invalidate(token) {
    this._cached = null;
    const reply = await this.request('POST', this._appPath('token/invalidate'), {
      body: { access_token: token },
    });
    if (reply.status !== 200) throw WxBroker._fail('invalidate failed', reply);
    this._remember(reply.body);
    return reply.body.access_token;
  }

  /** The app's name: the configured one, else the broker's only app. */
  async _resolvedApp() {
    if (this.app) return this.app;
    if (!this._appName) {
      const reply = await this.request('GET', '/v1/apps');
      if (reply.status !== 200) throw WxBroker._fail('listing apps failed', reply);
      const apps = reply.body.apps || [];
      if (apps.length !== 1) {
        throw new WxBrokerError(`the broker has ${apps.length} apps; name one with the app option`, { code: 'no_default_app' });
      }
      this._appName = apps[0].name;
    }
    return this._appName;
  }

  async _ticketPath(suffix) {
    return `/v1/apps/${encodeURIComponent(await this._resolvedApp())}/${suffix}`;
  }

  /**
   * The app's current JS-SDK ticket of `kind` ("jsapi", "wx_card", or for
   * WeCom "agent_config"), reused for at most 60 s. Most pages need no
   * ticket at all: jssdkConfig(url) signs with it inside the broker.
   */
  async getTicket(kind = 'jsapi') {
    const cached = this._tickets.get(kind);
    if (cached && Date.now() < cached.until) return cached.ticket;
    const path = await this._ticketPath(`tickets/${encodeURIComponent(kind)}`);
    const reply = await this.request('GET', path);
    if (reply.status !== 200) throw WxBroker._fail(`${kind} ticket request failed`, reply);
    const lifetime = Math.min(MAX_CACHE_MS, Math.max(0, reply.body.expires_in * 1000));
    this._tickets.set(kind, { ticket: reply.body.ticket, until: Date.now() + lifetime });
    return reply.body.ticket;
  }

  /**
   * The object `wx.config` takes for the page at `url` (the page's full
   * URL; its `#` part is ignored): { appId, timestamp, nonceStr, signature }.
   * With { agent: true } on a WeCom app, `wx.agentConfig`'s object instead:
   * { corpid, agentid, timestamp, nonceStr, signature }. Never cached: each
   * page view gets its own nonce.
   */
  async jssdkConfig(url, { agent = false } = {}) {
    const body = agent ? { url, agent: true } : { url };
    const reply = await this.request('POST', await this._ticketPath('jssdk/config'), { body });
    if (reply.status !== 200) throw WxBroker._fail('jssdk config failed', reply);
    return reply.body;
  }

  /**
   * Runs `call(token)` (your own call to WeChat with the token) and, when
   * it resolves to an answer with a token-rejected errcode, invalidates the
   * token and runs it once more with the new one.
   */
  async withAccessToken(call) {
    const token = await this.getAccessToken();
    const answer = await call(token);
    const errcode = answer && (answer.errcode !== undefined ? answer.errcode : answer.data && answer.data.errcode);
    if (!TOKEN_REJECTED.has(errcode)) return answer;
    const fresh = await this.invalidate(token);
    return fresh === token ? answer : call(fresh);
  }

  /**
   * Any WeChat API through the broker's proxy, which adds the token (and
   * refreshes it and retries once if WeChat rejects it). `path` is relative
   * to the API base, e.g. "tcb/databasequery". Resolves WeChat's JSON answer.
   */
  async wechat(path, { method = 'POST', query, body } = {}) {
    const search = query ? `?${new URLSearchParams(query).toString()}` : '';
    const clean = String(path).replace(/^\/+/, '');
    const reply = await this.request(method, this._appPath(`proxy/${clean}${search}`), {
      body: body === undefined && method === 'POST' ? {} : body,
    });
    if (reply.status !== 200 && !(reply.body && reply.body.errcode !== undefined)) {
      throw WxBroker._fail(`proxied call to ${clean} failed`, reply);
    }
    return reply.body;
  }

  /** POST tcb/invokecloudfunction: the seed's callCloudFn(ctx, name, params) with env explicit. */
  callCloudFn(env, name, params = {}) {
    return this.wechat('tcb/invokecloudfunction', { query: { env, name }, body: params });
  }

  /**
   * The cloud database: action is databasequery, databaseadd,
   * databaseupdate or databasedelete; query a database statement string.
   */
  callCloudDB(env, action, query) {
    if (!DATABASE_ACTIONS.has(action)) {
      return Promise.reject(new WxBrokerError(`unknown database action ${action}; expected one of ${[...DATABASE_ACTIONS].join(', ')}`));
    }
    return this.wechat(`tcb/${action}`, { body: { env, query } });
  }
}

/** A client with the given options (see the WxBroker constructor). */
function createClient(options) {
  return new WxBroker(options);
}

module.exports = { WxBroker, WxBrokerError, createClient, TOKEN_REJECTED };
