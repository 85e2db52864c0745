// A webhook receiver that verifies Triggers' Standard Webhooks signature and timestamp.
//
//     npm install standardwebhooks@1.1.1
//     WEBHOOK_SECRET=whsec_... PORT=4000 node examples/node/receiver.js
//
// Prints `verified <webhook-id> <type>` per accepted delivery and answers 204; a bad signature
// or a timestamp more than 5 minutes off (the library's tolerance) answers 401. Deliveries are
// at-least-once, so a repeated `webhook-id` is acknowledged again but processed only once.
"use strict";
const http = require("node:http");
const { Webhook } = require("standardwebhooks");

const webhook = new Webhook(process.env.WEBHOOK_SECRET);
const seen = new Set();

http
  .createServer((req, res) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      // Verify the exact bytes received, before parsing them.
      const body = Buffer.concat(chunks).toString("utf8");
      let event;
      try {
        event = webhook.verify(body, req.headers);
      } catch (err) {
        console.error(`refused: ${err.message}`);
        res.writeHead(401).end();
        return;
      }
      const id = req.headers["webhook-id"];
      if (!seen.has(id)) {
        seen.add(id);
        console.log(`verified ${id} ${event.type}`);
      }
      res.writeHead(204).end();
    });
  })
  .listen(Number(process.env.PORT || 4000), "127.0.0.1", function () {
    console.error(`receiver listening on http://127.0.0.1:${this.address().port}/`);
  });
