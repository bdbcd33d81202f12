// The web front end in a real headless Chromium (Debian's `chromium`, driven by
// playwright-core), served by the real binary: the whole flow by keyboard on a phone-sized
// screen, the error paths (bad input, resend cooldown, wrong codes counting down, mismatch,
// weak password, rate limit countdown, a dead flow), the "it wasn't me" report page behind the
// code mail's link, the page in the browser's language (13 locales, Arabic right to left), and
// the headers.
// Screenshots of each step go to target/screenshots/, or to SCREENSHOTS_DIR:
// `SCREENSHOTS_DIR=../docs/screenshots npm test` refreshes the ones the README shows.

import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";
import { connect, rejects } from "../grpc/client.mjs";
import { REPO, freePort, startService } from "./support/service.mjs";

const SHOTS = path.resolve(process.env.SCREENSHOTS_DIR ?? path.join(REPO, "target/screenshots"));
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const PHONE = { width: 375, height: 740 };

let service;
let browser;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  mkdirSync(SHOTS, { recursive: true });
  // A per-login limit of 3 StartRecovery calls, so the rate-limit countdown is reachable.
  service = await startService({ env: { RECOVERY_RATE_LIMITS__PER_LOGIN__LIMIT: "3" } });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Root in CI has no user namespaces for Chromium's sandbox.
    args: ["--no-sandbox", "--disable-gpu", "--font-render-hinting=none"],
  });
});
after(async () => {
  await browser?.close();
  await service?.stop();
});

async function phonePage(locale = "en-US") {
  const context = await browser.newContext({
    viewport: PHONE,
    deviceScaleFactor: 1,
    locale,
    colorScheme: "light",
    reducedMotion: "reduce",
  });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  return { page, problems, close: () => context.close() };
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function heading(page, text) {
  try {
    await page.getByRole("heading", { level: 1, name: text }).waitFor({ timeout: 15_000 });
  } catch (error) {
    const shown = await page.evaluate(() => document.body.innerText).catch(() => "?");
    throw new Error(`no heading "${text}"; the page shows:\n${shown}\n${error.message}`);
  }
}

async function alertText(page) {
  const alert = page.getByRole("alert");
  await alert.waitFor();
  return alert.innerText();
}

/** Types into the field with this label, by keyboard. */
async function typeInto(page, label, text) {
  const input = page.getByLabel(label, { exact: true });
  await input.focus();
  await input.fill("");
  await page.keyboard.type(text);
  assert.equal(await input.inputValue(), text, `typing into "${label}"`);
}

async function captchaShown(page) {
  await page.waitForFunction(() => {
    const image = document.querySelector("img.captcha");
    return image instanceof HTMLImageElement && image.complete && image.naturalWidth > 0;
  });
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
});

test("a person recovers an account in the browser, by keyboard, on a phone-sized screen", async () => {
  const login = "jane.doe@example.com";
  const oldPassword = "Old-Granite-Harbor-73!";
  const newPassword = "New-Velvet-Lantern-58?";
  service.createAccount(login, oldPassword);
  const { page, problems, close } = await phonePage();
  try {
    await page.goto(service.url);
    await heading(page, "Forgot your password?");
    await captchaShown(page);
    await shot(page, "01-start");

    // Bad input: the field is named in a sentence, next to it.
    await typeInto(page, "Login ID (e-mail address)", "jane.doe");
    await page.keyboard.press("Enter");
    assert.equal(await alertText(page), "Please check the marked fields.");
    await page.getByText("Enter your login ID as an e-mail address.").waitFor();
    assert.equal(await page.getByLabel("Login ID (e-mail address)").getAttribute("aria-invalid"), "true");
    await captchaShown(page);
    await shot(page, "02-invalid-login");

    // Step 2: the login and the digits (the captcha is off in this test), then "Request".
    await typeInto(page, "Login ID (e-mail address)", login);
    await typeInto(page, "Digits in the picture", "123456");
    await shot(page, "03-request");
    await page.getByRole("button", { name: "Request" }).press("Enter");

    // Step 3: the masked mailbox and "Verify now".
    await heading(page, "Verify it is you");
    await page.getByText("j***e@e***.com").waitFor();
    await shot(page, "04-verify-now");
    await page.keyboard.press("Tab"); // from the focused heading to the first button
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Verify now");
    await page.keyboard.press("Enter");

    // Step 4: "Get verification code".
    await heading(page, "Get a verification code");
    await shot(page, "05-get-code");
    await page.getByRole("button", { name: "Get verification code" }).press("Enter");

    // Step 5: the code and "Confirm". First the cooldown from RetryInfo, counting down.
    await heading(page, "Enter the verification code");
    const code = await service.waitForCode(login);
    const resend = page.getByRole("button", { name: "Send a new code" });
    await resend.press("Enter");
    const cooldown = await alertText(page);
    const first = Number(/in (\d+)\u00a0s\./.exec(cooldown)?.[1]);
    assert.ok(first > 1 && first <= 60, cooldown);
    assert.equal(await resend.isDisabled(), true);
    await page.waitForFunction(
      (start) => /in (\d+)\u00a0s\./.exec(document.querySelector("#alert")?.textContent ?? "")?.[1] < start,
      first,
    );
    await shot(page, "06-resend-cooldown");

    // Wrong codes count the attempts down.
    const wrong = code === "000000" ? "111111" : "000000";
    await typeInto(page, "Verification code", wrong);
    await page.keyboard.press("Enter");
    await page.getByText("The code is wrong. Attempts left: 4.").waitFor();
    await typeInto(page, "Verification code", wrong);
    await page.keyboard.press("Enter");
    await page.getByText("The code is wrong. Attempts left: 3.").waitFor();
    await shot(page, "07-wrong-code");

    await typeInto(page, "Verification code", code);
    await page.keyboard.press("Enter");

    // Step 6: the new password twice, with live feedback from ValidatePassword.
    await heading(page, "Set a new password");
    await typeInto(page, "New password", "password");
    await page.getByText("This is one of the most common passwords.").waitFor();
    assert.equal(await page.locator("meter").getAttribute("value"), "0");
    await typeInto(page, "New password again", "password");
    await shot(page, "08-weak-password-live");
    await page.getByRole("button", { name: "Confirm new password" }).press("Enter");
    assert.equal(await alertText(page), "The new password does not meet the rules listed above.");
    await shot(page, "09-weak-password-refused");

    await typeInto(page, "New password", newPassword);
    await page.getByText("This password meets every rule.").waitFor();
    await typeInto(page, "New password again", `${newPassword}!`);
    await page.getByText("The two passwords are not the same yet.").waitFor();
    await page.keyboard.press("Enter");
    await page.getByRole("alert").getByText("The two passwords are not the same.").waitFor();
    await shot(page, "10-mismatch");

    await typeInto(page, "New password again", newPassword);
    await shot(page, "11-new-password");
    await page.keyboard.press("Enter");

    // Step 7: done; log in with the old login and the new password.
    await heading(page, "Your password has been changed");
    await page.getByText(`Log in with your login ID ${login} and your new password.`).waitFor();
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
    await typeInto(page, "Digits in the picture", "123456");
    await page.keyboard.press("Enter");
    await page.getByRole("button", { name: "Verify now" }).click();
    await page.getByRole("button", { name: "Get verification code" }).click();
    await heading(page, "Enter the verification code");
    const code = await service.waitForCode(login);
    const wrong = code === "000000" ? "111111" : "000000";
    for (let left = 4; left >= 1; left--) {
      await typeInto(page, "Verification code", wrong);
      await page.keyboard.press("Enter");
      await page.getByText(`Attempts left: ${left}.`).waitFor();
    }
    await typeInto(page, "Verification code", wrong);
    await page.keyboard.press("Enter");
    await page.getByText("that was the last attempt", { exact: false }).waitFor();
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Start over");
    const startOver = page.getByRole("alert").getByRole("button", { name: "Start over" });
    // Nothing on the screen can succeed any more: the code field and its buttons are off.
    assert.equal(await page.getByRole("button", { name: "Confirm" }).isDisabled(), true);
    assert.equal(await page.getByLabel("Verification code").isDisabled(), true);
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Start over");
    await shot(page, "13-attempts-exhausted");
    await startOver.press("Enter");
    await heading(page, "Forgot your password?");
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
      await typeInto(page, "Digits in the picture", "123456");
      await request.press("Enter");
      await heading(page, "Verify it is you");
      await page.goto(service.url);
      await heading(page, "Forgot your password?");
    }
    await typeInto(page, "Login ID (e-mail address)", login);
    await typeInto(page, "Digits in the picture", "123456");
    await page.getByRole("button", { name: "Request" }).press("Enter");
    const text = await alertText(page);
    assert.match(text, /^Too many attempts\. Please try again in \d+\u00a0(s|min)\.$/);
    assert.equal(await page.getByRole("button", { name: "Request" }).isDisabled(), true);
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
    await typeInto(page, "Siffrorna i bilden", "123456");
    await shot(page, "15-swedish");
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
      await heading(page, "Report a recovery you did not ask for");
      assert.equal(await page.getByLabel("Report code", { exact: true }).inputValue(), report.code);
      await page.getByText(REPORT_EFFECT).waitFor();
      assert.equal(await page.locator("#alert").textContent(), "");
    }
    // The flow is still open: a wrong code is counted as usual, not refused as a dead flow.
    const wrong = code === "000000" ? "111111" : "000000";
    const stillOpen = await rejects(api.VerifyCode({ flow_id: flow.flow_id, code: wrong }));
    assert.equal(stillOpen.errorInfo.reason, "CODE_INVALID");
    await shot(page, "16-report-confirm");

    await page.getByRole("button", { name: "Confirm the report" }).click();
    await heading(page, "Thank you, it is reported");
    await page.getByText("We ended every open password recovery of your account", { exact: false }).waitFor();
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
    await page.getByText("Enter the report code from the message.").waitFor();
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
    assert.equal(await page.evaluate(() => document.activeElement?.id), "report-code");
    await page.keyboard.press("Enter");
    assert.equal(await alertText(page), "Please check the marked fields.");
    assert.equal(await field.getAttribute("aria-invalid"), "true");
    // A well-formed code nobody was given, typed as people type: in groups, upper case.
    await typeInto(page, "Report code", "0123 4567 89AB CDEF 0123 4567 89AB CDEF");
    await page.keyboard.press("Enter");
    await page.getByRole("alert").getByText(REPORT_INVALID).waitFor();
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
    await typeInto(page, "Ziffern im Bild", "123456");
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
