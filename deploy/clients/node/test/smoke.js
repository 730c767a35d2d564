'use strict';
// Drives the client against a running broker (and, for the automatic
// invalidation, the WeChat simulator behind it). Prints one JSON object
// on stdout for tests/node_client.rs to check.
//
//   WXBROKER_SOCKET=/path/to/wxbroker.sock WXBROKER_APP=shop \
//   SIM_URL=http://127.0.0.1:PORT WX_APPID=... WX_SECRET=... node test/smoke.js

const { createClient } = require('..');

async function postJson(url, body) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return res.json();
}

async function main() {
  const env = 'test-2a8b';
  const client = createClient({ client: 'node-smoke' });
  let brokerCalls = 0;
  const request = client.request.bind(client);
  client.request = (...args) => {
    brokerCalls += 1;
    return request(...args);
  };

  const token = await client.getAccessToken();
  const again = await client.getAccessToken();
  const tokenRequests = brokerCalls;

  const fn = await client.callCloudFn(env, 'music', { $url: 'playlist', start: 0, count: 10 });
  const db = await client.callCloudDB(env, 'databasequery', 'db.collection("playlist").limit(10).get()');
  const added = await client.callCloudDB(env, 'databaseadd', 'db.collection("playlist").add({data:[{name:"a"}]})');
  const download = await client.cloudStorage.download(env, [
    { fileid: `cloud://${env}.7465/swiper/a.png`, max_age: 7200 },
  ]);
  const upload = await client.cloudStorage.uploadLink(env, 'swiper/b.png');
  const deleted = await client.cloudStorage.delete(env, [upload.file_id]);
  let badAction = null;
  try {
    await client.callCloudDB(env, 'databasedrop', 'x');
  } catch (err) {
    badAction = err.message;
  }

  // Someone else fetches tokens with the app's secret, as the old Koa code
  // did: the broker's token dies behind its back. A direct call made with
  // it is invalidated and retried once by withAccessToken.
  let direct = null;
  let after = null;
  if (process.env.SIM_URL) {
    const sim = process.env.SIM_URL;
    const rogue = `${sim}/cgi-bin/token?grant_type=client_credential&appid=${process.env.WX_APPID}&secret=${process.env.WX_SECRET}`;
    await fetch(rogue);
    await fetch(rogue);
    const used = [];
    direct = await client.withAccessToken(async (t) => {
      used.push(t);
      return postJson(`${sim}/tcb/databasequery?access_token=${encodeURIComponent(t)}`, {
        env,
        query: 'db.collection("playlist").get()',
      });
    });
    direct.attempts = used.length;
    after = await client.getAccessToken();
    direct.retried_with_new_token = used.length === 2 && used[1] === after && used[0] !== after;
  }

  process.stdout.write(
    JSON.stringify({
      token,
      cached: token === again && tokenRequests === 1,
      fn,
      db,
      added,
      download,
      upload,
      deleted,
      badAction,
      direct,
      after,
    }) + '\n',
  );
}

main().catch((err) => {
  process.stderr.write(`smoke failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
