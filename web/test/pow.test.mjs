// The proof-of-work solver (src/pow.ts) against challenges made as an ALTCHA server makes them:
// challenge = hex(SHA-256(salt + number)), the answer base64(JSON{..., number}). Its SHA-256 is
// the page's own (a midstate per salt, one compression per try), so it is checked here against
// node:crypto on every salt length that changes the block layout.

import assert from "node:assert/strict";
import { createHash, randomBytes, randomInt } from "node:crypto";
import { test } from "node:test";
import { build } from "esbuild";

const bundled = await build({
  entryPoints: [new URL("../src/pow.ts", import.meta.url).pathname],
  bundle: true,
  format: "esm",
  platform: "neutral",
  write: false,
});
const { PrefixHasher, PowFailure, solvePow } = await import(
  `data:text/javascript;base64,${Buffer.from(bundled.outputFiles[0].contents).toString("base64")}`
);

function challenge(number, maxNumber = 5000) {
  const salt = `${randomBytes(12).toString("hex")}?expires=${Math.floor(Date.now() / 1000) + 300}&`;
  return {
    algorithm: "SHA-256",
    challenge: createHash("sha256").update(salt + number).digest("hex"),
    salt,
    signature: "server-signature",
    maxNumber: BigInt(maxNumber),
  };
}

const hex = (words) => Array.from(words, (word) => (word >>> 0).toString(16).padStart(8, "0")).join("");

test("the page's SHA-256 equals node:crypto for every salt length and digit count", () => {
  // Salt lengths around each block boundary (55/56 and 119/120 bytes move the padding into a new
  // block), numbers whose digit count changes, and a salt with non-ASCII characters (UTF-8).
  const numbers = [0, 7, 9, 10, 99, 100, 12345, 99999, 100000, 999999999, 4294967295, 123456789012];
  for (let length = 0; length <= 130; length++) {
    const salt = "s".repeat(length);
    const hasher = new PrefixHasher(salt);
    for (const number of numbers) {
      const expected = createHash("sha256").update(salt + number).digest("hex");
      assert.equal(hex(hasher.digest(number)), expected, `salt length ${length}, number ${number}`);
    }
  }
  const unicode = "sälta-ключ-塩?expires=1&";
  const hasher = new PrefixHasher(unicode);
  for (const number of numbers) {
    assert.equal(hex(hasher.digest(number)), createHash("sha256").update(unicode + number).digest("hex"));
  }
});

test("the solver finds the number and answers the ALTCHA payload", async () => {
  const number = randomInt(0, 5000);
  const pow = challenge(number);
  const payload = JSON.parse(Buffer.from(await solvePow(pow), "base64").toString());
  assert.deepEqual(payload, {
    algorithm: "SHA-256",
    challenge: pow.challenge,
    number,
    salt: pow.salt,
    signature: "server-signature",
  });
});

test("the solver reports its progress until it finds the number", async () => {
  const pow = challenge(65_000, 100_000);
  const reports = [];
  await solvePow(pow, undefined, (tried, total) => reports.push([tried, total]), false);
  assert.deepEqual(reports, [
    [20_000, 100_001],
    [40_000, 100_001],
    [60_000, 100_001],
  ]);
});

test("a challenge with no solution below maxNumber is an error, not a hang", async () => {
  await assert.rejects(solvePow(challenge(900, 100)), PowFailure);
});

test("a cancelled search stops", async () => {
  const abort = new AbortController();
  abort.abort();
  await assert.rejects(solvePow(challenge(10), abort.signal), /cancelled/);
});

test("an unknown algorithm is refused", async () => {
  await assert.rejects(solvePow({ ...challenge(1), algorithm: "MD5" }), /unsupported/);
});
