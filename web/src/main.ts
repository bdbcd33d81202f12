// The reference front end of the recovery flow: one screen per step, each a plain
// form, talking grpc-web to the service that serves this page. No framework: six small screens
// do not earn one, and the bundle stays small enough to embed in the binary.

import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import {
  CaptchaCheck,
  Channel,
  RecoveryService,
  type CreateCaptchaResponse,
  type ProofOfWork,
  type RecoveryFlow,
  type VerificationMethod,
} from "./gen/identity/recovery/v1/recovery_pb";
import { describe, type Problem } from "./errors";
import { direction, isKey, pickLocale, translator, type Key } from "./i18n";
import { PowFailure, solvePow, type PowChallenge, type Progress } from "./pow";
import type { PowMessage } from "./pow-worker";

/** The proof-of-work worker's address, with its content hash (set by build.mjs). */
declare const POW_WORKER_URL: string;

const locale = pickLocale(navigator.languages?.length ? navigator.languages : [navigator.language]);
const t = translator(locale);
document.documentElement.lang = locale;
document.documentElement.dir = direction(locale);
document.title = t("pageTitle");

const client = createClient(
  RecoveryService,
  // Same origin: the service serves this page on its gRPC port, so no CORS is needed.
  createGrpcWebTransport({ baseUrl: window.location.origin, useBinaryFormat: true }),
);

interface State {
  loginId: string;
  flow?: RecoveryFlow;
  method?: VerificationMethod;
  /** Kept in memory only: a reset token in storage would outlive the tab. */
  resetToken?: string;
  captchaId?: string;
  captchaUrl?: string;
  /** What StartRecovery checks of the current captcha. */
  captchaCheck?: CaptchaCheck;
  /** The current captcha's proof of work, when it has one. */
  pow?: ProofOfWork;
  /** The proof-of-work answer being computed for the current captcha, if it is needed. */
  powSolution?: Promise<string>;
  powAbort?: AbortController;
}

let state: State = { loginId: "" };
/** Timers of the screen on display, cleared when it is replaced. */
let timers: number[] = [];

const root = document.getElementById("app") as HTMLElement;

// ---- DOM helpers -------------------------------------------------------------------------

type Child = Node | string | null | undefined | false;

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Record<string, string | boolean> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === false) continue;
    element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child);
  }
  return element;
}

function field(id: string, label: string, input: HTMLInputElement): HTMLElement {
  input.id = id;
  input.setAttribute("aria-describedby", `${id}-hint`);
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    h("p", { class: "hint", id: `${id}-hint` }),
  );
}

/** Where a screen shows what went wrong. Not a live region: the sentence is read when focus
 *  moves to it, or announced once (`announce`), and a countdown in it changes silently. */
function alertBox(): HTMLElement {
  return h("div", { class: "alert", id: "alert" });
}

// The screen on display, and beside it (never under its aria-busy) the two live regions every
// announcement goes through: each sentence is written there once, when it is news.
const screen = h("div", { id: "screen" });
const politeRegion = h("div", { class: "visually-hidden", role: "status", id: "announce-polite" });
const urgentRegion = h("div", { class: "visually-hidden", role: "alert", id: "announce-urgent" });
root.replaceChildren(screen, politeRegion, urgentRegion);

/** Says `text` once to screen readers. Emptied first, so the same sentence twice is news twice;
 *  held back while the screen is busy (a call that started meanwhile), as some readers drop it. */
function announce(text: string, urgent = false): void {
  const region = urgent ? urgentRegion : politeRegion;
  region.textContent = "";
  const write = () => {
    if (screen.getAttribute("aria-busy") === "true") window.setTimeout(write, 100);
    else region.textContent = text;
  };
  window.setTimeout(write, 100);
}

/** Replaces the screen, names the step in the document title and moves focus to its heading,
 *  so keyboard and screen-reader users land at the top of the new step. */
function show(...children: Child[]): void {
  for (const timer of timers) window.clearInterval(timer);
  timers = [];
  screen.replaceChildren(...children.filter((c): c is Node | string => Boolean(c)));
  const heading = screen.querySelector("h1");
  document.title = heading?.textContent ? `${heading.textContent} – ${t("pageTitle")}` : t("pageTitle");
  heading?.setAttribute("tabindex", "-1");
  heading?.focus();
}

function startOverButton(): HTMLButtonElement {
  const button = h("button", { type: "button", class: "secondary" }, t("startOver"));
  button.addEventListener("click", () => void startOver());
  return button;
}

/** Holds a button for a reason (a call in flight, a cooldown) with `aria-disabled`, not
 *  `disabled`: a disabled button loses focus to the body, an aria-disabled one keeps it (and
 *  stays in the Tab order, announced as unavailable). Clicks are ignored while held. */
function hold(button: HTMLButtonElement, reason: "busy" | "cooldown"): void {
  button.dataset.locked = reason;
  button.setAttribute("aria-disabled", "true");
}

function release(button: HTMLButtonElement, reason: "busy" | "cooldown"): void {
  if (button.dataset.locked !== reason) return;
  delete button.dataset.locked;
  button.removeAttribute("aria-disabled");
}

function isHeld(button: HTMLButtonElement): boolean {
  return button.disabled || Boolean(button.dataset.locked);
}

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** Runs a call with `button` held and the screen marked busy. Resolves once the screen is no
 *  longer busy, so what the caller writes next is announced (some screen readers drop what is
 *  written inside an aria-busy region). */
async function attempt<T>(button: HTMLButtonElement, work: () => Promise<T>): Promise<Outcome<T>> {
  hold(button, "busy");
  screen.setAttribute("aria-busy", "true");
  try {
    return { ok: true, value: await work() };
  } catch (error) {
    return { ok: false, error };
  } finally {
    screen.removeAttribute("aria-busy");
    release(button, "busy");
  }
}

// ---- errors --------------------------------------------------------------------------------

/** Reasons after which this flow cannot go on: the page offers to start over. */
const FLOW_IS_OVER = new Set(["FLOW_NOT_FOUND", "FLOW_STATE", "ATTEMPTS_EXHAUSTED", "TOKEN_INVALID"]);
const COOLDOWNS = new Set(["RESEND_TOO_SOON", "RATE_LIMITED"]);

/** The last wrong code answers CODE_INVALID with no attempts left: the flow is dead too. */
function flowIsOver(problem: Problem): boolean {
  return (
    FLOW_IS_OVER.has(problem.reason) ||
    (problem.reason === "CODE_INVALID" && problem.attemptsLeft === 0)
  );
}

/** Which screen an error is shown on: the recovery flow, or the report page (where
 *  TOKEN_INVALID means the report code, and no flow is there to end). */
type Screen = "flow" | "report";

function sentence(problem: Problem, secondsLeft = problem.retryAfterSeconds, where: Screen = "flow"): string {
  let key: Key = isKey(problem.reason) ? problem.reason : "UNKNOWN";
  if (key === "CODE_INVALID" && problem.attemptsLeft === 0) key = "CODE_INVALID_LAST";
  if (where === "report" && key === "TOKEN_INVALID") key = "reportInvalid";
  if (key === "CAPTCHA_INVALID") {
    // Which proof failed: the digits, the work instead of them, or neither was given.
    const fields = new Set(problem.fields.map((f) => f.field));
    if (fields.has("pow_solution")) key = fields.has("captcha_answer") ? "captchaMissing" : "CAPTCHA_INVALID_POW";
  }
  // Long waits (an hourly limit) read better in minutes, rounded up.
  const wait =
    secondsLeft < 120 ? t("seconds", { n: secondsLeft }) : t("minutes", { n: Math.ceil(secondsLeft / 60) });
  return t(key, { n: problem.attemptsLeft ?? 0, wait });
}

/** Shows the error on the current screen — the sentence, the fields it names, a countdown that
 *  holds `retryButton` for the RetryInfo delay, or the way to start over — and moves focus to
 *  the first field in error, else to the way to start over, else to the sentence. Where focus
 *  does not land on the sentence itself, the sentence is announced once. */
function showProblem(error: unknown, retryButton?: HTMLButtonElement, where: Screen = "flow"): Problem {
  const problem = describe(error);
  const alert = screen.querySelector<HTMLElement>("#alert");
  if (!alert) return problem;
  for (const input of screen.querySelectorAll("input")) {
    input.removeAttribute("aria-invalid");
    const hint = document.getElementById(`${input.id}-hint`);
    if (hint) hint.textContent = "";
  }
  const said = sentence(problem, problem.retryAfterSeconds, where);
  const text = h("p", { class: "message", tabindex: "-1" }, said);
  alert.replaceChildren(text);
  alert.dataset.reason = problem.reason;
  if (problem.reason === "PASSWORD_POLICY") {
    // The broken rules are listed under the field (showRules), not in its hint.
    document.getElementById("new-password")?.setAttribute("aria-invalid", "true");
  } else {
    for (const violation of problem.fields) markField(violation.field, violation.description);
  }
  let target: HTMLElement = text;
  if (where === "flow" && flowIsOver(problem)) {
    // Nothing on this screen can succeed any more; only starting over is left.
    for (const control of screen.querySelectorAll<HTMLButtonElement | HTMLInputElement>("form button, form input, #screen > button")) {
      control.disabled = true;
      control.dataset.locked = "over";
    }
    const button = startOverButton();
    alert.append(button);
    target = button;
  } else if (COOLDOWNS.has(problem.reason) && problem.retryAfterSeconds > 0 && retryButton) {
    countDown(problem, text, retryButton, where);
  } else {
    const invalid = [...screen.querySelectorAll<HTMLInputElement>("input[aria-invalid=true]")].find(
      (input) => input.getClientRects().length > 0,
    );
    if (invalid) target = invalid;
  }
  target.focus();
  if (target instanceof HTMLInputElement) target.select();
  if (target !== text) announce(said, true);
  return problem;
}

/** Clears the error shown for `reasons` once the person has fixed it (a weak password made
 *  strong, the repeat made equal): the field is no longer marked, the sentence goes. */
function clearProblem(input: HTMLInputElement, ...reasons: string[]): void {
  const alert = screen.querySelector<HTMLElement>("#alert");
  if (input.getAttribute("aria-invalid") === "true") {
    input.removeAttribute("aria-invalid");
    const hint = document.getElementById(`${input.id}-hint`);
    if (hint) hint.textContent = "";
  }
  if (alert && reasons.includes(alert.dataset.reason ?? "")) {
    alert.replaceChildren();
    delete alert.dataset.reason;
  }
}

const FIELD_INPUTS: Record<string, string> = {
  login_id: "login",
  captcha_answer: "captcha-answer",
  code: "code",
  new_password: "new-password",
  new_password_confirmation: "repeat-password",
  report_code: "report-code",
};

function markField(name: string, description: string): void {
  const input = document.getElementById(FIELD_INPUTS[name] ?? "");
  if (!input) return;
  input.setAttribute("aria-invalid", "true");
  const hint = document.getElementById(`${input.id}-hint`);
  const key = `field_${name}`;
  if (hint) hint.textContent = isKey(key) ? t(key) : description;
}

/** Counts the RetryInfo delay down in the sentence, silently (it is not a live region: focus
 *  read it once), holds `button` until the end, and announces the end once. */
function countDown(problem: Problem, text: HTMLElement, button: HTMLButtonElement, where: Screen): void {
  const until = Date.now() + problem.retryAfterSeconds * 1000;
  hold(button, "cooldown");
  let shown = problem.retryAfterSeconds;
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    if (left > 0) {
      if (left !== shown) text.textContent = sentence(problem, left, where);
      shown = left;
      return;
    }
    window.clearInterval(timer);
    release(button, "cooldown");
    text.textContent = t("retryNow");
    announce(t("retryNow"));
  };
  const timer = window.setInterval(tick, 250);
  timers.push(timer);
}

// ---- step 1: login ID and captcha -> "Request" ---------------------------------------------

/** The captcha part of the first screen. */
interface CaptchaView {
  intro: HTMLElement;
  /** The picture and its two choices: another picture, or none at all. */
  pictureBox: HTMLElement;
  image: HTMLImageElement;
  another: HTMLButtonElement;
  /** "I can't read the picture": a toggle (aria-pressed) for the proof of work instead. */
  cantRead: HTMLButtonElement;
  answerField: HTMLElement;
  answer: HTMLInputElement;
  /** The proof of work under way: a sentence and a progress bar (not a live region). */
  work: HTMLElement;
  workText: HTMLElement;
  progress: HTMLProgressElement;
}

/** What an older service that does not say `check` asks for, from what it hands out. */
function inferCheck(captcha: CreateCaptchaResponse): CaptchaCheck {
  if (captcha.check !== CaptchaCheck.UNSPECIFIED) return captcha.check;
  if (captcha.imagePng.length > 0) return captcha.pow ? CaptchaCheck.DIGITS_AND_POW : CaptchaCheck.DIGITS;
  return captcha.pow ? CaptchaCheck.POW : CaptchaCheck.NONE;
}

const PICTURE_CHECKS = new Set([CaptchaCheck.DIGITS, CaptchaCheck.DIGITS_OR_POW, CaptchaCheck.DIGITS_AND_POW]);

function cantReadChosen(view: CaptchaView): boolean {
  return state.captchaCheck === CaptchaCheck.DIGITS_OR_POW && view.cantRead.getAttribute("aria-pressed") === "true";
}

/** Whether StartRecovery gets the digits, and whether it gets the proof of work. */
function proofsSent(view: CaptchaView): { digits: boolean; work: boolean } {
  const check = state.captchaCheck ?? CaptchaCheck.NONE;
  const chosen = cantReadChosen(view);
  return {
    digits: PICTURE_CHECKS.has(check) && !chosen,
    work: check === CaptchaCheck.POW || check === CaptchaCheck.DIGITS_AND_POW || chosen,
  };
}

/** Shows what this captcha asks for: the picture and the digits field only when the digits are
 *  checked (never with RECOVERY_CAPTCHA=off) and the person did not choose the way round them. */
function showCaptchaParts(view: CaptchaView): void {
  const check = state.captchaCheck ?? CaptchaCheck.NONE;
  const { digits, work } = proofsSent(view);
  view.pictureBox.hidden = !PICTURE_CHECKS.has(check);
  view.image.hidden = !digits;
  view.another.hidden = !digits;
  view.cantRead.hidden = check !== CaptchaCheck.DIGITS_OR_POW;
  view.answerField.hidden = !digits;
  if (!digits) view.answer.removeAttribute("aria-invalid");
  view.work.hidden = !work;
  view.intro.textContent = digits ? t("intro") : t("introNoPicture");
}

/** Solves `pow` in the worker (on the page's thread where workers cannot run). */
function solveInWorker(pow: PowChallenge, signal: AbortSignal, onProgress: Progress): Promise<string> {
  const onThePage = () => solvePow(pow, signal, onProgress);
  if (typeof Worker === "undefined") return onThePage();
  return new Promise<string>((resolve, reject) => {
    let worker: Worker;
    try {
      worker = new Worker(POW_WORKER_URL);
    } catch {
      onThePage().then(resolve, reject);
      return;
    }
    const stop = () => {
      worker.terminate();
      reject(new PowFailure("proof of work cancelled"));
    };
    signal.addEventListener("abort", stop, { once: true });
    worker.onmessage = (event: MessageEvent<PowMessage>) => {
      const message = event.data;
      if (message.kind === "progress") {
        onProgress(message.tried, message.total);
        return;
      }
      worker.terminate();
      signal.removeEventListener("abort", stop);
      if (message.kind === "done") resolve(message.solution);
      else reject(new PowFailure("proof of work has no solution"));
    };
    // A worker that cannot start (an old browser, a proxy rewriting the policy): the same
    // search on the page's thread, in slices.
    worker.onerror = (event) => {
      event.preventDefault();
      worker.terminate();
      signal.removeEventListener("abort", stop);
      onThePage().then(resolve, reject);
    };
    worker.postMessage(pow);
  });
}

/** Starts the proof of work of the current captcha, shown with its progress. `told`: the person
 *  asked for it, so its start and end are announced (in pow mode it simply runs). */
function startWork(view: CaptchaView, told: boolean): void {
  state.powAbort?.abort();
  state.powSolution = undefined;
  const pow = state.pow;
  if (!pow || !proofsSent(view).work) return;
  const abort = new AbortController();
  state.powAbort = abort;
  view.progress.value = 0;
  view.workText.textContent = t("powWorking");
  if (told) announce(t("powWorking"));
  const challenge: PowChallenge = {
    algorithm: pow.algorithm,
    challenge: pow.challenge,
    salt: pow.salt,
    signature: pow.signature,
    maxNumber: Number(pow.maxNumber),
  };
  const solution = solveInWorker(challenge, abort.signal, (tried, total) => {
    // The search stops wherever the number is, so the bar shows the share searched.
    view.progress.value = Math.min(99, Math.floor((tried / total) * 100));
  });
  state.powSolution = solution;
  solution.then(
    () => {
      if (abort.signal.aborted) return;
      view.progress.value = 100;
      view.workText.textContent = t("powDone");
      if (told) announce(t("powDone"));
    },
    () => {
      if (!abort.signal.aborted) view.workText.textContent = t("POW_FAILED");
    },
  );
}

async function loadCaptcha(view: CaptchaView): Promise<void> {
  state.powAbort?.abort();
  state.powSolution = undefined;
  const captcha = await client.createCaptcha({});
  state.captchaId = captcha.captchaId;
  state.captchaCheck = inferCheck(captcha);
  state.pow = captcha.pow;
  if (state.captchaUrl) URL.revokeObjectURL(state.captchaUrl);
  state.captchaUrl = undefined;
  if (captcha.imagePng.length > 0 && PICTURE_CHECKS.has(state.captchaCheck)) {
    state.captchaUrl = URL.createObjectURL(new Blob([new Uint8Array(captcha.imagePng)], { type: "image/png" }));
    view.image.src = state.captchaUrl;
  }
  showCaptchaParts(view);
  startWork(view, cantReadChosen(view));
}

function showStart(): void {
  const login = h("input", {
    type: "email",
    name: "login_id",
    autocomplete: "username",
    inputmode: "email",
    spellcheck: "false",
    "aria-required": "true",
  });
  login.value = state.loginId;
  const answer = h("input", {
    type: "text",
    name: "captcha_answer",
    inputmode: "numeric",
    autocomplete: "off",
    "aria-required": "true",
  });
  const image = h("img", { class: "captcha", alt: t("captchaAlt"), width: "200", height: "70" });
  const another = h("button", { type: "button", class: "link" }, t("newPicture"));
  const cantRead = h("button", { type: "button", class: "link toggle", "aria-pressed": "false" }, t("cantRead"));
  const workText = h("p", { id: "pow-text" });
  const progress = h("progress", { max: "100", value: "0", "aria-labelledby": "pow-text" });
  const view: CaptchaView = {
    intro: h("p", {}, t("intro")),
    pictureBox: h("div", { class: "captcha-box", hidden: true }, image, h("div", { class: "captcha-choices" }, another, cantRead)),
    image,
    another,
    cantRead,
    answerField: field("captcha-answer", t("captchaAnswer"), answer),
    answer,
    work: h("div", { class: "work", hidden: true }, workText, progress),
    workText,
    progress,
  };
  // Nothing of the captcha shows until the service said what it checks.
  view.answerField.hidden = true;
  const request = h("button", { type: "submit" }, t("request"));
  const form = h(
    "form",
    { novalidate: true },
    field("login", t("loginId"), login),
    view.pictureBox,
    view.answerField,
    view.work,
    request,
    alertBox(),
  );
  show(h("h1", {}, t("title")), view.intro, form);

  let loaded = Promise.resolve();
  const reload = () => {
    loaded = loadCaptcha(view).catch((error: unknown) => {
      showProblem(error);
    });
    return loaded;
  };
  another.addEventListener("click", () => {
    answer.value = "";
    void reload();
  });
  cantRead.addEventListener("click", () => {
    const chosen = cantRead.getAttribute("aria-pressed") !== "true";
    cantRead.setAttribute("aria-pressed", String(chosen));
    showCaptchaParts(view);
    if (chosen) {
      startWork(view, true);
    } else {
      state.powAbort?.abort();
      state.powSolution = undefined;
    }
  });
  void reload();

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (isHeld(request)) return;
    state.loginId = login.value.trim();
    void (async () => {
      const outcome = await attempt(request, async () => {
        await loaded;
        const { digits, work } = proofsSent(view);
        return client.startRecovery({
          loginId: state.loginId,
          captchaId: state.captchaId ?? "",
          captchaAnswer: digits ? answer.value.trim() : "",
          locale,
          powSolution: work && state.powSolution ? await state.powSolution : "",
          deviceToken: storedDeviceToken(),
        });
      });
      if (outcome.ok) {
        state.flow = outcome.value.flow;
        showMethods();
        return;
      }
      showProblem(outcome.error, request);
      // Any answer burns the captcha (right or wrong): every failure needs a fresh one.
      answer.value = "";
      await reload();
    })();
  });
}

// ---- step 3: the masked mailbox -> "Verify now" ---------------------------------------------

function channelName(channel: Channel): string {
  return channel === Channel.SMS ? t("channelSms") : t("channelEmail");
}

function showMethods(): void {
  const methods = state.flow?.methods ?? [];
  const list = h(
    "ul",
    { class: "methods" },
    ...methods.map((method, index) => {
      const label = h(
        "span",
        { id: `method-${index}` },
        h("span", { class: "channel" }, channelName(method.channel)),
        " ",
        h("strong", {}, method.maskedDestination),
      );
      const button = h("button", { type: "button", "aria-describedby": `method-${index}` }, t("verifyNow"));
      button.addEventListener("click", () => {
        state.method = method;
        showSend();
      });
      return h("li", {}, label, button);
    }),
  );
  show(h("h1", {}, t("methodsTitle")), h("p", {}, t("methodsIntro")), list, h("p", {}, startOverButton()));
}

// ---- step 4: "Get verification code" --------------------------------------------------------

async function sendCode(): Promise<void> {
  const response = await client.sendVerificationCode({
    flowId: state.flow?.flowId ?? "",
    channel: state.method?.channel ?? Channel.CHANNEL_UNSPECIFIED,
  });
  state.flow = response.flow;
}

function showSend(): void {
  const destination = state.method?.maskedDestination ?? "";
  const get = h("button", { type: "button" }, t("getCode"));
  show(
    h("h1", {}, t("sendTitle")),
    h("p", {}, t("sendIntro", { dest: destination })),
    get,
    alertBox(),
    h("p", {}, startOverButton()),
  );
  get.addEventListener("click", async () => {
    if (isHeld(get)) return;
    const outcome = await attempt(get, sendCode);
    if (outcome.ok) showCode();
    else showProblem(outcome.error, get);
  });
}

// ---- the known device ------------------------------------------------------------------------

/** Where the device token of the last reset on this browser is kept. It is worth a mail budget
 *  of its own for this account (an attacker who spends the anonymous one cannot lock the owner
 *  out); a missing or stale one is simply not sent, or ignored by the service. */
const DEVICE_TOKEN_KEY = "recovery.deviceToken";

function storedDeviceToken(): string {
  try {
    return localStorage.getItem(DEVICE_TOKEN_KEY) ?? "";
  } catch {
    return ""; // storage switched off (private mode, policy): the start works without it
  }
}

function storeDeviceToken(token: string): void {
  if (!token) return;
  try {
    localStorage.setItem(DEVICE_TOKEN_KEY, token);
  } catch {
    // Nothing to do: without storage this browser is simply not a known device.
  }
}

// ---- step 5: the code -> "Confirm" -----------------------------------------------------------

function showCode(): void {
  const destination = state.method?.maskedDestination ?? "";
  // The short code is digits; once an account's guess budget is spent the mail carries a long
  // code (5 groups of 4 letters and digits), so the field takes both, in any case, with the
  // hyphens or without.
  const code = h("input", {
    type: "text",
    name: "code",
    inputmode: "text",
    autocomplete: "one-time-code",
    autocapitalize: "characters",
    autocorrect: "off",
    spellcheck: "false",
    maxlength: "32",
    pattern: "[0-9A-Za-z \\-]*",
    "aria-required": "true",
  });
  const confirm = h("button", { type: "submit" }, t("confirm"));
  const resend = h("button", { type: "button", class: "secondary" }, t("resend"));
  const status = h("p", { class: "status" });
  const form = h(
    "form",
    { novalidate: true },
    field("code", t("code"), code),
    h("div", { class: "actions" }, confirm, resend),
    status,
    alertBox(),
  );
  show(h("h1", {}, t("codeTitle")), h("p", {}, t("codeIntro", { dest: destination })), form);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (isHeld(confirm)) return;
    status.textContent = "";
    const outcome = await attempt(confirm, () =>
      client.verifyCode({
        flowId: state.flow?.flowId ?? "",
        code: code.value.trim(),
      }),
    );
    if (outcome.ok) {
      state.resetToken = outcome.value.resetToken;
      showPassword();
    } else {
      showProblem(outcome.error, confirm);
    }
  });
  resend.addEventListener("click", async () => {
    if (isHeld(resend)) return;
    status.textContent = "";
    const outcome = await attempt(resend, sendCode);
    if (!outcome.ok) {
      showProblem(outcome.error, resend);
      return;
    }
    screen.querySelector("#alert")?.replaceChildren();
    status.textContent = t("codeResent");
    code.value = "";
    code.removeAttribute("aria-invalid");
    code.focus();
    announce(t("codeResent"));
  });
}

// ---- step 6: the new password twice -> "Confirm new password" -------------------------------

function showPassword(): void {
  const password = h("input", { type: "password", name: "new_password", autocomplete: "new-password", "aria-required": "true" });
  const repeat = h("input", {
    type: "password",
    name: "new_password_confirmation",
    autocomplete: "new-password",
    "aria-required": "true",
  });
  const meter = h("meter", { min: "0", max: "4", low: "2", high: "3", optimum: "4", value: "0", id: "strength" });
  const strengthText = h("span", { class: "strength-text" });
  const rules = h("ul", { class: "rules" });
  const policyStatus = h("p", { class: "policy-status" });
  const feedback = h(
    "div",
    // Not a live region: what changed is announced once (showRules), the "Checking…" never.
    { class: "feedback", id: "policy" },
    h("div", { class: "strength" }, h("label", { for: "strength" }, `${t("strength")}:`), meter, strengthText),
    policyStatus,
    rules,
  );
  const submit = h("button", { type: "submit" }, t("confirmPassword"));
  const form = h(
    "form",
    { novalidate: true },
    field("new-password", t("newPassword"), password),
    feedback,
    field("repeat-password", t("repeatPassword"), repeat),
    submit,
    alertBox(),
  );
  show(h("h1", {}, t("passwordTitle")), h("p", {}, t("passwordIntro")), form);
  password.setAttribute("aria-describedby", "new-password-hint policy");

  const levels = t("strengthLevels").split("|");
  let said = "";
  const showRules = (violations: { reason: string; description: string }[], strength: number) => {
    meter.value = strength;
    strengthText.textContent = levels[strength] ?? "";
    const sentences = violations.map((v) => ruleSentence(v.reason, v.description));
    rules.replaceChildren(...sentences.map((text) => h("li", {}, text)));
    policyStatus.textContent = password.value && violations.length === 0 ? t("policyOk") : "";
    // Said when it changes: the strength, then the rules still broken or that all are met.
    const summary = password.value
      ? [`${t("strength")}: ${levels[strength] ?? ""}.`, ...(sentences.length ? sentences : [t("policyOk")])].join(" ")
      : "";
    if (summary && summary !== said) announce(summary);
    said = summary;
    feedback.dataset.state = violations.length === 0 ? "ok" : "violations";
    // A refused password made good: no longer marked, and the refusal goes with it.
    if (password.value && violations.length === 0) clearProblem(password, "PASSWORD_POLICY");
  };

  // Live feedback from the service's own policy (ValidatePassword), debounced so typing does
  // not flood it; an answer to an older input is dropped.
  let sequence = 0;
  let debounce: number | undefined;
  password.addEventListener("input", () => {
    window.clearTimeout(debounce);
    const mine = ++sequence;
    if (!password.value) {
      showRules([], 0);
      return;
    }
    policyStatus.textContent = t("policyChecking");
    debounce = window.setTimeout(async () => {
      try {
        const answer = await client.validatePassword({ password: password.value, loginId: state.loginId });
        if (mine !== sequence) return;
        showRules(
          answer.violations.map((v) => ({ reason: v.reason, description: v.message })),
          answer.strength,
        );
      } catch (error) {
        if (mine === sequence) showProblem(error);
      }
    }, 250);
  });
  // "Not the same yet" once the repeat has left the password's path (a prefix is still on its
  // way), announced once when it appears, after typing pauses.
  let differed = false;
  let sayDiffer: number | undefined;
  const checkRepeat = () => {
    const hint = document.getElementById("repeat-password-hint");
    const differs = repeat.value.length > 0 && !password.value.startsWith(repeat.value);
    if (hint && repeat.getAttribute("aria-invalid") !== "true") hint.textContent = differs ? t("passwordsDiffer") : "";
    window.clearTimeout(sayDiffer);
    if (differs && !differed) sayDiffer = window.setTimeout(() => announce(t("passwordsDiffer")), 700);
    differed = differs;
    if (repeat.value === password.value) clearProblem(repeat, "PASSWORD_MISMATCH");
  };
  repeat.addEventListener("input", checkRepeat);
  password.addEventListener("input", () => repeat.value && checkRepeat());

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (isHeld(submit)) return;
    const outcome = await attempt(submit, () =>
      client.resetPassword({
        resetToken: state.resetToken ?? "",
        newPassword: password.value,
        newPasswordConfirmation: repeat.value,
      }),
    );
    if (outcome.ok) {
      state.resetToken = undefined;
      storeDeviceToken(outcome.value.deviceToken);
      showDone();
      return;
    }
    const problem = showProblem(outcome.error, submit);
    if (problem.reason === "PASSWORD_POLICY") {
      showRules(
        problem.fields.map((f) => ({ reason: f.reason, description: f.description })),
        Number(meter.value),
      );
    }
  });
}

/** A policy violation in the page's language; the number or class comes from the service's
 *  English message (e.g. "must be at least 8 characters"), since the policy is configurable. */
function ruleSentence(reason: string, english: string): string {
  if (!isKey(reason)) return english;
  const number = /(\d+)/.exec(english)?.[1] ?? "";
  const classes: [RegExp, Key][] = [
    [/lower-case/, "class_lower"],
    [/upper-case/, "class_upper"],
    [/digit/, "class_digit"],
    [/punctuation/, "class_symbol"],
  ];
  const what = classes.find(([pattern]) => pattern.test(english))?.[1];
  return t(reason, { n: number, what: what ? t(what) : english });
}

// ---- step 7: done ----------------------------------------------------------------------------

function showDone(): void {
  const text = t("doneText", { login: "\u0000" }).split("\u0000");
  show(
    h("h1", {}, t("doneTitle")),
    h("p", { class: "done" }, text[0] ?? "", h("strong", {}, state.loginId), text[1] ?? ""),
    h("p", {}, t("doneHint")),
  );
  state = { loginId: state.loginId };
}

async function startOver(): Promise<void> {
  const flowId = state.flow?.flowId;
  state = { loginId: state.loginId };
  showStart();
  // Ends the abandoned flow on the server too; an error here changes nothing for the person.
  if (flowId) await client.cancelRecovery({ flowId }).catch(() => undefined);
}

// ---- "It wasn't me": the page behind `[mail] report_url` ------------------------------------

/** The report page, at /report (the mail's link carries ?code=…). Opening it does nothing:
 *  mail scanners fetch every link in a message, so only the person's click on the confirm
 *  button calls ReportUnrequestedRecovery. Without a code in the address, the person types it. */
function showReport(fromLink: string): void {
  const code = h("input", {
    type: "text",
    name: "report_code",
    autocomplete: "off",
    autocapitalize: "off",
    spellcheck: "false",
    "aria-required": "true",
  });
  code.value = fromLink;
  const confirm = h("button", { type: "submit" }, t("reportConfirm"));
  const form = h(
    "form",
    { novalidate: true },
    field("report-code", t("reportCode"), code),
    h("p", { class: "report-effect", id: "report-effect" }, t("reportEffect")),
    confirm,
    alertBox(),
  );
  show(h("h1", {}, t("reportTitle")), h("p", {}, t("reportIntro")), form);
  confirm.setAttribute("aria-describedby", "report-effect");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (isHeld(confirm)) return;
    const outcome = await attempt(confirm, () => client.reportUnrequestedRecovery({ reportCode: code.value.trim() }));
    if (outcome.ok) {
      show(h("h1", {}, t("reportDoneTitle")), h("p", { class: "done" }, t("reportDoneText")), h("p", {}, t("reportDoneHint")));
    } else {
      showProblem(outcome.error, confirm, "report");
    }
  });
}

if (window.location.pathname === "/report") {
  const fromLink = new URLSearchParams(window.location.search).get("code")?.trim() ?? "";
  // The code is a credential: out of the address bar, the history and any later Referer
  // (the server also answers /report with no-store and no-referrer).
  if (window.location.search) window.history.replaceState(null, "", window.location.pathname);
  showReport(fromLink);
} else {
  showStart();
}
