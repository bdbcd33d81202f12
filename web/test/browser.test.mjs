// The web front end in a real headless Chromium (Debian's `chromium`, driven by
// playwright-core), served by the real binary: the whole flow by keyboard alone on a phone-sized
// screen with the image captcha passed the way a person who cannot read the picture passes it,
// focus checked after every step and every error, the error paths (bad input, resend cooldown,
// wrong codes counting down, mismatch, weak password, rate limit countdown, a dead flow), the
// "it wasn't me" report page behind the code mail's link, the page in the browser's language
// (13 locales, Arabic right to left), and the headers. Accessibility checks (axe-core on every
// screen, reflow at 200 % zoom, announcements) are in a11y.test.mjs.
// Screenshots of each step go to target/screenshots/, or to SCREENSHOTS_DIR:
// `SCREENSHOTS_DIR=../docs/screenshots npm test` refreshes the ones the docs show.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { connect, rejects } from "../grpc/client.mjs";
import {
  PHONE,
  alertText,
  announced,
  assertFocus,
  captchaShown,
  heading,
  launchBrowser,
  newPage,
  typeInto,
  waitForAnnouncement,
} from "./support/browser.mjs";
import { REPO, freePort, startService } from "./support/service.mjs";

const SHOTS = path.resolve(process.env.SCREENSHOTS_DIR ?? path.join(REPO, "target/screenshots"));

let service;
let browser;

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  // The image captcha with its default way round (the proof of work at its default cost): the
  // tests cannot read the picture either. A per-login limit of 3 StartRecovery calls, so the
  // rate-limit countdown is reachable.
  service = await startService({ captcha: "image", env: { RECOVERY_RATE_LIMITS__PER_LOGIN__LIMIT: "3" } });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await service?.stop();
});

const phonePage = (locale = "en-US") => newPage(browser, { locale });

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** The image captcha passed without reading the picture: the toggle, then the work's end. */
async function cannotReadThePicture(page, toggleName) {
  await captchaShown(page);
  await page.getByRole("button", { name: toggleName }).click();
  await page.waitForFunction(() => document.querySelector(".work progress")?.value === 100, null, { timeout: 30_000 });
}

test("the page is served with its security headers", async () => {
  const response = await fetch(service.url);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
  const csp = response.headers.get("content-security-policy");
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.doesNotMatch(csp, /unsafe/);
  assert.equal(response.headers.get("x-content-type-options"), "nosniff");
  const script = /src="(\/assets\/app\.js\?v=\w+)"/.exec(await response.text());
  assert.ok(script, "the page names its script");
  const asset = await fetch(new URL(script[1], service.url));
  assert.equal(asset.headers.get("content-type"), "text/javascript; charset=utf-8");
  const again = await fetch(new URL(script[1], service.url), {
    headers: { "if-none-match": asset.headers.get("etag") },
  });
  assert.equal(again.status, 304);
  // The proof-of-work worker is a script of this origin, named by its content like the rest.
  assert.match(csp, /worker-src 'self'/);
  const worker = /\/assets\/pow-worker\.js\?v=\w+/.exec(await asset.text());
  assert.ok(worker, "the page names its worker");
  const workerResponse = await fetch(new URL(worker[0], service.url));
  assert.equal(workerResponse.status, 200);
  assert.equal(workerResponse.headers.get("content-type"), "text/javascript; charset=utf-8");
});

test("a person who cannot read the picture recovers an account by keyboard alone, focus always on the next step", async () => {
  const login = "jane.doe@example.com";
  const oldPassword = "Old-Granite-Harbor-73!";
  const newPassword = "New-Velvet-Lantern-58?";
  service.createAccount(login, oldPassword);
  const { page, problems, close } = await phonePage();
  // Nothing but the keyboard from here on: Tab, Shift+Tab, Enter and typing.
  const press = (key) => page.keyboard.press(key);
  const type = (text) => page.keyboard.type(text);
  try {
    await page.goto(service.url);
    await heading(page, "Forgot your password?");
    await captchaShown(page);
    await assertFocus(page, 'h1 "Forgot your password?"', "the first screen");
    assert.equal(await page.title(), "Forgot your password? – Password recovery");
    await shot(page, "01-start");

    // Bad input: the field is named in a sentence, and focus goes back to the field.
    await press("Tab");
    await assertFocus(page, "input#login");
    await type("jane.doe");
    await press("Enter");
    assert.equal(await alertText(page), "Please check the marked fields.");
    await assertFocus(page, "input#login", "after a bad login ID");
    await waitForAnnouncement(page, "Please check the marked fields.");
    await page.locator("#screen").getByText("Enter your login ID as an e-mail address.").waitFor();
    assert.equal(await page.locator("#login").getAttribute("aria-invalid"), "true");
    await captchaShown(page);
    await shot(page, "02-invalid-login");

    // The login again (the field's text is selected, so typing replaces it), then the way round
    // the picture: a toggle that keeps focus while the work runs.
    await type(login);
    assert.equal(await page.locator("#login").inputValue(), login);
    await press("Tab");
    await assertFocus(page, 'button "Show another picture"');
    await press("Tab");
    await assertFocus(page, `button "I can't read the picture"`);
    await press("Enter");
    await assertFocus(page, `button "I can't read the picture"`, "after choosing the work");
    assert.equal(await page.locator("button.toggle").getAttribute("aria-pressed"), "true");
    assert.equal(await page.getByLabel("Digits in the picture").isVisible(), false);
    await waitForAnnouncement(page, "Your browser is doing a short calculation to show it is not a robot. This takes a few seconds.");
    await waitForAnnouncement(page, "Done. You can press Request.", 30_000);
    await shot(page, "03-request");
    // The picture's controls are gone from the Tab order: the login is right before the toggle,
    // "Request" right after it.
    await press("Shift+Tab");
    await assertFocus(page, "input#login");
    await press("Tab");
    await press("Tab");
    await assertFocus(page, 'button "Request"');
    await press("Enter");

    // Step 3: the masked mailbox and "Verify now".
    await heading(page, "Verify it is you");
    await assertFocus(page, 'h1 "Verify it is you"');
    assert.equal(await page.title(), "Verify it is you – Password recovery");
    await page.locator("#screen").getByText("j***e@e***.com").waitFor();
    await shot(page, "04-verify-now");
    await press("Tab");
    await assertFocus(page, 'button "Verify now"');
    await press("Enter");

    // Step 4: "Get verification code".
    await heading(page, "Get a verification code");
    await assertFocus(page, 'h1 "Get a verification code"');
    assert.equal(await page.title(), "Get a verification code – Password recovery");
    await shot(page, "05-get-code");
    await press("Tab");
    await assertFocus(page, 'button "Get verification code"');
    await press("Enter");

    // Step 5: the code and "Confirm". First the cooldown from RetryInfo: focus on the sentence,
    // the button held (still in the Tab order), the countdown silent.
    await heading(page, "Enter the verification code");
    await assertFocus(page, 'h1 "Enter the verification code"');
    assert.equal(await page.title(), "Enter the verification code – Password recovery");
    const code = await service.waitForCode(login);
    await press("Tab");
    await assertFocus(page, "input#code");
    await press("Tab");
    await assertFocus(page, 'button "Confirm"');
    await press("Tab");
    await assertFocus(page, 'button "Send a new code"');
    await press("Enter");
    const cooldown = await alertText(page);
    const first = Number(/in (\d+)\u00a0s\./.exec(cooldown)?.[1]);
    assert.ok(first > 1 && first <= 60, cooldown);
    await assertFocus(page, `message "${cooldown}"`, "after asking for a new code too soon");
    const resend = page.getByRole("button", { name: "Send a new code" });
    assert.equal(await resend.isDisabled(), true);
    await page.waitForFunction(
      (start) => /in (\d+)\u00a0s\./.exec(document.querySelector("#alert")?.textContent ?? "")?.[1] < start,
      first,
    );
    assert.deepEqual((await announced(page)).filter((text) => text.includes("new code in")), [], "the countdown is not announced");
    await shot(page, "06-resend-cooldown");
    await press("Shift+Tab");
    await assertFocus(page, 'button "Send a new code"');
    await press("Enter"); // held: nothing happens
    await press("Shift+Tab");
    await assertFocus(page, 'button "Confirm"');
    await press("Shift+Tab");
    await assertFocus(page, "input#code");

    // Wrong codes count the attempts down; focus stays in the field, its text selected.
    const wrong = code === "000000" ? "111111" : "000000";
    await type(wrong);
    await press("Enter");
    await page.locator("#screen").getByText("The code is wrong. Attempts left: 4.").waitFor();
    await assertFocus(page, "input#code", "after a wrong code");
    await waitForAnnouncement(page, "The code is wrong. Attempts left: 4.");
    await type(wrong);
    await press("Enter");
    await page.locator("#screen").getByText("The code is wrong. Attempts left: 3.").waitFor();
    await assertFocus(page, "input#code", "after another wrong code");
    await shot(page, "07-wrong-code");
    await type(code);
    assert.equal(await page.locator("#code").inputValue(), code);
    await press("Enter");

    // Step 6: the new password twice, with live feedback from ValidatePassword.
    await heading(page, "Set a new password");
    await assertFocus(page, 'h1 "Set a new password"');
    assert.equal(await page.title(), "Set a new password – Password recovery");
    await press("Tab");
    await assertFocus(page, "input#new-password");
    await type("password");
    await page.locator("#screen").getByText("This is one of the most common passwords.").waitFor();
    assert.equal(await page.locator("meter").getAttribute("value"), "0");
    await press("Tab");
    await assertFocus(page, "input#repeat-password");
    await type("password");
    await shot(page, "08-weak-password-live");
    await press("Enter");
    assert.equal(await alertText(page), "The new password does not meet the rules listed above.");
    await assertFocus(page, "input#new-password", "after a weak password");
    assert.equal(await page.locator("#new-password").getAttribute("aria-invalid"), "true");
    await shot(page, "09-weak-password-refused");

    // A strong one in its place: the mark and the refusal go as soon as the service agrees.
    await type(newPassword);
    assert.equal(await page.locator("#new-password").inputValue(), newPassword);
    await page.locator("#screen").getByText("This password meets every rule.").waitFor();
    await page.waitForFunction(() => !document.querySelector("#new-password")?.hasAttribute("aria-invalid"));
    assert.equal(await page.locator("#alert").innerText(), "");
    await press("Tab");
    await assertFocus(page, "input#repeat-password");
    await type(`${newPassword}!`);
    assert.equal(await page.locator("#repeat-password").inputValue(), `${newPassword}!`);
    await page.locator("#screen").getByText("The two passwords are not the same yet.").waitFor();
    await waitForAnnouncement(page, "The two passwords are not the same yet.");
    await press("Enter");
    await page.locator("#alert").getByText("The two passwords are not the same.").waitFor();
    await assertFocus(page, "input#repeat-password", "after passwords that differ");
    await shot(page, "10-mismatch");

    await type(newPassword);
    await page.waitForFunction(() => !document.querySelector("#repeat-password")?.hasAttribute("aria-invalid"));
    assert.equal(await page.locator("#alert").innerText(), "");
    await shot(page, "11-new-password");
    await press("Enter");

    // Step 7: done; log in with the old login and the new password.
    await heading(page, "Your password has been changed");
    await assertFocus(page, 'h1 "Your password has been changed"');
    assert.equal(await page.title(), "Your password has been changed – Password recovery");
    await page.locator("#screen").getByText(`Log in with your login ID ${login} and your new password.`).waitFor();
    await shot(page, "12-done");

    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= PHONE.width, `the page scrolls sideways at ${PHONE.width}px: ${width}px`);
    assert.deepEqual(problems, []);
  } finally {
    await close();
  }
  const api = connect(service.address);
  try {
    assert.equal((await api.VerifyPassword({ login_id: login, password: newPassword })).valid, true);
    assert.equal((await api.VerifyPassword({ login_id: login, password: oldPassword })).valid, false);
  } finally {
    api.close();
  }
});

test("five wrong codes end the flow and the page offers to start over", async () => {
  const login = "five.wrong@example.com";
  service.createAccount(login, "Old-Granite-Harbor-73!");
  const { page, problems, close } = await phonePage();
  try {
    await page.goto(service.url);
    await typeInto(page, "Login ID (e-mail address)", login);
    await cannotReadThePicture(page, "I can't read the picture");
    await page.getByRole("button", { name: "Request" }).click();
    await page.getByRole("button", { name: "Verify now" }).click();
    await page.getByRole("button", { name: "Get verification code" }).click();
    await heading(page, "Enter the verification code");
    const code = await service.waitForCode(login);
    const wrong = code === "000000" ? "111111" : "000000";
    for (let left = 4; left >= 1; left--) {
      await typeInto(page, "Verification code", wrong);
      await page.keyboard.press("Enter");
      await page.locator("#screen").getByText(`Attempts left: ${left}.`).waitFor();
    }
    await typeInto(page, "Verification code", wrong);
    await page.keyboard.press("Enter");
    await page.locator("#screen").getByText("that was the last attempt", { exact: false }).waitFor();
    await assertFocus(page, 'button "Start over"', "after the last wrong code");
    await waitForAnnouncement(page, await alertText(page));
    const startOver = page.locator("#alert").getByRole("button", { name: "Start over" });
    // Nothing on the screen can succeed any more: the code field and its buttons are off.
    assert.equal(await page.getByRole("button", { name: "Confirm" }).isDisabled(), true);
    assert.equal(await page.getByLabel("Verification code").isDisabled(), true);
    await assertFocus(page, 'button "Start over"');
    await shot(page, "13-attempts-exhausted");
    await startOver.press("Enter");
    await heading(page, "Forgot your password?");
    await assertFocus(page, 'h1 "Forgot your password?"', "after starting over");
    assert.equal(await page.getByLabel("Login ID (e-mail address)").inputValue(), login);
    assert.deepEqual(problems, []);
  } finally {
    await close();
  }
});

test("past the per-login limit, Request counts down from RetryInfo", async () => {
  const login = "many.tries@example.com";
  const { page, problems, close } = await phonePage();
  try {
    await page.goto(service.url);
    const request = page.getByRole("button", { name: "Request" });
    for (let attempt = 1; attempt <= 3; attempt++) {
      await typeInto(page, "Login ID (e-mail address)", login);
      await cannotReadThePicture(page, "I can't read the picture");
      await request.press("Enter");
      await heading(page, "Verify it is you");
      await page.goto(service.url);
      await heading(page, "Forgot your password?");
    }
    await typeInto(page, "Login ID (e-mail address)", login);
    await cannotReadThePicture(page, "I can't read the picture");
    await request.press("Enter");
    const text = await alertText(page);
    assert.match(text, /^Too many attempts\. Please try again in \d+\u00a0(s|min)\.$/);
    await assertFocus(page, `message "${text}"`, "after the limit");
    // Held, not disabled: still in the Tab order, announced as unavailable.
    assert.equal(await request.isDisabled(), true);
    assert.equal(await request.getAttribute("aria-disabled"), "true");
    await shot(page, "14-rate-limited");
    assert.deepEqual(problems, []);
  } finally {
    await close();
  }
});

test("a Swedish browser gets the Swedish page, and the code mail in Swedish", async () => {
  const login = "sven@example.se";
  service.createAccount(login, "Old-Granite-Harbor-73!");
  const { page, problems, close } = await phonePage("sv-SE");
  try {
    await page.goto(service.url);
    await heading(page, "Glömt ditt lösenord?");
    assert.equal(await page.evaluate(() => document.documentElement.lang), "sv");
    await captchaShown(page);
    await typeInto(page, "Inloggnings-ID (e-postadress)", login);
    assert.equal(await page.title(), "Glömt ditt lösenord? – Återställ lösenord");
    await shot(page, "15-swedish");
    await cannotReadThePicture(page, "Jag kan inte läsa bilden");
    await page.getByRole("button", { name: "Begär" }).press("Enter");
    await page.getByRole("button", { name: "Verifiera nu" }).click();
    await page.getByRole("button", { name: "Hämta verifieringskod" }).click();
    await heading(page, "Ange verifieringskoden");
    await service.waitForCode(login);
    assert.deepEqual(service.subjects(login), ["Din kod för att återställa lösenordet"]);
    assert.deepEqual(problems, []);
  } finally {
    await close();
  }
});

const REPORT_EFFECT =
  "When you confirm, we will end every open password recovery of your account and pause password recovery for 24 hours. Your password is not changed.";
const REPORT_INVALID = "This report code is wrong, has expired or was already used. Check the code in the message.";

test("the report link in the code mail asks first, and only the click reports", async () => {
  // A service whose [mail] report_url points back at itself, so the link in the mail is followed
  // as the person (or a mail scanner) would follow it.
  const port = await freePort();
  const reporting = await startService({
    env: {
      RECOVERY_LISTEN: `127.0.0.1:${port}`,
      RECOVERY_MAIL__REPORT_URL: `http://127.0.0.1:${port}/report?code={code}`,
    },
  });
  const login = "not.me@example.com";
  reporting.createAccount(login, "Old-Granite-Harbor-73!");
  const api = connect(reporting.address);
  const { page, problems, close } = await phonePage();
  try {
    const { flow } = await api.StartRecovery({ login_id: login, locale: "en" });
    await api.SendVerificationCode({ flow_id: flow.flow_id, channel: "EMAIL" });
    const code = await reporting.waitForCode(login);
    const report = reporting.report(login);
    assert.ok(report, "the code mail carries a report code");
    assert.equal(report.link, `http://127.0.0.1:${port}/report?code=${report.code}`);

    // Two visits (a mail scanner's prefetch, then the person): opening the page does nothing.
    for (let visit = 1; visit <= 2; visit++) {
      const response = await page.goto(report.link);
      assert.equal(response.status(), 200);
      assert.match(response.headers()["content-security-policy"], /default-src 'none'/);
      // The code in the address is a credential: never stored, never sent on as a referrer.
      assert.equal(response.headers()["cache-control"], "no-store");
      assert.equal(response.headers()["referrer-policy"], "no-referrer");
      await heading(page, "Report a recovery you did not ask for");
      assert.equal(await page.getByLabel("Report code", { exact: true }).inputValue(), report.code);
      // ... and the page took it out of the address (and so out of the history).
      assert.equal(page.url(), `http://127.0.0.1:${port}/report`);
      await page.locator("#screen").getByText(REPORT_EFFECT).waitFor();
      assert.equal(await page.locator("#alert").textContent(), "");
    }
    // The flow is still open: a wrong code is counted as usual, not refused as a dead flow.
    const wrong = code === "000000" ? "111111" : "000000";
    const stillOpen = await rejects(api.VerifyCode({ flow_id: flow.flow_id, code: wrong }));
    assert.equal(stillOpen.errorInfo.reason, "CODE_INVALID");
    await shot(page, "16-report-confirm");

    await page.getByRole("button", { name: "Confirm the report" }).click();
    await heading(page, "Thank you, it is reported");
    await page.locator("#screen").getByText("We ended every open password recovery of your account", { exact: false }).waitFor();
    await shot(page, "17-reported");
    // The click ended the flow: the right code does not work any more.
    const ended = await rejects(api.VerifyCode({ flow_id: flow.flow_id, code }));
    assert.ok(["FLOW_NOT_FOUND", "FLOW_STATE"].includes(ended.errorInfo.reason), JSON.stringify(ended));

    // The same link again: the page still asks, and the used code is refused clearly.
    await page.goto(report.link);
    await heading(page, "Report a recovery you did not ask for");
    const confirm = page.getByRole("button", { name: "Confirm the report" });
    await confirm.click();
    assert.equal(await alertText(page), REPORT_INVALID);
    await page.locator("#screen").getByText("Enter the report code from the message.").waitFor();
    assert.equal(await page.getByLabel("Report code", { exact: true }).getAttribute("aria-invalid"), "true");
    // A typo can be corrected: the field and the button stay usable (no "Start over").
    assert.equal(await confirm.isDisabled(), false);
    assert.equal(await page.getByRole("button", { name: "Start over" }).count(), 0);
    await shot(page, "18-report-used");
    assert.deepEqual(problems, []);
  } finally {
    await close();
    api.close();
    await reporting.stop();
  }
});

test("the report page without a code lets the person type it, and says what is wrong", async () => {
  const { page, problems, close } = await phonePage();
  try {
    await page.goto(new URL("/report", service.url).href);
    await heading(page, "Report a recovery you did not ask for");
    const field = page.getByLabel("Report code", { exact: true });
    assert.equal(await field.inputValue(), "");
    await assertFocus(page, 'h1 "Report a recovery you did not ask for"');
    await page.keyboard.press("Tab");
    await assertFocus(page, "input#report-code");
    await page.keyboard.press("Enter");
    assert.equal(await alertText(page), "Please check the marked fields.");
    assert.equal(await field.getAttribute("aria-invalid"), "true");
    await assertFocus(page, "input#report-code", "after an empty report code");
    // A well-formed code nobody was given, typed as people type: in groups, upper case.
    await typeInto(page, "Report code", "0123 4567 89AB CDEF 0123 4567 89AB CDEF");
    await page.keyboard.press("Enter");
    await page.locator("#alert").getByText(REPORT_INVALID).waitFor();
    await assertFocus(page, "input#report-code", "after a wrong report code");
    assert.deepEqual(problems, []);
  } finally {
    await close();
  }
});

test("a German browser gets the German page and sends de in StartRecovery", async () => {
  const login = "greta@example.de";
  service.createAccount(login, "Old-Granite-Harbor-73!");
  const { page, problems, close } = await phonePage("de-DE");
  try {
    await page.goto(service.url);
    await heading(page, "Passwort vergessen?");
    assert.equal(await page.evaluate(() => [document.documentElement.lang, document.documentElement.dir].join()), "de,ltr");
    await captchaShown(page);
    await typeInto(page, "Login-ID (E-Mail-Adresse)", login);
    await cannotReadThePicture(page, "Ich kann das Bild nicht lesen");
    await page.getByRole("button", { name: "Anfordern" }).press("Enter");
    await page.getByRole("button", { name: "Jetzt bestätigen" }).click();
    await page.getByRole("button", { name: "Bestätigungscode senden" }).click();
    await heading(page, "Bestätigungscode eingeben");
    await service.waitForCode(login);
    assert.deepEqual(service.subjects(login), ["Ihr Code zum Zurücksetzen des Passworts"]);
    await page.goto(new URL("/report", service.url).href);
    await heading(page, "Nicht angeforderte Wiederherstellung melden");
    assert.deepEqual(problems, []);
  } finally {
    await close();
  }
});

test("an Arabic browser gets a right-to-left page; other languages fall back as the mails do", async () => {
  const { page, problems, close } = await phonePage("ar-EG");
  try {
    await page.goto(service.url);
    await heading(page, "هل نسيت كلمة المرور؟");
    assert.equal(await page.evaluate(() => [document.documentElement.lang, document.documentElement.dir].join()), "ar,rtl");
    await captchaShown(page);
    // Right to left for real: the label starts at the right edge of its field.
    const [label, input] = await Promise.all([
      page.locator("label[for=login]").boundingBox(),
      page.locator("#login").boundingBox(),
    ]);
    assert.ok(Math.abs(label.x + label.width - (input.x + input.width)) < 2, JSON.stringify({ label, input }));
    await page.getByLabel("معرّف تسجيل الدخول (عنوان البريد الإلكتروني)").fill("not an e-mail");
    await page.getByRole("button", { name: "إرسال الطلب" }).click();
    assert.equal(await alertText(page), "يُرجى مراجعة الحقول المحدّدة.");
    await shot(page, "19-arabic");
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= PHONE.width, `the page scrolls sideways at ${PHONE.width}px: ${width}px`);
    assert.deepEqual(problems, []);
  } finally {
    await close();
  }
  const expected = [
    ["sv-FI", "sv", "Glömt ditt lösenord?"],
    ["pt-BR", "pt", "Esqueceu sua senha?"],
    ["zh-TW", "zh", "忘记密码了？"],
    ["fr-CA", "fr", "Mot de passe oublié ?"],
    ["es-MX", "es", "¿Ha olvidado su contraseña?"],
    ["it-IT", "it", "Hai dimenticato la password?"],
    ["nl-BE", "nl", "Wachtwoord vergeten?"],
    ["pl-PL", "pl", "Nie pamiętasz hasła?"],
    ["uk-UA", "uk", "Забули пароль?"],
    ["ru-RU", "ru", "Забыли пароль?"],
    ["ja-JP", "en", "Forgot your password?"],
  ];
  for (const [browserLocale, lang, title] of expected) {
    const other = await phonePage(browserLocale);
    try {
      await other.page.goto(service.url);
      await heading(other.page, title);
      assert.equal(await other.page.evaluate(() => document.documentElement.lang), lang, browserLocale);
      assert.deepEqual(other.problems, [], browserLocale);
    } finally {
      await other.close();
    }
  }
});

test("the page is not served when [ui] enabled is false", async () => {
  const off = await startService({ env: { RECOVERY_UI__ENABLED: "false" } });
  try {
    const response = await fetch(off.url);
    assert.notEqual(response.status, 200);
    assert.equal(response.headers.get("content-security-policy"), null);
  } finally {
    await off.stop();
  }
});

// Off: nothing to read or do. Pow: nothing to read, the work runs by itself and "Request"
// waits for it, holding focus on the button.
for (const [mode, shown] of [
  ["off", "Enter your login ID, and we will help you set a new password."],
  ["pow", "Done. You can press Request."],
]) {
  test(`with RECOVERY_CAPTCHA=${mode} the page shows no picture and asks for no digits`, async () => {
    const other = await startService({ captcha: mode });
    const login = `captcha.${mode}@example.com`;
    other.createAccount(login, "Old-Granite-Harbor-73!");
    const { page, problems, close } = await phonePage();
    try {
      await page.goto(other.url);
      await heading(page, "Forgot your password?");
      await page.locator("#screen").getByText("Enter your login ID, and we will help you set a new password.").waitFor();
      await page.locator("#screen").getByText(shown).first().waitFor();
      assert.equal(await page.locator("img.captcha").isVisible(), false);
      assert.equal(await page.getByLabel("Digits in the picture").isVisible(), false);
      assert.equal(await page.getByRole("button", { name: "I can't read the picture" }).isVisible(), false);
      assert.equal(await page.locator(".work").isVisible(), mode === "pow");
      // By keyboard: the login field, then straight to "Request".
      await page.keyboard.press("Tab");
      await assertFocus(page, "input#login");
      await page.keyboard.type(login);
      await page.keyboard.press("Tab");
      await assertFocus(page, 'button "Request"');
      await page.keyboard.press("Enter");
      await heading(page, "Verify it is you");
      assert.deepEqual(problems, []);
    } finally {
      await close();
      await other.stop();
    }
  });
}
