// Drives Debian's headless Chromium (playwright-core, no downloaded browser) to a dashboard page
// served here on 127.0.0.1 that uses MQTT.js over WebSockets (tests/tests/mqtt_websockets.rs).
//
//   node dashboard.mjs BROKER_URL TOPIC EXPECTED
//
// Prints "subscribed" once the page has subscribed (the test then publishes EXPECTED on TOPIC
// from a device), then one JSON line {"value": ..., "status": ...} once the page shows
// EXPECTED, or after 30 s with what it shows. Exits non-zero if the page never subscribed.
import http from "node:http";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const [brokerUrl, topic, expected] = process.argv.slice(2);
const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const files = {
  "/": ["text/html", join(here, "dashboard.html")],
  "/mqtt.min.js": ["text/javascript", join(dirname(require.resolve("mqtt/package.json")), "dist", "mqtt.min.js")],
};
const server = http.createServer(async (req, res) => {
  const file = files[new URL(req.url, "http://x").pathname];
  if (!file) { res.writeHead(req.url === "/favicon.ico" ? 204 : 404).end(); return; }
  res.writeHead(200, { "content-type": file[0] }).end(await readFile(file[1]));
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const page_url = `http://127.0.0.1:${server.address().port}/?` +
  new URLSearchParams({ broker: brokerUrl, topic }).toString();

// The flags that work on these machines (closed network, root): no sandbox, no background
// networking, a fresh profile.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let code = 0;
try {
  const page = await browser.newPage();
  page.on("console", (msg) => console.error("page:", msg.text()));
  await page.goto(page_url);
  const status = page.locator("#status");
  try {
    await page.waitForFunction(() => document.getElementById("status").textContent === "subscribed",
      null, { timeout: 20000 });
  } catch {
    console.log(JSON.stringify({ value: null, status: await status.textContent() }));
    process.exitCode = 1;
    throw new Error("the page did not subscribe");
  }
  console.log("subscribed");
  try {
    await page.waitForFunction((want) => document.getElementById("value").textContent === want,
      expected, { timeout: 30000 });
  } catch { /* report what the page shows */ }
  console.log(JSON.stringify({ value: await page.textContent("#value"), status: await status.textContent() }));
} catch (err) {
  console.error(String(err));
  code = 1;
} finally {
  await browser.close();
  server.close();
}
process.exit(code);
