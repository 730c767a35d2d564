'use strict';
// Drives the client's JS-SDK helpers against a running broker whose app
// owns the jsapi ticket. Prints one JSON object on stdout for
// tests/node_client.rs to check.
//
//   WXBROKER_SOCKET=/path/to/wxbroker.sock PAGE_URL=https://... node test/tickets.js

const { createClient } = require('..');

async function main() {
  // No app named: the client finds the broker's only app.
  const client = createClient({ client: 'node-tickets' });
  let brokerCalls = 0;
  const request = client.request.bind(client);
  client.request = (...args) => {
    brokerCalls += 1;
    return request(...args);
  };
  const ticket = await client.getTicket('jsapi');
  const before = brokerCalls;
  const again = await client.getTicket();
  const cachedTicket = again === ticket && brokerCalls === before;
  const config = await client.jssdkConfig(process.env.PAGE_URL);
  let notConfigured = null;
  try {
    await client.getTicket('agent_config');
  } catch (err) {
    notConfigured = { status: err.status, code: err.code };
  }
  let badUrl = null;
  try {
    await client.jssdkConfig('/relative/page');
  } catch (err) {
    badUrl = { status: err.status, code: err.code };
  }
  process.stdout.write(`${JSON.stringify({ ticket, cachedTicket, config, notConfigured, badUrl })}\n`);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
