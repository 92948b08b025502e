// An ESME written with the npm `smpp` package, driven by tests/peers/test_npm_smpp.py.
//
// Usage: node esme.js <port> <system_id> <password> <jobs.json> <wait_receipts_ms>
// jobs.json: [{"destination_addr": "...", "short_message": "...", ...submit_sm params}]
// Prints one JSON object on stdout: {bind, submits: [{status, message_id}], deliver: [...]}.
// Each job is submitted with the library's own defaults (it picks data_coding itself: GSM
// text goes out as data_coding 1), which is the point: the bridge must cope with what this
// widely used client really sends.
'use strict';
const smpp = require('smpp');

const [port, systemId, password, jobsFile, waitMs] = process.argv.slice(2);
const jobs = JSON.parse(require('fs').readFileSync(jobsFile, 'utf8'));
const out = { bind: null, submits: [], deliver: [] };
let finished = false;

function finish(code) {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(code);
}

const session = smpp.connect({ url: `smpp://127.0.0.1:${port}`, auto_enquire_link_period: 10000 });
session.on('error', (e) => { out.error = String(e); finish(2); });
session.on('deliver_sm', (pdu) => {
  const msg = pdu.short_message && pdu.short_message.message !== undefined
    ? pdu.short_message.message : pdu.short_message;
  out.deliver.push({
    esm_class: pdu.esm_class,
    source_addr: pdu.source_addr,
    destination_addr: pdu.destination_addr,
    data_coding: pdu.data_coding,
    text: Buffer.isBuffer(msg) ? msg.toString('latin1') : String(msg),
    receipted_message_id: pdu.receipted_message_id || null,
    message_state: pdu.message_state === undefined ? null : pdu.message_state,
  });
  session.send(pdu.response());
});

session.bind_transceiver({ system_id: systemId, password: password }, async (pdu) => {
  out.bind = pdu.command_status;
  if (pdu.command_status !== 0) return finish(1);
  for (const job of jobs) {
    const resp = await new Promise((resolve) => session.submit_sm(job, resolve));
    out.submits.push({ status: resp.command_status, message_id: resp.message_id || null });
  }
  const wanted = jobs.filter((j) => j.registered_delivery).length;
  const deadline = Date.now() + Number(waitMs);
  const tick = setInterval(() => {
    const receipts = out.deliver.filter((d) => d.esm_class & 0x04).length;
    if (receipts >= wanted || Date.now() > deadline) {
      clearInterval(tick);
      session.unbind(() => { session.close(); finish(0); });
    }
  }, 50);
});
