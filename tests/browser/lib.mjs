// lib.mjs - what the browser tests share: the environment ctest gives
// (STEPQ, STEPQ_TEST_REDIS, REDIS_SOCK, STEPQ_DB), a clean database, the
// stepq CLI, `stepq serve` on a free port, and Debian's chromium driven by
// playwright-core (it never downloads a browser of its own).
import { spawn, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chromium } from "playwright-core";

export const TOKEN = "console-test-token-0123456789";
const need = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set; run this through ctest (tests/CMakeLists.txt)`);
  return process.env[k];
};
export const STEPQ = need("STEPQ");
const REDIS = need("STEPQ_TEST_REDIS");
const SOCK = need("REDIS_SOCK");
const DB = need("STEPQ_DB");

const env = { ...process.env, REDIS_URL: REDIS, STEPQ_OPERATOR: "browser-test" };
for (const k of ["STEPQ_API_TOKEN", "ENABLE_DUAL_WRITE_STEPS", "PRIMARY_KEY_PATTERN",
  "STEPQ_NAMESPACE", "STEPQ_RULES"]) delete env[k];

export function rcli(...args) {
  return execFileSync("redis-cli", ["-s", SOCK, "-n", DB, ...args], { encoding: "utf8" }).trim();
}

// Refuses a non-empty database unless STEPQ_TEST_PRIVATE=1 (tests/README.md).
export function cleanDb() {
  if (rcli("DBSIZE") !== "0") {
    if (process.env.STEPQ_TEST_PRIVATE !== "1") throw new Error(`database ${DB} is not empty; refusing`);
    rcli("FLUSHDB");
  }
}

// Runs `stepq ARGS...`; returns {code, out, err}.
export function stepq(...args) {
  try {
    const out = execFileSync(STEPQ, args, { env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    return { code: 0, out, err: "" };
  } catch (e) {
    return { code: e.status, out: String(e.stdout || ""), err: String(e.stderr || "") };
  }
}

// Starts `stepq serve` on a free port with the test token; resolves to
// {url, proc}.
export function serve(extraEnv = {}, args = []) {
  return new Promise((resolve, reject) => {
    const proc = spawn(STEPQ, ["serve", "--listen", "127.0.0.1:0", ...args],
      { env: { ...env, STEPQ_API_TOKEN: TOKEN, ...extraEnv }, stdio: ["ignore", "ignore", "pipe"] });
    let log = "";
    const timer = setTimeout(() => reject(new Error("serve did not start: " + log)), 10000);
    proc.stderr.on("data", (b) => {
      log += b;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1], proc });
      }
    });
    proc.on("exit", (code) => reject(new Error(`serve exited ${code}: ${log}`)));
  });
}

// Debian's chromium (the bootstrap installs it), or CHROMIUM.
export async function browser() {
  const path = process.env.CHROMIUM || "/usr/bin/chromium";
  if (!existsSync(path)) throw new Error(`no chromium at ${path}; run scripts/bootstrap.sh`);
  return chromium.launch({ executablePath: path, args: ["--no-sandbox", "--disable-gpu"] });
}

export async function getJson(url, headers = {}) {
  const r = await fetch(url, { headers });
  return { status: r.status, body: await r.json() };
}

// Waits until fn() is truthy (polling every 100 ms), up to ms times
// STEPQ_TEST_WAIT_SCALE (default 4: a CI machine running the suite two tests
// at a time, or a shared one, answers slower than a quiet laptop; a longer
// wait costs nothing when the condition comes, and a CI run under load timed
// a move out at 5 s).
const WAIT_SCALE = Number(process.env.STEPQ_TEST_WAIT_SCALE || 4);
export async function until(fn, ms = 10000, what = "a condition") {
  ms *= WAIT_SCALE;
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
