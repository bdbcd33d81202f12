// Accessibility of the web front end in headless Chromium against the real binary (the image
// captcha with its way round the picture, as served by default):
// - axe-core (WCAG 2.0/2.1/2.2 A and AA and best practices) on every screen and error of the flow
//   and the report page, in English, Swedish and Arabic, light and dark: any violation fails;
// - reflow: a 375 px phone at 200 % zoom (188 CSS px) shows every screen without sideways
//   scrolling, nothing spilling out of the card;
// - announcements: every live region is written only when the screen is not aria-busy, the
//   resend countdown is silent between its start and its end, a fixed weak password loses its
//   mark and its refusal.
// The keyboard-only walk with focus after every step and error is in browser.test.mjs.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  PHONE_ZOOMED,
  alertText,
  assertNoAxeViolations,
  launchBrowser,
  liveWrites,
  newPage,
  waitForAnnouncement,
  walkFlow,
  walkReport,
} from "./support/browser.mjs";
import { startService } from "./support/service.mjs";

const NEW_PASSWORD = "New-Velvet-Lantern-58?";

let service;
let browser;

before(async () => {
  service = await startService({
    captcha: "image",
    env: {
      // Cheap work, so six walks stay quick (the default cost is walked in browser.test.mjs),
      // and a short resend cooldown, so its end is reached.
      RECOVERY_FLOW__POW_ALTERNATIVE_MAX_NUMBER: "20000",
      RECOVERY_FLOW__RESEND_COOLDOWN_SECS: "4",
      RECOVERY_RATE_LIMITS__ENABLED: "false",
    },
  });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await service?.stop();
});

let accounts = 0;
function freshAccount(tag) {
  // A long login: the masked address and the done screen's login must wrap, not spill.
  const login = `a11y.${tag}.${++accounts}.with-a-rather-long-name@accessibility-testing.example.com`;
  service.createAccount(login, "Old-Granite-Harbor-73!");
  return login;
}

test("the axe-core check fails on a page with a violation", async () => {
  const { page, close } = await newPage(browser);
  try {
    await page.goto(service.url);
    await page.locator("#screen h1").waitFor();
    // A picture without a text alternative and a field without a label.
    await page.evaluate(() => {
      const image = document.querySelector("img.captcha");
      image?.removeAttribute("alt");
      document.querySelector("label[for=login]")?.remove();
    });
    await page.locator("img.captcha").waitFor();
    const failure = await assertNoAxeViolations(page, "a broken page").then(
      () => null,
      (error) => error,
    );
    assert.ok(failure, "a page with violations passed");
    assert.match(failure.message, /image-alt/);
    assert.match(failure.message, /\blabel\b/);
  } finally {
    await close();
  }
});

for (const locale of ["en-US", "sv-SE", "ar-EG"]) {
  for (const colorScheme of ["light", "dark"]) {
    test(`axe-core finds nothing on any screen in ${locale}, ${colorScheme}`, async () => {
      const { page, problems, close } = await newPage(browser, { locale, colorScheme });
      const screens = [];
      const at = async (screen) => {
        await assertNoAxeViolations(page, `${screen} (${locale}, ${colorScheme})`);
        screens.push(screen);
      };
      try {
        await walkFlow(page, service, { login: freshAccount(`${locale}-${colorScheme}`), newPassword: NEW_PASSWORD, at });
        await walkReport(page, service, { at });
        assert.equal(screens.length, 15, screens.join());
        assert.deepEqual(problems, []);
      } finally {
        await close();
      }
    });
  }
}

/** Every element of the card lies within it, and the page does not scroll sideways. */
async function assertReflows(page, screen) {
  const spill = await page.evaluate(() => {
    const card = document.querySelector("#app").getBoundingClientRect();
    const out = [];
    for (const element of document.querySelectorAll("#screen *")) {
      const box = element.getBoundingClientRect();
      if (box.width === 0 && box.height === 0) continue;
      if (box.left < card.left - 0.5 || box.right > card.right + 0.5) {
        out.push(`${element.tagName.toLowerCase()}${element.id ? `#${element.id}` : ""} "${(element.textContent ?? "").trim().slice(0, 40)}" ${Math.round(box.left)}..${Math.round(box.right)} outside ${Math.round(card.left)}..${Math.round(card.right)}`);
      }
    }
    const width = document.documentElement.scrollWidth;
    if (width > window.innerWidth) out.push(`the page is ${width} px wide in a ${window.innerWidth} px viewport`);
    return out;
  });
  assert.deepEqual(spill, [], `reflow on "${screen}"`);
}

for (const locale of ["en-US", "sv-SE"]) {
  test(`at 375 px and 200 % zoom every screen reflows inside the card (${locale})`, async () => {
    const { page, problems, close } = await newPage(browser, { locale, viewport: PHONE_ZOOMED });
    const screens = [];
    const at = async (screen) => {
      await assertReflows(page, `${screen} (${locale})`);
      screens.push(screen);
    };
    try {
      await walkFlow(page, service, { login: freshAccount(`zoom-${locale}`), newPassword: NEW_PASSWORD, at });
      await walkReport(page, service, { at });
      assert.equal(screens.length, 15, screens.join());
      assert.deepEqual(problems, []);
    } finally {
      await close();
    }
  });
}

test("nothing is announced while the screen is busy, and the resend countdown only at its start and end", async () => {
  const { page, problems, close } = await newPage(browser);
  let cooldownSeen = false;
  const at = async (screen) => {
    if (screen !== "code-cooldown") return;
    cooldownSeen = true;
    // Focus is on the sentence (read once); the seconds then change silently until the end,
    // announced once.
    const sentence = await alertText(page);
    assert.match(sentence, /^You can ask for a new code in \d\u00a0s\.$/);
    assert.equal(await page.evaluate(() => document.activeElement?.classList.contains("message")), true);
    await waitForAnnouncement(page, "You can try again now.", 10_000);
    assert.equal(await alertText(page), "You can try again now.");
    const resend = page.locator("form .actions button.secondary");
    assert.equal(await resend.getAttribute("aria-disabled"), null);
  };
  try {
    await walkFlow(page, service, { login: freshAccount("live"), newPassword: NEW_PASSWORD, at });
    assert.ok(cooldownSeen);
    const writes = await liveWrites(page);
    assert.deepEqual(writes.filter((write) => write.busy), [], "written while aria-busy");
    // Only the two announcers are live; the countdown never wrote to either.
    assert.deepEqual([...new Set(writes.map((write) => write.region))].sort(), ["announce-polite", "announce-urgent"]);
    const said = writes.filter((write) => write.text).map((write) => write.text);
    assert.deepEqual(said.filter((text) => text.includes("new code in")), []);
    assert.equal(said.filter((text) => text === "You can try again now.").length, 1);
    assert.deepEqual(problems, []);
  } finally {
    await close();
  }
});

test("a refused weak password made strong loses its mark and its refusal", async () => {
  const { page, problems, close } = await newPage(browser);
  const at = async (screen) => {
    if (screen === "password-refused") {
      assert.equal(await page.locator("#new-password").getAttribute("aria-invalid"), "true");
      assert.equal(await alertText(page), "The new password does not meet the rules listed above.");
      await page.locator("#new-password").fill(NEW_PASSWORD);
      await page.waitForFunction(() => document.querySelector(".feedback")?.dataset.state === "ok");
      assert.equal(await page.locator("#new-password").getAttribute("aria-invalid"), null);
      assert.equal(await page.locator("#alert").innerText(), "");
    }
  };
  try {
    await walkFlow(page, service, { login: freshAccount("weak"), newPassword: NEW_PASSWORD, at });
    assert.deepEqual(problems, []);
  } finally {
    await close();
  }
});
