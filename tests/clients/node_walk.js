// Walks a Zendesk account through vendorgate with node-zendesk, unchanged but for its base URL
// (endpointUri) and token. Run by the end-to-end tests (tests/e2e/clients.rs) with VG_PORT and
// VG_TOKEN set and NODE_EXTRA_CA_CERTS trusting the proxy's dev CA. Prints what it read, as JSON.
'use strict';
const zendesk = require('node-zendesk');

const client = zendesk.createClient({
  endpointUri: `https://127.0.0.1:${process.env.VG_PORT}/api/v2`,
  token: process.env.VG_TOKEN,
  oauth: true,
});

(async () => {
  const read = {
    tickets: (await client.tickets.list()).length,
    comments: (await client.tickets.getComments(42)).length,
    search: (await client.search.queryAll('status:open')).length,
    // node-zendesk reads one page of an incremental export (it follows only pages of 1,000).
    incremental: (await client.tickets.incremental(1700000000)).length,
  };
  console.log(JSON.stringify(read));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
