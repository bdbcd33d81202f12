// Starts the real recovery-service binary for the Node checks: a private SQLite file, port 0
// (the address is read from the "listening" log line), the log notifier (codes are read from
// the binary's own console output, as a developer would), and the captcha off unless asked.

import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const PROTO = path.join(REPO, "proto");

/** The binary under test: RECOVERY_TEST_BIN, else the debug build of this checkout. */
export function binary() {
  const bin = process.env.RECOVERY_TEST_BIN ?? path.join(REPO, "target/debug/recovery-service");
  if (!existsSync(bin)) {
    throw new Error(`${bin} does not exist: run cargo build first (or set RECOVERY_TEST_BIN)`);
  }
  return bin;
}

const ANSI = /\x1b\[[0-9;]*m/g;

/** A TCP port that was free a moment ago, for a service that must know its own address before
 *  it starts (a `[mail] report_url` pointing back at it). */
export async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export async function startService({ env = {}, captcha = "off", timeoutMs = 30_000 } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), "recovery-node-"));
  const serviceEnv = {
    ...process.env,
    NO_COLOR: "1",
    RUST_LOG: "info",
    RECOVERY_LISTEN: "127.0.0.1:0",
    RECOVERY_DATABASE_URL: `sqlite://${dir}/recovery.db?mode=rwc`,
    RECOVERY_CAPTCHA: captcha,
    RECOVERY_NOTIFIER: "log",
    RECOVERY_SECRET: randomBytes(32).toString("hex"),
    ...env,
  };
  for (const name of ["RECOVERY_REDIS_URL", "RECOVERY_CONFIG", "RECOVERY_OTLP_ENDPOINT"]) {
    if (!(name in env)) delete serviceEnv[name];
  }
  const child = spawn(binary(), ["serve"], { cwd: dir, env: serviceEnv, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const collect = (chunk) => {
    output += chunk.toString("utf8").replace(ANSI, "");
  };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  let exited = null;
  child.on("exit", (code, signal) => {
    exited = { code, signal };
  });

  const address = await new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = setInterval(() => {
      const match = /recovery-service listening\s+address=(\S+)/.exec(output);
      if (match) {
        clearInterval(poll);
        resolve(match[1]);
      } else if (exited || Date.now() - started > timeoutMs) {
        clearInterval(poll);
        child.kill("SIGKILL");
        reject(new Error(`recovery-service did not start (${JSON.stringify(exited)}):\n${output}`));
      }
    }, 50);
  });

  return {
    address,
    url: `http://${address}/`,
    env: serviceEnv,
    dir,
    logs: () => output,
    /** The one-time codes the log notifier printed for `to`, oldest first. */
    codes(to) {
      const codes = [];
      const blocks = output.split("----- [log notifier: development only] message to ");
      for (const block of blocks.slice(1)) {
        const [header, ...rest] = block.split("\n");
        if (!header.startsWith(`${to} `)) continue;
        const body = rest.join("\n").split("----- end of message -----")[0];
        const code = /^\s+(\d{6})\s*$/m.exec(body);
        if (code) codes.push(code[1]);
      }
      return codes;
    },
    /** The "it wasn't me" report code of the newest code mail to `to` (32 hex digits, on a
     *  line of its own after the one-time code), and the report link when `[mail] report_url`
     *  is set; null when that mail has none. */
    report(to) {
      const bodies = output
        .split("----- [log notifier: development only] message to ")
        .slice(1)
        .filter((block) => block.startsWith(`${to} `))
        .map((block) => block.split("----- end of message -----")[0]);
      const body = bodies.at(-1) ?? "";
      const code = /^\s+([0-9a-f]{32})\s*$/m.exec(body)?.[1];
      if (!code) return null;
      const link = new RegExp(`^(\\S+${code})\\s*$`, "m").exec(body)?.[1] ?? null;
      return { code, link };
    },
    /** Subjects of the messages to `to`, oldest first. */
    subjects(to) {
      const pattern = new RegExp(`message to ${to.replace(/[.+]/g, "\\$&")} -----\\nSubject: (.*)`, "g");
      return [...output.matchAll(pattern)].map((m) => m[1]);
    },
    /** Waits for the `count`-th code to `to` (delivery is asynchronous, through the queue). */
    async waitForCode(to, count = 1, timeoutMs = 15_000) {
      const started = Date.now();
      for (;;) {
        const codes = this.codes(to);
        if (codes.length >= count) return codes[count - 1];
        if (Date.now() - started > timeoutMs) {
          throw new Error(`no code #${count} for ${to} within ${timeoutMs} ms:\n${output}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    /** `recovery-service account create`, password on standard input, as the README says. */
    createAccount(loginId, password) {
      const result = spawnSync(binary(), ["account", "create", "--login-id", loginId], {
        cwd: dir,
        env: serviceEnv,
        input: password,
        encoding: "utf8",
      });
      if (result.status !== 0) {
        throw new Error(`account create failed: ${result.stderr}${result.stdout}`);
      }
      return result.stdout.trim();
    },
    async stop() {
      if (!exited) {
        const done = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await done;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
