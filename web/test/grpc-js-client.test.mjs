// The whole recovery flow through @grpc/grpc-js against the real binary, with the rich errors
// of docs/api.md decoded from the trailer.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { connect, grpc, rejects } from "../grpc/client.mjs";
import { startService } from "./support/service.mjs";

let service;
let api;

before(async () => {
  service = await startService();
  api = connect(service.address);
});
after(async () => {
  api?.close();
  await service?.stop();
});

const LOGIN = "node.client@example.com";
const OLD = "Old-Granite-Harbor-73!";
const NEW = "New-Velvet-Lantern-58?";

test("grpc-js walks the whole recovery flow, rich errors decoded", async () => {
  const account = await api.CreateAccount({ login_id: LOGIN, password: OLD });
  assert.match(account.account_id, /^[0-9a-f-]{36}$/);

  const captcha = await api.CreateCaptcha({});
  assert.equal(captcha.image_png.subarray(1, 4).toString(), "PNG");

  const bad = await rejects(api.StartRecovery({ login_id: "not an e-mail", locale: "en" }));
  assert.equal(bad.grpcCode, grpc.status.INVALID_ARGUMENT);
  assert.equal(bad.errorInfo.reason, "INVALID_ARGUMENT");
  assert.equal(bad.errorInfo.domain, "recovery.identity");
  assert.deepEqual(bad.badRequest.field_violations.map((v) => v.field), ["login_id"]);

  const { flow } = await api.StartRecovery({ login_id: LOGIN, locale: "en" });
  assert.equal(flow.state, "CHOOSE_METHOD");
  assert.deepEqual(flow.methods, [{ channel: "EMAIL", masked_destination: "n***t@e***.com" }]);

  const sent = await api.SendVerificationCode({ flow_id: flow.flow_id, channel: "EMAIL" });
  assert.equal(sent.flow.state, "CODE_SENT");
  const code = await service.waitForCode(LOGIN);
  const wrong = code === "000000" ? "111111" : "000000";

  const tooSoon = await rejects(api.SendVerificationCode({ flow_id: flow.flow_id, channel: "EMAIL" }));
  assert.equal(tooSoon.grpcCode, grpc.status.RESOURCE_EXHAUSTED);
  assert.equal(tooSoon.errorInfo.reason, "RESEND_TOO_SOON");
  assert.ok(tooSoon.retryInfo.retry_delay.seconds >= 1, JSON.stringify(tooSoon.retryInfo));

  const wrongCode = await rejects(api.VerifyCode({ flow_id: flow.flow_id, code: wrong }));
  assert.equal(wrongCode.grpcCode, grpc.status.INVALID_ARGUMENT);
  assert.equal(wrongCode.errorInfo.reason, "CODE_INVALID");
  assert.equal(wrongCode.errorInfo.metadata.attempts_left, "4");
  assert.equal(wrongCode.badRequest.field_violations[0].field, "code");

  const { reset_token } = await api.VerifyCode({ flow_id: flow.flow_id, code });
  assert.match(reset_token, /^[A-Za-z0-9_-]{43}$/);

  const mismatch = await rejects(
    api.ResetPassword({ reset_token, new_password: NEW, new_password_confirmation: `${NEW}x` }),
  );
  assert.equal(mismatch.errorInfo.reason, "PASSWORD_MISMATCH");

  const weak = await rejects(
    api.ResetPassword({ reset_token, new_password: "password", new_password_confirmation: "password" }),
  );
  assert.equal(weak.errorInfo.reason, "PASSWORD_POLICY");
  const reasons = weak.badRequest.field_violations.map((v) => v.reason);
  assert.ok(reasons.includes("PASSWORD_COMMON"), JSON.stringify(weak.badRequest));

  const live = await api.ValidatePassword({ password: NEW, login_id: LOGIN });
  assert.deepEqual(live.violations, []);
  assert.ok(live.strength >= 3);

  // A failed reset (mismatch, policy) keeps the token: this one still works.
  const changed = await api.ResetPassword({ reset_token, new_password: NEW, new_password_confirmation: NEW });
  assert.ok(Number(changed.password_changed_at.seconds) > 0);

  const done = await api.GetRecoveryFlow({ flow_id: flow.flow_id });
  assert.equal(done.state, "COMPLETED");
  const used = await rejects(api.ResetPassword({ reset_token, new_password: NEW, new_password_confirmation: NEW }));
  assert.equal(used.grpcCode, grpc.status.UNAUTHENTICATED);
  assert.equal(used.errorInfo.reason, "TOKEN_INVALID");

  assert.equal((await api.VerifyPassword({ login_id: LOGIN, password: NEW })).valid, true);
  assert.equal((await api.VerifyPassword({ login_id: LOGIN, password: OLD })).valid, false);
});

test("an unknown flow is FLOW_NOT_FOUND with its ErrorInfo", async () => {
  const missing = await rejects(api.GetRecoveryFlow({ flow_id: "0190f8a8-0000-7000-8000-000000000000" }));
  assert.equal(missing.grpcCode, grpc.status.NOT_FOUND);
  assert.equal(missing.errorInfo.reason, "FLOW_NOT_FOUND");
});
