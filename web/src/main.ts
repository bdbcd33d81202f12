// The reference front end of the recovery flow (SPEC §1): one screen per step, each a plain
// form, talking grpc-web to the service that serves this page. No framework: six small screens
// do not earn one, and the bundle stays small enough to embed in the binary.

import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import {
  Channel,
  RecoveryService,
  type RecoveryFlow,
  type VerificationMethod,
} from "./gen/identity/recovery/v1/recovery_pb";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { StartRecoveryRequestSchema } from "./gen/identity/recovery/v1/recovery_pb";
import { describe, type Problem } from "./errors";
import { direction, isKey, pickLocale, translator, type Key } from "./i18n";
import { solvePow, type PowChallenge } from "./pow";

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
  /** The proof-of-work answer being computed for the current captcha, if it has one. */
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

function alertBox(): HTMLElement {
  return h("div", { class: "alert", role: "alert", id: "alert" });
}

/** Replaces the screen and moves focus to its heading, so keyboard and screen-reader users
 *  land at the top of the new step. */
function show(...children: Child[]): void {
  for (const timer of timers) window.clearInterval(timer);
  timers = [];
  root.replaceChildren(...children.filter((c): c is Node | string => Boolean(c)));
  const heading = root.querySelector("h1");
  heading?.setAttribute("tabindex", "-1");
  heading?.focus();
}

function startOverButton(): HTMLButtonElement {
  const button = h("button", { type: "button", class: "secondary" }, t("startOver"));
  button.addEventListener("click", () => void startOver());
  return button;
}

async function busy<T>(buttons: HTMLButtonElement[], work: () => Promise<T>): Promise<T> {
  for (const button of buttons) button.disabled = true;
  root.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    root.removeAttribute("aria-busy");
    for (const button of buttons) if (!button.dataset.locked) button.disabled = false;
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

function sentence(problem: Problem, secondsLeft = problem.retryAfterSeconds, screen: Screen = "flow"): string {
  let key: Key = isKey(problem.reason) ? problem.reason : "UNKNOWN";
  if (key === "CODE_INVALID" && problem.attemptsLeft === 0) key = "CODE_INVALID_LAST";
  if (screen === "report" && key === "TOKEN_INVALID") key = "reportInvalid";
  // Long waits (an hourly limit) read better in minutes, rounded up.
  const wait =
    secondsLeft < 120 ? t("seconds", { n: secondsLeft }) : t("minutes", { n: Math.ceil(secondsLeft / 60) });
  return t(key, { n: problem.attemptsLeft ?? 0, wait });
}

/** Shows the error on the current screen: the sentence, the fields it names, a countdown that
 *  keeps `retryButton` disabled for the RetryInfo delay, or the way to start over. */
function showProblem(error: unknown, retryButton?: HTMLButtonElement, screen: Screen = "flow"): Problem {
  const problem = describe(error);
  const alert = root.querySelector<HTMLElement>("#alert");
  if (!alert) return problem;
  for (const input of root.querySelectorAll("input")) {
    input.removeAttribute("aria-invalid");
    const hint = document.getElementById(`${input.id}-hint`);
    if (hint) hint.textContent = "";
  }
  const text = h("p", {}, sentence(problem, problem.retryAfterSeconds, screen));
  alert.replaceChildren(text);
  if (problem.reason !== "PASSWORD_POLICY") {
    for (const violation of problem.fields) markField(violation.field, violation.description);
  }
  if (screen === "flow" && flowIsOver(problem)) {
    // Nothing on this screen can succeed any more; only starting over is left.
    for (const control of root.querySelectorAll<HTMLButtonElement | HTMLInputElement>("form button, form input, .card > button")) {
      control.disabled = true;
      control.dataset.locked = "over";
    }
    const button = startOverButton();
    alert.append(button);
    button.focus();
  }
  if (COOLDOWNS.has(problem.reason) && problem.retryAfterSeconds > 0 && retryButton) {
    countDown(problem, text, retryButton, screen);
  }
  return problem;
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

function countDown(problem: Problem, text: HTMLElement, button: HTMLButtonElement, screen: Screen): void {
  const until = Date.now() + problem.retryAfterSeconds * 1000;
  button.disabled = true;
  button.dataset.locked = "cooldown";
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    if (left > 0) {
      text.textContent = sentence(problem, left, screen);
      return;
    }
    window.clearInterval(timer);
    delete button.dataset.locked;
    button.disabled = false;
    text.textContent = t("retryNow");
  };
  const timer = window.setInterval(tick, 250);
  timers.push(timer);
}

// ---- step 1: login ID and captcha -> "Request" ---------------------------------------------

async function loadCaptcha(image: HTMLImageElement, answerField: HTMLElement): Promise<void> {
  state.powAbort?.abort();
  state.powSolution = undefined;
  const captcha = await client.createCaptcha({});
  state.captchaId = captcha.captchaId;
  if (state.captchaUrl) URL.revokeObjectURL(state.captchaUrl);
  // A pure proof-of-work captcha comes without a picture: then there is nothing to type.
  const hasPicture = captcha.imagePng.length > 0;
  answerField.hidden = !hasPicture;
  image.hidden = !hasPicture;
  if (hasPicture) {
    state.captchaUrl = URL.createObjectURL(new Blob([new Uint8Array(captcha.imagePng)], { type: "image/png" }));
    image.src = state.captchaUrl;
  }
  // SPEC §6 proof of work: present once the proto carries CreateCaptchaResponse.pow.
  const pow = (captcha as { pow?: PowChallenge }).pow;
  if (pow) {
    const abort = new AbortController();
    state.powAbort = abort;
    state.powSolution = solvePow(pow, abort.signal);
    state.powSolution.catch(() => undefined);
  }
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
  const answerField = field("captcha-answer", t("captchaAnswer"), answer);
  const request = h("button", { type: "submit" }, t("request"));
  const form = h(
    "form",
    { novalidate: true },
    field("login", t("loginId"), login),
    h("div", { class: "captcha-box" }, image, another),
    answerField,
    request,
    alertBox(),
  );
  show(h("h1", {}, t("title")), h("p", {}, t("intro")), form);
  login.focus();

  const reload = () =>
    loadCaptcha(image, answerField).catch((error: unknown) => showProblem(error));
  another.addEventListener("click", () => {
    answer.value = "";
    void reload();
  });
  void reload();

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    state.loginId = login.value.trim();
    void busy([request], async () => {
      try {
        const init: MessageInitShape<typeof StartRecoveryRequestSchema> & {
          powSolution?: string;
        } = {
          loginId: state.loginId,
          captchaId: state.captchaId ?? "",
          captchaAnswer: answer.value.trim(),
          locale,
        };
        if (state.powSolution) init.powSolution = await state.powSolution;
        const response = await client.startRecovery(init);
        state.flow = response.flow;
        showMethods();
      } catch (error) {
        const problem = showProblem(error, request);
        // Any answer burns the captcha (right or wrong): every failure needs a fresh one.
        answer.value = "";
        await reload();
        if (problem.reason === "CAPTCHA_INVALID") answer.focus();
      }
    });
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
  get.focus();
  get.addEventListener("click", () =>
    void busy([get], async () => {
      try {
        await sendCode();
        showCode();
      } catch (error) {
        showProblem(error, get);
      }
    }),
  );
}

// ---- step 5: the code -> "Confirm" -----------------------------------------------------------

function showCode(): void {
  const destination = state.method?.maskedDestination ?? "";
  const code = h("input", {
    type: "text",
    name: "code",
    inputmode: "numeric",
    autocomplete: "one-time-code",
    maxlength: "6",
    "aria-required": "true",
  });
  const confirm = h("button", { type: "submit" }, t("confirm"));
  const resend = h("button", { type: "button", class: "secondary" }, t("resend"));
  const status = h("p", { class: "status", role: "status" });
  const form = h(
    "form",
    { novalidate: true },
    field("code", t("code"), code),
    h("div", { class: "actions" }, confirm, resend),
    status,
    alertBox(),
  );
  show(h("h1", {}, t("codeTitle")), h("p", {}, t("codeIntro", { dest: destination })), form);
  code.focus();

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    status.textContent = "";
    void busy([confirm], async () => {
      try {
        const response = await client.verifyCode({
          flowId: state.flow?.flowId ?? "",
          code: code.value.trim(),
        });
        state.resetToken = response.resetToken;
        showPassword();
      } catch (error) {
        const problem = showProblem(error, confirm);
        if (!flowIsOver(problem)) code.select();
      }
    });
  });
  resend.addEventListener("click", () =>
    void busy([resend], async () => {
      status.textContent = "";
      try {
        await sendCode();
        root.querySelector("#alert")?.replaceChildren();
        status.textContent = t("codeResent");
        code.value = "";
        code.focus();
      } catch (error) {
        showProblem(error, resend);
      }
    }),
  );
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
    { class: "feedback", id: "policy", "aria-live": "polite" },
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
  password.focus();

  const levels = t("strengthLevels").split("|");
  const showRules = (violations: { reason: string; description: string }[], strength: number) => {
    meter.value = strength;
    strengthText.textContent = levels[strength] ?? "";
    rules.replaceChildren(...violations.map((v) => h("li", {}, ruleSentence(v.reason, v.description))));
    policyStatus.textContent = password.value && violations.length === 0 ? t("policyOk") : "";
    feedback.dataset.state = violations.length === 0 ? "ok" : "violations";
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
  const checkRepeat = () => {
    const hint = document.getElementById("repeat-password-hint");
    const differs = repeat.value.length > 0 && repeat.value !== password.value;
    if (hint) hint.textContent = differs ? t("passwordsDiffer") : "";
  };
  repeat.addEventListener("input", checkRepeat);
  password.addEventListener("input", () => repeat.value && checkRepeat());

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void busy([submit], async () => {
      try {
        await client.resetPassword({
          resetToken: state.resetToken ?? "",
          newPassword: password.value,
          newPasswordConfirmation: repeat.value,
        });
        state.resetToken = undefined;
        showDone();
      } catch (error) {
        const problem = showProblem(error, submit);
        if (problem.reason === "PASSWORD_POLICY") {
          showRules(
            problem.fields.map((f) => ({ reason: f.reason, description: f.description })),
            Number(meter.value),
          );
          password.setAttribute("aria-invalid", "true");
          password.focus();
        } else if (problem.reason === "PASSWORD_MISMATCH") {
          repeat.focus();
        }
      }
    });
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
  (fromLink ? confirm : code).focus();

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void busy([confirm], async () => {
      try {
        await client.reportUnrequestedRecovery({ reportCode: code.value.trim() });
        show(h("h1", {}, t("reportDoneTitle")), h("p", { class: "done" }, t("reportDoneText")), h("p", {}, t("reportDoneHint")));
      } catch (error) {
        const problem = showProblem(error, confirm, "report");
        if (problem.reason === "TOKEN_INVALID" || problem.reason === "INVALID_ARGUMENT") code.select();
      }
    });
  });
}

if (window.location.pathname === "/report") {
  showReport(new URLSearchParams(window.location.search).get("code")?.trim() ?? "");
} else {
  showStart();
}
