// Walks a Zendesk account through vendorgate with node-zendesk, unchanged but for its base URL
// (endpointUri) and token. Run by the end-to-end tests (tests/e2e/clients.rs) with VG_PORT and
// VG_TOKEN set (and VG_FIELDS, ticket fields whose values to report) and NODE_EXTRA_CA_CERTS trusting the proxy's dev CA. Prints what it read, as JSON.
'use strict';
const zendesk = require('node-zendesk');
// node-zendesk's own transport, for the download it leaves to the application.
const { fetch } = require('cross-fetch');

const client = zendesk.createClient({
  endpointUri: `https://127.0.0.1:${process.env.VG_PORT}/api/v2`,
  token: process.env.VG_TOKEN,
  oauth: true,
});

// An attachment as a node-zendesk application downloads one: its content_url, with the same
// Authorization, redirects followed.
async function download(id) {
  const { result } = await client.attachments.show(id);
  const { content_url: url } = result.attachment ?? result;
  const response = await fetch(url, {
    headers: { Authorization: `Bearer ${process.env.VG_TOKEN}` },
  });
  if (!response.ok) throw new Error(`download: ${response.status}`);
  return (await response.arrayBuffer()).byteLength;
}

// VG_FIELDS="description,recipient": also report every value those ticket fields took (redaction).
const fields = (process.env.VG_FIELDS || '').split(',').filter(Boolean);

(async () => {
  const tickets = await client.tickets.list();
  // VG_TICKET: the ticket whose comments are read (default 42).
  const comments = await client.tickets.getComments(Number(process.env.VG_TICKET || 42));
  const search = await client.search.queryAll('status:open');
  // node-zendesk reads one page of an incremental export (it follows only pages of 1,000).
  const incremental = await client.tickets.incremental(1700000000);
  const read = {
    tickets: tickets.length,
    comments: comments.length,
    search: search.length,
    incremental: incremental.length,
    attachment_bytes: await download(7),
  };
  // VG_GROUPS=1: also report the group_id of every ticket each walk received (record scoping).
  if (process.env.VG_GROUPS) {
    const groups = (records) => [...new Set(records.map((t) => t.group_id ?? null))].sort();
    read.groups = { tickets: groups(tickets), search: groups(search), incremental: groups(incremental) };
  }
  if (fields.length) {
    read.fields = Object.fromEntries(fields.map((f) => {
      const values = [...new Set(tickets.map((t) => (f in t ? t[f] : null)))];
      return [f, values.sort((a, b) => String(a).localeCompare(String(b)))];
    }));
  }
  console.log(JSON.stringify(read));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
