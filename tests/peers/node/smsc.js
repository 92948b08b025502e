// A small SMSC built on the SMSC (server) side of npm `smpp`, for the connector's third-party
// test (tests/peers/test_npm_smsc.py). Usage: node smsc.js SYSTEM_ID PASSWORD
// Prints {"ready": <port>}, then one JSON line per bind and per submit_sm it takes:
//   {"submit": {"id", "source", "destination", "message", "udh"}}.
// Reads commands on stdin, one per line: "MO <source> <destination> <text...>" sends an MO
// (deliver_sm) to the receiver-capable session. Every submit_sm gets a receipt (deliver_sm,
// esm_class 4) with the id in the text and in receipted_message_id.
"use strict";
const smpp = require("smpp");
const readline = require("readline");

const [systemId, password] = process.argv.slice(2);
let nextId = 0x5a000;
const receivers = new Set();

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const server = smpp.createServer({}, (session) => {
  let bound = false;
  const onBind = (pdu) => {
    if (pdu.system_id !== systemId || pdu.password !== password) {
      session.send(pdu.response({ command_status: smpp.ESME_RINVPASWD }));
      return;
    }
    bound = true;
    session.send(pdu.response({ system_id: "npm-smsc" }));
    if (pdu.command !== "bind_transmitter") receivers.add(session);
    out({ bound: pdu.command });
  };
  session.on("bind_transceiver", onBind);
  session.on("bind_transmitter", onBind);
  session.on("bind_receiver", onBind);
  session.on("enquire_link", (pdu) => session.send(pdu.response()));
  session.on("unbind", (pdu) => {
    session.send(pdu.response());
    receivers.delete(session);
    out({ unbound: true });
    session.close();
  });
  session.on("close", () => receivers.delete(session));
  session.on("error", () => receivers.delete(session));
  session.on("submit_sm", (pdu) => {
    if (!bound) {
      session.send(pdu.response({ command_status: smpp.ESME_RINVBNDSTS }));
      return;
    }
    const id = (nextId++).toString(16).toUpperCase();
    session.send(pdu.response({ message_id: id }));
    const sm = pdu.short_message || {};
    out({
      submit: {
        id,
        source: pdu.source_addr,
        destination: pdu.destination_addr,
        message: typeof sm.message === "string" ? sm.message : Buffer.from(sm.message || []).toString("hex"),
        udh: (sm.udh || []).map((u) => Buffer.from(u).toString("hex")),
      },
    });
    const target = receivers.has(session) ? session : [...receivers][0];
    if (target) {
      target.deliver_sm({
        esm_class: smpp.ESM_CLASS.MC_DELIVERY_RECEIPT,
        short_message: `id:${id} sub:001 dlvrd:001 submit date:2601010000 done date:2601010000 stat:DELIVRD err:000 Text:`,
        receipted_message_id: id,
        message_state: smpp.MESSAGE_STATE.DELIVERED,
      });
    }
  });
});

server.listen(0, "127.0.0.1", () => out({ ready: server.address().port }));

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [cmd, source, destination, ...words] = line.trim().split(" ");
  if (cmd === "MO") {
    const target = [...receivers][0];
    if (!target) return out({ mo: "no receiver bound" });
    target.deliver_sm({ source_addr: source, destination_addr: destination, short_message: words.join(" ") });
    out({ mo: "sent" });
  }
});
