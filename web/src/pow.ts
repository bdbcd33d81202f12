// Proof-of-work captcha (ALTCHA), for when the service hands one out (SPEC §6:
// CreateCaptchaResponse.pow, StartRecoveryRequest.pow_solution, RECOVERY_CAPTCHA=pow|both).
// The contract's proto does not carry these fields yet; once it does, `npm run generate`
// brings them into the generated types and main.ts passes `captcha.pow` here and the result as
// `powSolution`. The solver itself follows the ALTCHA v1 scheme: find the number n <= maxNumber
// with SHA-256(salt + n) == challenge, and answer base64(JSON{algorithm, challenge, number,
// salt, signature}).

export interface PowChallenge {
  algorithm: string;
  challenge: string;
  salt: string;
  signature: string;
  maxNumber: bigint | number;
}

function hex(buffer: ArrayBuffer): string {
  return Array.from(new Uint8Array(buffer), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** Solves the challenge off the critical path: yields to the page every `batch` hashes. */
export async function solvePow(
  pow: PowChallenge,
  signal?: AbortSignal,
  batch = 500,
): Promise<string> {
  if (pow.algorithm.toUpperCase() !== "SHA-256") {
    throw new Error(`unsupported proof-of-work algorithm ${pow.algorithm}`);
  }
  const max = Number(pow.maxNumber);
  const encoder = new TextEncoder();
  const target = pow.challenge.toLowerCase();
  for (let start = 0; start <= max; start += batch) {
    if (signal?.aborted) throw new Error("proof of work cancelled");
    for (let number = start; number < Math.min(start + batch, max + 1); number++) {
      const digest = await crypto.subtle.digest("SHA-256", encoder.encode(pow.salt + number));
      if (hex(digest) === target) {
        const payload = {
          algorithm: pow.algorithm,
          challenge: pow.challenge,
          number,
          salt: pow.salt,
          signature: pow.signature,
        };
        return btoa(JSON.stringify(payload));
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  throw new Error("proof of work has no solution");
}
