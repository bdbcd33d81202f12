// What the browser suites share: Debian's Chromium driven by playwright-core, pages in a
// browser language and colour scheme, the page's own controls found the way a person finds them,
// where focus is, the axe-core rule engine, what the live regions said, and one walk through the
// whole flow that stops on every screen.

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
/** A phone-sized screen. */
export const PHONE = { width: 375, height: 740 };
/** The same phone at 200 % zoom: half as many CSS pixels each way (WCAG 1.4.10 asks for 320). */
export const PHONE_ZOOMED = { width: 188, height: 370 };

export async function launchBrowser() {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  return chromium.launch({
    executablePath: CHROMIUM,
    // Root in CI has no user namespaces for Chromium's sandbox.
    args: ["--no-sandbox", "--disable-gpu", "--font-render-hinting=none"],
  });
}

/**
 * Records every change to a live region (role alert or status, or aria-live) with whether the
 * screen was aria-busy at that moment, as `window.__liveWrites`: run in the page before its
 * script, so nothing is missed.
 */
function recordLiveRegions() {
  window.__liveWrites = [];
  const live = (node) =>
    node instanceof Element &&
    (node.matches("[role=alert], [role=status], [aria-live]") ? node : node.closest("[role=alert], [role=status], [aria-live]"));
  new MutationObserver((mutations) => {
    for (const mutation of mutations) {
      const target = mutation.target instanceof Element ? mutation.target : mutation.target.parentElement;
      const region = live(target);
      if (!region) continue;
      window.__liveWrites.push({
        region: region.id || region.getAttribute("role") || region.tagName,
        text: region.textContent,
        busy: Boolean(document.querySelector("[aria-busy=true]")),
        at: Date.now(),
      });
    }
  }).observe(document, { subtree: true, childList: true, characterData: true });
}

/** A page in `locale` and `colorScheme`, on a phone-sized screen unless `viewport` says. */
export async function newPage(browser, { locale = "en-US", colorScheme = "light", viewport = PHONE } = {}) {
  const context = await browser.newContext({
    viewport,
    deviceScaleFactor: viewport.width < PHONE.width ? 2 : 1,
    locale,
    colorScheme,
    reducedMotion: "reduce",
  });
  await context.addInitScript(recordLiveRegions);
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  return { page, problems, close: () => context.close() };
}

export async function heading(page, text) {
  try {
    await page.getByRole("heading", { level: 1, name: text }).waitFor({ timeout: 15_000 });
  } catch (error) {
    const shown = await page.evaluate(() => document.body.innerText).catch(() => "?");
    throw new Error(`no heading "${text}"; the page shows:\n${shown}\n${error.message}`);
  }
}

/** The sentence shown in the screen's message box, once there is one. */
export async function alertText(page) {
  const message = page.locator("#alert .message");
  await message.waitFor();
  return message.innerText();
}

/** Types into the field with this label, by keyboard. */
export async function typeInto(page, label, text) {
  const input = page.getByLabel(label, { exact: true });
  await input.focus();
  await input.fill("");
  await page.keyboard.type(text);
  assert.equal(await input.inputValue(), text, `typing into "${label}"`);
}

export async function captchaShown(page) {
  await page.waitForFunction(() => {
    const image = document.querySelector("img.captcha");
    return image instanceof HTMLImageElement && image.complete && image.naturalWidth > 0 && !image.hidden;
  });
}

/** Where focus is, as a person would name it: `h1 "Title"`, `input#login`, `button "Request"`,
 *  `message "…"` (the sentence of the message box), or the tag. */
export async function focused(page) {
  return page.evaluate(() => {
    const element = document.activeElement;
    if (!element || element === document.body) return "body";
    const text = element.textContent?.trim() ?? "";
    if (element instanceof HTMLInputElement) return `input#${element.id}`;
    if (element.matches("#alert .message")) return `message "${text}"`;
    return `${element.tagName.toLowerCase()} "${text}"`;
  });
}

/** Asserts where focus is; `expected` as `focused` names it, or a RegExp. */
export async function assertFocus(page, expected, when) {
  const actual = await focused(page);
  if (expected instanceof RegExp) assert.match(actual, expected, when);
  else assert.equal(actual, expected, when);
}

/** The texts written to the page's announcers since it loaded (in order), and every live-region
 *  write with the busy flag. */
export async function liveWrites(page) {
  return page.evaluate(() => window.__liveWrites);
}

export async function announced(page) {
  const writes = await liveWrites(page);
  return writes.filter((write) => write.text).map((write) => write.text);
}

/** Waits until the announcers have said `text`. */
export async function waitForAnnouncement(page, text, timeout = 15_000) {
  await page.waitForFunction(
    (wanted) => window.__liveWrites.some((write) => write.text === wanted),
    text,
    { timeout },
  );
}

// ---- axe-core ---------------------------------------------------------------------------------

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
/** WCAG 2.0, 2.1 and 2.2 A and AA, and Deque's best practices. */
const AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa", "best-practice"];

/** Runs axe-core on the page as it is now; fails with every violation, naming the screen. */
export async function assertNoAxeViolations(page, screen) {
  const loaded = await page.evaluate(() => typeof window.axe !== "undefined");
  // Evaluated through the DevTools protocol: the page's Content-Security-Policy stays as served.
  if (!loaded) await page.evaluate(AXE_SOURCE);
  const results = await page.evaluate(
    (tags) => window.axe.run(document, { runOnly: { type: "tag", values: tags }, resultTypes: ["violations"] }),
    AXE_TAGS,
  );
  const violations = results.violations.map(
    (v) => `${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.map((n) => `${n.target.join(" ")}: ${n.failureSummary}`).join("\n    ")}`,
  );
  assert.deepEqual(violations, [], `axe-core on "${screen}"`);
  // Not vacuous: the rules ran on this screen's content.
  assert.ok(results.passes.length >= 10, `axe-core checked only ${results.passes.length} rules on "${screen}"`);
  return results;
}

// ---- the flow, by the page's own controls ----------------------------------------------------

/** The current heading's text. */
export async function headingText(page) {
  return page.locator("#screen h1").innerText();
}

/** Waits for the next screen: a new heading. */
async function nextScreen(page, before) {
  await page.waitForFunction((old) => {
    const h1 = document.querySelector("#screen h1");
    return h1 && h1.textContent !== old && document.activeElement === h1;
  }, before);
}

/** Chooses "I can't read the picture" and waits for the work to be done. */
export async function workInsteadOfPicture(page) {
  await captchaShown(page);
  const toggle = page.locator("button.toggle");
  await toggle.click();
  assert.equal(await toggle.getAttribute("aria-pressed"), "true");
  await page.waitForFunction(() => document.querySelector(".work progress")?.value === 100, null, { timeout: 30_000 });
}

/**
 * The whole flow in the page's language, stopping on every screen and error with
 * `at(name)`: start, start-invalid, start-pow, methods, send, code, code-cooldown, code-wrong,
 * password, password-live, password-refused, password-mismatch, done.
 */
export async function walkFlow(page, service, { login, newPassword, at }) {
  await page.goto(service.url);
  await page.locator("#screen h1").waitFor();
  await captchaShown(page);
  await at("start");

  await page.locator("#login").fill("not-an-email");
  await page.locator("form button[type=submit]").click();
  await page.locator("#alert .message").waitFor();
  await captchaShown(page);
  await at("start-invalid");

  await page.locator("#login").fill(login);
  await workInsteadOfPicture(page);
  await at("start-pow");
  let before = await headingText(page);
  await page.locator("form button[type=submit]").click();
  await nextScreen(page, before);
  await at("methods");

  before = await headingText(page);
  await page.locator("ul.methods button").first().click();
  await nextScreen(page, before);
  await at("send");

  before = await headingText(page);
  await page.locator("#screen > button").click();
  await nextScreen(page, before);
  await at("code");
  const code = await service.waitForCode(login);

  await page.locator("form .actions button.secondary").click();
  await page.locator("#alert .message").waitFor();
  await at("code-cooldown");

  await page.locator("#code").fill(code === "000000" ? "111111" : "000000");
  await page.locator("form .actions button[type=submit]").click();
  await page.waitForFunction(() => document.querySelector("#code")?.getAttribute("aria-invalid") === "true");
  await at("code-wrong");

  before = await headingText(page);
  await page.locator("#code").fill(code);
  await page.locator("form .actions button[type=submit]").click();
  await nextScreen(page, before);
  await at("password");

  await page.locator("#new-password").fill("password");
  await page.waitForFunction(() => document.querySelectorAll("ul.rules li").length > 0);
  await at("password-live");

  await page.locator("#repeat-password").fill("password");
  await page.locator("form button[type=submit]").click();
  await page.waitForFunction(() => document.querySelector("#alert")?.dataset.reason === "PASSWORD_POLICY");
  await at("password-refused");

  await page.locator("#new-password").fill(newPassword);
  await page.waitForFunction(() => document.querySelector(".feedback")?.dataset.state === "ok");
  await page.locator("#repeat-password").fill(`${newPassword}!`);
  await page.locator("form button[type=submit]").click();
  await page.waitForFunction(() => document.querySelector("#alert")?.dataset.reason === "PASSWORD_MISMATCH");
  await at("password-mismatch");

  before = await headingText(page);
  await page.locator("#repeat-password").fill(newPassword);
  await page.locator("form button[type=submit]").click();
  await nextScreen(page, before);
  await at("done");
}

/** The report page without a code, then its error. */
export async function walkReport(page, service, { at }) {
  await page.goto(new URL("/report", service.url).href);
  await page.locator("#screen h1").waitFor();
  await at("report");
  await page.locator("form button[type=submit]").click();
  await page.locator("#alert .message").waitFor();
  await at("report-invalid");
}

