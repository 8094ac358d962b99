// console.test.mjs - the console of `stepq serve` in a real browser: it
// loads with no console error, shows the phase, key counts and verify the
// API answers, and moves the phase only with the token (a refusal shows the
// tool's own text). Run by ctest as browser_console (database 112).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TOKEN, cleanDb, stepq, serve, browser, getJson, until } from "./lib.mjs";

let srv, br, page;
const problems = []; // console errors and uncaught exceptions of the page

before(async () => {
  cleanDb();
  for (let i = 0; i < 5; i++) assert.equal(stepq("submit", "--type", "t" + i).code, 0);
  srv = await serve();
  br = await browser();
  page = await br.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
  page.on("pageerror", (e) => problems.push(String(e)));
  page.on("dialog", (d) => d.accept()); // the confirmation of an action
});

after(async () => {
  if (br) await br.close();
  if (srv) srv.proc.kill("SIGTERM");
});

const api = async () => (await getJson(srv.url + "/health/redis-migration")).body;
const text = (sel) => page.locator(sel).innerText();
const shownPhase = () => text("#phase");

// The key counts the page shows, as {rule: [old, new]}.
async function shownKeys() {
  return page.$$eval("#keys tbody tr", (rows) => Object.fromEntries(rows.map((r) => {
    const td = r.querySelectorAll("td");
    const n = (i) => Number(td[i].textContent.replace(/[^0-9]/g, ""));
    return [r.dataset.rule, [n(2), n(4)]];
  })));
}

test("the page loads with no console error", async () => {
  const r = await page.goto(srv.url + "/");
  assert.equal(r.status(), 200);
  await page.waitForSelector("body[data-ready='1']");
  assert.match(r.headers()["content-security-policy"], /script-src 'self'/);
  await page.waitForTimeout(2500); // one more poll
  assert.deepEqual(problems, []);
});

test("the phase and key counts shown are the API's", async () => {
  const a = await api();
  assert.equal(await shownPhase(), a.phase);
  assert.equal(await page.locator("#timeline li.current").innerText(), a.phase);
  const want = Object.fromEntries(a.keys.map((k) => [k.rule, [k.old_keys, k.new_keys]]));
  assert.deepEqual(await shownKeys(), want);
  assert.equal(want.step[0], 5, "the five steps submitted are old keys in 'job'");
});

test("a move without the token is not sent, and the server refuses one", async () => {
  await page.fill("#token", "");
  await page.click("button[data-move='dual-write']");
  assert.match(await text("#action-result"), /type the API token first/);
  const r = await fetch(srv.url + "/migrate/phase", { method: "POST",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify({ to: "dual-write" }) });
  assert.equal(r.status, 401);
  await page.fill("#token", "wrong-token-wrong-token");
  await page.click("button[data-move='dual-write']");
  await until(async () => /refused \(401\)/.test(await text("#action-result")), 5000, "the 401");
  assert.match(await text("#action-result"), /invalid bearer token/);
  assert.equal((await api()).phase, "job");
});

test("a move with the token works", async () => {
  await page.fill("#token", TOKEN);
  await page.click("button[data-move='dual-write']");
  await until(async () => /done/.test(await text("#action-result")), 5000, "the move");
  await until(async () => (await shownPhase()) === "dual-write", 8000, "the page to show dual-write");
  const st = JSON.parse(stepq("migrate", "status", "--json").out);
  assert.equal(st.phase, "dual-write");
  assert.equal(st.audit.at(-1).who, "(http)");
});

test("a move the rules refuse shows the tool's refusal", async () => {
  await until(async () => (await page.locator("button[data-move='dual-read']").count()) === 1, 8000,
    "the dual-read move");
  const li = page.locator("#moves li[data-to='dual-read']");
  assert.match(await li.innerText(), /preconditions not met/);
  assert.match(await li.innerText(), /cannot move to 'dual-read'/);
  await page.click("button[data-move='dual-read']");
  await until(async () => /refused \(409\)/.test(await text("#action-result")), 5000, "the 409");
  const cli = stepq("migrate", "phase", "dual-read");
  assert.equal(cli.code, 4);
  // The same words as the CLI's refusal.
  assert.ok((await text("#action-result")).includes("cannot move to 'dual-read': no finished backfill"));
  assert.ok(cli.err.includes("cannot move to 'dual-read': no finished backfill"));
});

test("the verify and backfill shown are the API's", async () => {
  assert.equal(stepq("migrate", "backfill").code, 0);
  assert.equal(stepq("migrate", "verify").code, 0);
  await until(async () => (await page.locator("#verify").getAttribute("data-clean")) === "true", 8000,
    "the page to show the verify");
  const a = await api();
  assert.equal(a.verify.clean, true);
  const v = await text("#verify");
  assert.ok(v.startsWith("clean"), v);
  assert.ok(v.includes(`equal ${a.verify.equal.toLocaleString("en-US")}`), v);
  assert.equal(await page.locator("#backfill-bar").getAttribute("data-state"), "done");
  assert.match(await text("#backfill-bar"), /^100\.0%/);
  assert.match(await page.locator("#moves li[data-to='dual-read']").innerText(), /preconditions met/);
});

test("the throttle switch pauses and resumes, with the token", async () => {
  await page.click("#pause");
  await until(async () => (await page.locator("#throttle").getAttribute("data-paused")) === "true",
    8000, "paused");
  assert.equal((await api()).throttle.paused, true);
  await page.click("#resume");
  await until(async () => (await page.locator("#throttle").getAttribute("data-paused")) === "false",
    8000, "resumed");
});

test("a phone-width page has no horizontal scroll", async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  const [sw, cw] = await page.evaluate(() => [document.documentElement.scrollWidth,
    document.documentElement.clientWidth]);
  assert.ok(sw <= cw + 1, `scrollWidth ${sw} > clientWidth ${cw}`);
  // Chromium logs each refused request of the tests above; nothing else.
  const expected = /the server responded with a status of (401|409)/;
  assert.deepEqual(problems.filter((p) => !expected.test(p)), []);
  assert.equal(problems.length, 2);
});
