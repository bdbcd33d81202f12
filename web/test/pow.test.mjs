// The proof-of-work solver (src/pow.ts) against challenges made as an ALTCHA server makes them:
// challenge = hex(SHA-256(salt + number)), the answer base64(JSON{..., number}).

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
const { solvePow } = await import(
  `data:text/javascript;base64,${Buffer.from(bundled.outputFiles[0].contents).toString("base64")}`
);

function challenge(number, maxNumber = 5000) {
  const salt = randomBytes(12).toString("hex");
  return {
    algorithm: "SHA-256",
    challenge: createHash("sha256").update(salt + number).digest("hex"),
    salt,
    signature: "server-signature",
    maxNumber: BigInt(maxNumber),
  };
}

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

test("a challenge with no solution below maxNumber is an error, not a hang", async () => {
  await assert.rejects(solvePow(challenge(900, 100)), /no solution/);
});

test("an unknown algorithm is refused", async () => {
  await assert.rejects(solvePow({ ...challenge(1), algorithm: "MD5" }), /unsupported/);
});
