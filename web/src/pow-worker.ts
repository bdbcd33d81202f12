// The proof-of-work search off the page's thread (see pow.ts): the page posts one challenge,
// the worker posts progress after every slice and then the solution. The page ends the worker
// (terminate) when the person changes their mind or a new challenge replaces this one.

import { solvePow, type PowChallenge } from "./pow";

/** What the worker posts back to the page. */
export type PowMessage =
  | { kind: "progress"; tried: number; total: number }
  | { kind: "done"; solution: string }
  | { kind: "failed" };

// The DOM typings know only Window.postMessage(message, targetOrigin); a worker's takes one.
const scope = self as unknown as {
  postMessage(message: PowMessage): void;
  onmessage: ((event: MessageEvent<PowChallenge>) => void) | null;
};

scope.onmessage = (event) => {
  solvePow(event.data, undefined, (tried, total) => scope.postMessage({ kind: "progress", tried, total }), false)
    .then((solution) => scope.postMessage({ kind: "done", solution }))
    .catch(() => scope.postMessage({ kind: "failed" }));
};
