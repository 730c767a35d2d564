// Drives a Node.js WeChat SDK for tests/sdk_node.rs, one JSON request a
// line on stdin, one JSON answer a line on stdout: {"ok":true,"value":...}
// or {"ok":false,"errcode":N|null,"error":"..."}. One process keeps one SDK
// instance, so its own token cache lives across requests as in a service.
//
// The first request is {"op":"init","sdk","appid","secret",...}; each SDK is
// pointed at the broker by its own setting:
//   co-wechat-api    the `prefix` and `snsPrefix` it builds every URL from
//                    ("base" = http://HOST:PORT; 3.11 has no setEndpoint)
//   wechat-api       setEndpoint(domain), which forces https://
//                    ("domain" = api.weixin.qq.com:PORT; the test maps the
//                    name to 127.0.0.1 for this process and trusts the CA)
//   node-easywechat  the axios config under `http`: { baseURL }
//                    ("base" = http://HOST:PORT)
// Calls an SDK has no method for (OAuth in co-wechat-api and wechat-api)
// go through that SDK's own request function and URL setting.
'use strict';

const readline = require('readline');
const { promisify } = require('util');

class WeChatError extends Error {
  constructor(errcode, errmsg) {
    super(errmsg);
    this.code = errcode;
  }
}

// A body carrying a non-zero errcode is a failure, as the SDKs judge it.
function checked(data) {
  if (data && typeof data === 'object' && data.errcode) {
    throw new WeChatError(data.errcode, data.errmsg);
  }
  return data;
}

function query(params) {
  return new URLSearchParams(params).toString();
}

function coWechatApi(init) {
  const API = require('co-wechat-api');
  const api = new API(init.appid, init.secret);
  api.prefix = init.base + '/cgi-bin/';
  api.snsPrefix = init.base + '/sns/';
  return {
    token: async () => (await api.ensureAccessToken()).accessToken,
    app_call: () => api.getIp(),
    user_info: (r) => api.getUser(r.openid),
    oauth_userinfo: async (r) => {
      const grant = await api.request(api.snsPrefix + 'oauth2/access_token?' + query({
        appid: init.appid, secret: init.secret, code: r.code, grant_type: 'authorization_code',
      }));
      const info = await api.request(api.snsPrefix + 'userinfo?' + query({
        access_token: grant.access_token, openid: grant.openid, lang: 'zh_CN',
      }));
      return { grant, info };
    },
    jscode2session: (r) => api.code2Session(r.js_code),
  };
}

function wechatApi(init) {
  const API = require('wechat-api');
  const api = new API(init.appid, init.secret);
  if (init.domain) {
    api.setEndpoint(init.domain);
  } else {
    // Only the driver's own check against the plain-HTTP simulator: the
    // documented setter would force https://.
    api.endpoint = init.base;
  }
  const raw = (url) => new Promise((resolve, reject) => {
    api.request(url, { dataType: 'json' }, (err, data) => (err ? reject(err) : resolve(data)));
  });
  const sns = async (path, params) => checked(await raw(api.endpoint + '/sns/' + path + '?' + query(params)));
  return {
    token: async () => (await promisify(api.getLatestToken.bind(api))()).accessToken,
    app_call: () => promisify(api.getIp.bind(api))(),
    user_info: (r) => promisify(api.getUser.bind(api))(r.openid),
    oauth_userinfo: async (r) => {
      const grant = await sns('oauth2/access_token', {
        appid: init.appid, secret: init.secret, code: r.code, grant_type: 'authorization_code',
      });
      const info = await sns('userinfo', {
        access_token: grant.access_token, openid: grant.openid, lang: 'zh_CN',
      });
      return { grant, info };
    },
    jscode2session: (r) => sns('jscode2session', {
      appid: init.appid, secret: init.secret, js_code: r.js_code, grant_type: 'authorization_code',
    }),
  };
}

function nodeEasyWechat(init) {
  const { OfficialAccount, MiniApp } = require('node-easywechat');
  const config = {
    app_id: init.appid,
    secret: init.secret,
    http: { baseURL: init.base + '/' },
    // The token cache is a file; each test runs in its own directory.
    file_cache: { path: init.cache_dir },
  };
  const app = new OfficialAccount(config);
  const mini = new MiniApp(config);
  const get = async (client, path, params) =>
    checked((await client.request('GET', path, { params })).toObject());
  return {
    token: () => app.getAccessToken().getToken(),
    app_call: () => get(app.getClient(), '/cgi-bin/getcallbackip', {}),
    user_info: (r) => get(app.getClient(), '/cgi-bin/user/info', { openid: r.openid, lang: 'zh_CN' }),
    oauth_userinfo: async (r) => {
      const http = app.getHttpClient();
      const grant = await get(http, '/sns/oauth2/access_token', {
        appid: init.appid, secret: init.secret, code: r.code, grant_type: 'authorization_code',
      });
      const info = await get(http, '/sns/userinfo', {
        access_token: grant.access_token, openid: grant.openid, lang: 'zh_CN',
      });
      return { grant, info };
    },
    jscode2session: (r) => mini.getUtils().codeToSession(r.js_code),
  };
}

const SDKS = {
  'co-wechat-api': coWechatApi,
  'wechat-api': wechatApi,
  'node-easywechat': nodeEasyWechat,
};

let sdk = null;

async function run(request) {
  if (request.op === 'init') {
    const make = SDKS[request.sdk];
    if (!make) throw new Error('unknown sdk ' + request.sdk);
    sdk = make(request);
    return null;
  }
  const op = sdk && sdk[request.op];
  if (!op) throw new Error('unknown op ' + request.op);
  return op(request);
}

function failure(error) {
  // co-wechat-api and wechat-api put the errcode in `code`; node-easywechat
  // (axios) errors carry the body in `response.data`.
  let errcode = typeof error.code === 'number' ? error.code : null;
  const body = error.response && error.response.data;
  if (errcode === null && body && typeof body.errcode === 'number') errcode = body.errcode;
  const match = errcode === null && /"errcode":\s*(-?\d+)/.exec(String(error.message));
  if (match) errcode = Number(match[1]);
  return { ok: false, errcode, error: String(error.stack || error).slice(0, 2000) };
}

// Answers go out in request order: the test sends one request at a time.
const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on('line', (line) => {
  if (!line.trim()) return;
  queue = queue.then(async () => {
    let answer;
    try {
      answer = { ok: true, value: (await run(JSON.parse(line))) ?? null };
    } catch (error) {
      answer = failure(error);
    }
    process.stdout.write(JSON.stringify(answer) + '\n');
  });
});
