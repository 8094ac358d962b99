// screenshots.mjs - `make screenshots`: walks a private namespace through
// every phase with the CLI (the runbook's commands) and saves the console of
// each under docs/img/ (laptop width), plus one at phone width. Needs the
// same environment as the tests (tests/browser/run-screenshots.sh sets it).
import { mkdirSync, mkdtempSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { cleanDb, stepq, serve, browser, until } from "./lib.mjs";

const out = process.argv[2] || "docs/img";
mkdirSync(out, { recursive: true });
const tmp = mkdtempSync(join(tmpdir(), "stepq-shots-"));
const run = (...a) => {
  const r = stepq(...a);
  if (r.code !== 0) throw new Error(`stepq ${a.join(" ")} exited ${r.code}: ${r.err}`);
  return r;
};

cleanDb();
for (let i = 0; i < 40; i++) run("submit", "--type", "demo", "--priority", String(i % 5));
for (let i = 0; i < 6; i++) {
  const c = JSON.parse(run("claim", "--worker", "w1").out || "null");
  if (c && i % 2 === 0) run("complete", c.id, "--token", c.token, "--result", "{}");
}
const srv = await serve();
const br = await browser();
const page = await br.newPage({ viewport: { width: 1280, height: 1000 } });
page.on("dialog", (d) => d.accept());
await page.goto(srv.url + "/");
async function shot(name, phase) {
  await until(async () => (await page.locator("#phase").innerText()) === phase, 10000, phase);
  await page.waitForTimeout(2300); // a fresh poll after the cache's 2 s
  await page.screenshot({ path: join(out, `console-${name}.png`), fullPage: true });
  console.log(`saved ${join(out, `console-${name}.png`)}`);
}
const steps = [
  ["job", []],
  ["dual-write", [["migrate", "phase", "dual-write"], ["migrate", "backfill"], ["migrate", "verify"]]],
  ["dual-read", [["migrate", "phase", "dual-read"], ["migrate", "verify"]]],
  ["step-primary", [["migrate", "phase", "step-primary"], ["migrate", "backup", "--out", join(tmp, "a.stepq"), "--side", "old"]]],
  ["step", [["migrate", "phase", "step"]]],
];
for (const [phase, cmds] of steps) {
  for (const c of cmds) run(...c);
  await shot(phase, phase);
}
await page.setViewportSize({ width: 390, height: 844 });
await page.waitForTimeout(500);
await page.screenshot({ path: join(out, "console-phone.png"), fullPage: false });
console.log(`saved ${join(out, "console-phone.png")}`);
await br.close();
srv.proc.kill("SIGTERM");
