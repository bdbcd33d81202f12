// Proof-of-work captcha (ALTCHA v1), for when the service hands one out: CreateCaptchaResponse.pow
// in pow and both modes, and in image mode as the way round the picture for a person who cannot
// read it. Find the number n <= maxNumber with hex(SHA-256(salt + n)) == challenge, and answer
// base64(JSON{algorithm, challenge, number, salt, signature}) as StartRecoveryRequest.pow_solution.
//
// The search runs in a Web Worker (pow-worker.ts) so the page stays responsive, with a
// synchronous SHA-256 of its own: the salt's full 64-byte blocks are hashed once, and each try
// compresses only the last block (the salt's tail, the digits, the padding). In headless
// Chromium that is ~10 times the rate of one WebCrypto `digest` call per try, or of a general
// hashing library that allocates per call, so the same cost to a bot's native SHA-256 keeps a
// person's wait ten times shorter. Checked against node:crypto in test/pow.test.mjs.

export interface PowChallenge {
  algorithm: string;
  challenge: string;
  salt: string;
  signature: string;
  maxNumber: bigint | number;
}

/** The work did not give a solution (cancelled, or none below maxNumber). */
export class PowFailure extends Error {}

/** How far the search got: numbers tried, out of `max + 1`. */
export type Progress = (tried: number, total: number) => void;

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const INITIAL = new Int32Array([
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
]);

/** The message schedule of one block: `w[0..16]` are its words, `w[16..64]` are filled in. */
function expand(w: Int32Array): void {
  for (let i = 16; i < 64; i++) {
    const x = w[i - 15]!;
    const y = w[i - 2]!;
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    w[i] = (w[i - 16]! + s0 + w[i - 7]! + s1) | 0;
  }
}

/** Rounds `from..64` of SHA-256 on the working variables `v` (a..h), in place. */
function rounds(v: Int32Array, w: Int32Array, from: number, to = 64): void {
  let a = v[0]!, b = v[1]!, c = v[2]!, d = v[3]!;
  let e = v[4]!, f = v[5]!, g = v[6]!, h = v[7]!;
  for (let i = from; i < to; i++) {
    const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + s1 + ((e & f) ^ (~e & g)) + K[i]! + w[i]!) | 0;
    const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  v[0] = a;
  v[1] = b;
  v[2] = c;
  v[3] = d;
  v[4] = e;
  v[5] = f;
  v[6] = g;
  v[7] = h;
}

function addInto(state: Int32Array, v: Int32Array): void {
  for (let i = 0; i < 8; i++) state[i] = (state[i]! + v[i]!) | 0;
}

function wordsOf(bytes: Uint8Array, offset: number, into: Int32Array): void {
  for (let i = 0; i < 16; i++) {
    const j = offset + 4 * i;
    into[i] = (bytes[j]! << 24) | (bytes[j + 1]! << 16) | (bytes[j + 2]! << 8) | bytes[j + 3]!;
  }
}

/**
 * SHA-256 of `prefix + decimal(n)` for many n. The prefix's whole 64-byte blocks are hashed once
 * (the midstate); of the last block, the words before the digits never change, so the rounds
 * that only read them are run once per digit count too. A try then costs the rest of one
 * compression (two when the digits spill into a second block).
 */
export class PrefixHasher {
  private readonly midstate = new Int32Array(8);
  private readonly tail: Uint8Array;
  private readonly prefixLength: number;
  /** The final block(s) as words: the tail, the digits, 0x80, zeros, the bit length. */
  private readonly words = new Int32Array(32);
  private readonly w = new Int32Array(64);
  private readonly v = new Int32Array(8);
  private readonly state = new Int32Array(8);
  /** Working variables after the rounds that read only the tail's whole words. */
  private readonly early = new Int32Array(8);
  private digits = -1;
  private blocks = 1;
  private readonly fixed: number;

  constructor(prefix: string) {
    const bytes = new TextEncoder().encode(prefix);
    this.prefixLength = bytes.length;
    this.midstate.set(INITIAL);
    const whole = bytes.length - (bytes.length % 64);
    for (let offset = 0; offset < whole; offset += 64) {
      wordsOf(bytes, offset, this.w);
      expand(this.w);
      this.v.set(this.midstate);
      rounds(this.v, this.w, 0);
      addInto(this.midstate, this.v);
    }
    this.tail = bytes.slice(whole);
    this.fixed = this.tail.length >> 2;
  }

  /** Lays out the final block(s) for numbers of `count` digits. */
  private layout(count: number): void {
    const bytes = new Uint8Array(128);
    bytes.set(this.tail);
    const end = this.tail.length + count;
    bytes[end] = 0x80;
    this.blocks = end + 9 <= 64 ? 1 : 2;
    const length = 64 * this.blocks;
    // The message length in bits, big-endian, in the last 8 bytes (a salt is far below 2^32 bits).
    const bits = (this.prefixLength + count) * 8;
    bytes[length - 4] = bits >>> 24;
    bytes[length - 3] = (bits >>> 16) & 0xff;
    bytes[length - 2] = (bits >>> 8) & 0xff;
    bytes[length - 1] = bits & 0xff;
    wordsOf(bytes, 0, this.words);
    wordsOf(bytes, 64, this.words.subarray(16));
    this.early.set(this.midstate);
    rounds(this.early, this.words, 0, this.fixed);
    this.digits = count;
  }

  /** The digest of `prefix + decimal(number)` as eight big-endian words, valid until the next call. */
  digest(number: number): Int32Array {
    const text = String(number);
    if (text.length !== this.digits) this.layout(text.length);
    const words = this.words;
    let at = this.tail.length;
    for (let i = 0; i < text.length; i++, at++) {
      const shift = 24 - 8 * (at & 3);
      const index = at >> 2;
      words[index] = (words[index]! & ~(0xff << shift)) | (text.charCodeAt(i) << shift);
    }
    const w = this.w;
    for (let i = 0; i < 16; i++) w[i] = words[i]!;
    expand(w);
    this.v.set(this.early);
    rounds(this.v, w, this.fixed);
    this.state.set(this.midstate);
    addInto(this.state, this.v);
    if (this.blocks === 2) {
      for (let i = 0; i < 16; i++) w[i] = words[16 + i]!;
      expand(w);
      this.v.set(this.state);
      rounds(this.v, w, 0);
      addInto(this.state, this.v);
    }
    return this.state;
  }
}

function targetWords(challenge: string): Int32Array | undefined {
  if (!/^[0-9a-fA-F]{64}$/.test(challenge)) return undefined;
  const words = new Int32Array(8);
  for (let i = 0; i < 8; i++) words[i] = parseInt(challenge.slice(8 * i, 8 * i + 8), 16) | 0;
  return words;
}

function checkAlgorithm(pow: PowChallenge): void {
  if (pow.algorithm.toUpperCase() !== "SHA-256") {
    throw new Error(`unsupported proof-of-work algorithm ${pow.algorithm}`);
  }
}

/** The widget's payload for a solved challenge. */
export function encodeSolution(pow: PowChallenge, number: number): string {
  const payload = {
    algorithm: pow.algorithm,
    challenge: pow.challenge,
    number,
    salt: pow.salt,
    signature: pow.signature,
  };
  return btoa(JSON.stringify(payload));
}

/**
 * Searches `from..=to` (inclusive); the number, or -1 when it is not in that range. Synchronous:
 * call it from a worker, or in slices from the page.
 */
export function searchRange(pow: PowChallenge, from: number, to: number, hasher?: PrefixHasher): number {
  checkAlgorithm(pow);
  const target = targetWords(pow.challenge);
  if (!target) throw new Error("the challenge is not a SHA-256 digest");
  const prefix = hasher ?? new PrefixHasher(pow.salt);
  const t0 = target[0]!;
  for (let number = from; number <= to; number++) {
    const digest = prefix.digest(number);
    if (digest[0] !== t0) continue;
    let same = true;
    for (let i = 1; i < 8; i++) if (digest[i] !== target[i]) same = false;
    if (same) return number;
  }
  return -1;
}

/** Numbers tried between two progress reports (a few milliseconds of work). */
export const SLICE = 20_000;

/**
 * Solves the challenge; reports progress after every slice. `yieldBetween` lets a caller on the
 * page's own thread give the page a turn between slices; in a worker it is not needed.
 */
export async function solvePow(
  pow: PowChallenge,
  signal?: AbortSignal,
  onProgress?: Progress,
  yieldBetween = true,
): Promise<string> {
  checkAlgorithm(pow);
  const max = Number(pow.maxNumber);
  const hasher = new PrefixHasher(pow.salt);
  for (let from = 0; from <= max; from += SLICE) {
    if (signal?.aborted) throw new PowFailure("proof of work cancelled");
    const to = Math.min(from + SLICE - 1, max);
    const number = searchRange(pow, from, to, hasher);
    if (number >= 0) return encodeSolution(pow, number);
    onProgress?.(to + 1, max + 1);
    if (yieldBetween) await new Promise((resolve) => setTimeout(resolve, 0));
  }
  throw new PowFailure("proof of work has no solution");
}
