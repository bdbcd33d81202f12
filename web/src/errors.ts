// Turns a failed call into what the page shows: the ErrorInfo reason of docs/api.md (decoded from
// the google.rpc.Status in grpc-status-details-bin with the generated google.rpc types), a
// cooldown from RetryInfo, attempts left, and the BadRequest field violations.

import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb";
import { PowFailure } from "./pow";

export const DOMAIN = "recovery.identity";

export interface FieldProblem {
  field: string;
  /** The policy reason for a PASSWORD_POLICY violation (e.g. PASSWORD_TOO_SHORT), else "". */
  reason: string;
  description: string;
}

export interface Problem {
  /** A reason of the error table (docs/api.md), NETWORK / UNKNOWN when the service did not
   *  say, or POW_FAILED when the page's proof of work did not finish. */
  reason: string;
  /** Whole seconds to wait (RetryInfo), rounded up; 0 when there is no cooldown. */
  retryAfterSeconds: number;
  attemptsLeft: number | undefined;
  fields: FieldProblem[];
}

export function describe(error: unknown): Problem {
  if (error instanceof PowFailure) {
    // The page's own proof of work did not finish: nothing was sent.
    return { reason: "POW_FAILED", retryAfterSeconds: 0, attemptsLeft: undefined, fields: [] };
  }
  const connectError = ConnectError.from(error);
  const info = connectError
    .findDetails(ErrorInfoSchema)
    .find((detail) => detail.domain === DOMAIN);
  const retry = connectError.findDetails(RetryInfoSchema)[0];
  let retryAfterSeconds = 0;
  if (retry?.retryDelay) {
    const millis =
      Number(retry.retryDelay.seconds) * 1000 + Math.floor(retry.retryDelay.nanos / 1e6);
    retryAfterSeconds = Math.max(1, Math.ceil(millis / 1000));
  }
  const fields = connectError.findDetails(BadRequestSchema).flatMap((badRequest) =>
    badRequest.fieldViolations.map((violation) => ({
      field: violation.field,
      reason: violation.reason,
      description: violation.description,
    })),
  );
  const attempts = info?.metadata["attempts_left"];
  let reason = info?.reason;
  if (!reason) {
    // No ErrorInfo: the call never reached the service (network, proxy, CORS) or an
    // intermediary answered. Say so rather than inventing a reason.
    reason =
      connectError.code === Code.Unavailable || connectError.code === Code.Unknown
        ? "NETWORK"
        : "UNKNOWN";
  }
  return {
    reason,
    retryAfterSeconds,
    attemptsLeft: attempts === undefined ? undefined : Number(attempts),
    fields,
  };
}
