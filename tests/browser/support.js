// Shared by the browser tests: where the portal is, Debian's Chromium, tokens from the real
// binary, a page load that counts its bytes, and the checks every page gets.
//
// Environment (tests/integration/browser.rs sets all of it; set it yourself to run by hand
// against a running `agriportal up --demo`):
//   AGRIPORTAL_URL          the portal, e.g. http://127.0.0.1:8080
//   AGRIPORTAL_BIN          the agriportal binary (to mint and revoke tokens)
//   AGRIPORTAL_DATA_DIR     the --data-dir of the running `up` (its signing secret is there)
//   AGRIPORTAL_SCREENSHOTS  where screenshots go (a directory under target/)
//   AGRIPORTAL_CHROMIUM     the browser, /usr/bin/chromium when unset

import { execFile } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { chromium } from "playwright-core";

const run = promisify(execFile);

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set (tests/integration/browser.rs sets it; see tests/browser/support.js)`);
  }
  return value;
}

export const BASE = required("AGRIPORTAL_URL").replace(/\/+$/, "");
export const SCREENSHOTS = required("AGRIPORTAL_SCREENSHOTS");
mkdirSync(SCREENSHOTS, { recursive: true });

const LOCALES = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "services", "web", "locales");
const messages = {};

/**
 * The portal's message `key` in `lang`, read from services/web/locales (one-line Fluent
 * messages), with `{ $name }` placeables filled from `args`: the tests look for what the
 * pages say without copying their wording.
 */
export function t(lang, key, args = {}) {
  if (!messages[lang]) {
    messages[lang] = {};
    for (const line of readFileSync(join(LOCALES, lang, "main.ftl"), "utf8").split("\n")) {
      const m = /^([a-z0-9_-]+) = (.*)$/.exec(line);
      if (m) {
        messages[lang][m[1]] = m[2];
      }
    }
  }
  const text = messages[lang][key];
  if (text === undefined) {
    throw new Error(`no message ${key} in ${lang}/main.ftl`);
  }
  return text.replace(/\{ \$([a-z_]+) \}/g, (_, name) => (name in args ? String(args[name]) : `{$${name}}`));
}

/** The viewports every page is checked at. */
export const VIEWPORTS = [
  { width: 360, height: 740 },
  { width: 1280, height: 900 },
];

/** The page budget, assets included, cold cache (bytes on the wire: headers and bodies). */
export const WEIGHT_BUDGET = 100_000;

/** What axe checks: WCAG 2.0 and 2.1, levels A and AA. */
export const AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

/** Debian's Chromium, as the machine notes say it runs here (no network of its own). */
export function launch() {
  return chromium.launch({
    executablePath: process.env.AGRIPORTAL_CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/**
 * A fresh context (its own cookies and a cold cache) reading in `lang`: the `ap_lang` cookie
 * and a matching Accept-Language, so the page's address stays as the test names it; with
 * `session`, signed in by that `ap_session` cookie.
 */
export async function newContext(browser, { lang = "vi", viewport = VIEWPORTS[1], javaScriptEnabled = true, session } = {}) {
  const context = await browser.newContext({
    viewport,
    javaScriptEnabled,
    locale: lang === "en" ? "en-GB" : "vi-VN",
  });
  const url = new URL(BASE);
  // `lang: null`: no language cookie, the reader's first visit (a Vietnamese browser).
  const cookies = lang ? [{ name: "ap_lang", value: lang, domain: url.hostname, path: "/" }] : [];
  if (session) {
    cookies.push({ name: "ap_session", value: session, domain: url.hostname, path: "/", httpOnly: true });
  }
  if (cookies.length) {
    await context.addCookies(cookies);
  }
  return context;
}

async function agriportal(...args) {
  const bin = required("AGRIPORTAL_BIN");
  const dir = required("AGRIPORTAL_DATA_DIR");
  try {
    return await run(bin, ["--data-dir", dir, ...args], { encoding: "utf8" });
  } catch (err) {
    throw new Error(`agriportal ${args.join(" ")} failed: ${err.stderr || err.message}`);
  }
}

/**
 * A new token from `agriportal token mint …` (e.g. `["--role", "admin"]`): the token (alone on
 * stdout) and its id (on stderr, "token id <id> …").
 */
export async function mint(args) {
  const { stdout, stderr } = await agriportal("token", "mint", ...args);
  const token = stdout.trim();
  const id = /token id (\S+)/.exec(stderr)?.[1];
  if (!token.startsWith("ap2.") || !id) {
    throw new Error(`unexpected output of token mint: ${JSON.stringify({ stdout, stderr })}`);
  }
  return { token, id };
}

/** `agriportal token revoke <id>`. */
export async function revoke(id) {
  await agriportal("token", "revoke", id);
}

/** Signs `page` in with `token` through the form; returns the response of the submit. */
export async function signIn(page, token) {
  await page.goto(`${BASE}/signin`);
  await page.fill("#token", token);
  const [response] = await Promise.all([
    page.waitForNavigation(),
    page.click('main form[action="/signin"] button[type="submit"]'),
  ]);
  return response;
}

/**
 * Loads `path` in `page` and counts every response of the load (the page, its stylesheet,
 * script, icon and frames): bytes on the wire from `request.sizes()` (headers + body as sent)
 * and the decoded bodies. Returns the main response and the tally.
 */
export async function loadCounting(page, path) {
  const finished = [];
  const onFinished = (request) => finished.push(request);
  page.on("requestfinished", onFinished);
  const response = await page.goto(`${BASE}${path}`, { waitUntil: "load" });
  // Late requests of the load itself (the favicon is asked for after `load`).
  await page.waitForLoadState("networkidle").catch(() => {});
  page.off("requestfinished", onFinished);
  const items = await Promise.all(
    finished.map(async (request) => {
      const sizes = await request.sizes();
      const resp = await request.response();
      const body = resp ? await resp.body().catch(() => Buffer.alloc(0)) : Buffer.alloc(0);
      return {
        url: request.url().replace(BASE, ""),
        wire: sizes.responseHeadersSize + sizes.responseBodySize,
        body: body.length,
      };
    }),
  );
  const wire = items.reduce((sum, i) => sum + i.wire, 0);
  const body = items.reduce((sum, i) => sum + i.body, 0);
  return { response, weight: { wire, body, items } };
}

/** The first integer in `text`, whichever thousands separator (1.234.567 or 1,234,567). */
export function integerIn(text) {
  const match = /\d[\d.,\u00a0 ]*/.exec(text || "");
  if (!match) {
    return NaN;
  }
  return Number(match[0].replace(/[^\d]/g, ""));
}

/** Whether the page scrolls sideways (tables may scroll inside their own region). */
export function horizontalOverflow(page) {
  return page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    // What sticks out, to name it in a failure.
    wide: [...document.querySelectorAll("body *")]
      .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 0.5)
      .filter((el) => !el.closest(".table-wrap"))
      .slice(0, 5)
      .map((el) => el.outerHTML.slice(0, 160)),
  }));
}

/**
 * Figures (`.cards .figure`) that wrap inside a number: a line break between two characters
 * of a digit run such as "1.160.719.275.0 | 56 ₫", which reads as two numbers.
 */
export function brokenFigures(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll(".cards .figure")].flatMap((el) => {
      const node = el.firstChild;
      if (!node || node.nodeType !== Node.TEXT_NODE) {
        return [];
      }
      const text = node.textContent;
      const range = document.createRange();
      const tops = [...text].map((_, i) => {
        range.setStart(node, i);
        range.setEnd(node, i + 1);
        const rect = range.getClientRects()[0];
        return rect ? rect.top : null;
      });
      const lines = [];
      let start = 0;
      for (let i = 1; i < text.length; i++) {
        if (tops[i] !== null && tops[i - 1] !== null && tops[i] > tops[i - 1] + 1) {
          if (/[\d.,]/.test(text[i - 1]) && /[\d.,]/.test(text[i])) {
            lines.push(`${text.slice(start, i)} | ${text.slice(i)}`);
          }
          start = i;
        }
      }
      return lines.length ? [`${el.outerHTML} shows as "${lines.join('", "')}" (${Math.round(el.getBoundingClientRect().width)} px wide)`] : [];
    }),
  );
}

/** axe's violations, one line each with every offending element's HTML. */
export function describeViolations(violations) {
  return violations
    .map((v) => {
      const nodes = v.nodes
        .map((n) => `    ${n.target.join(" ")}: ${n.html}\n      ${(n.failureSummary || "").replace(/\n/g, "\n      ")}`)
        .join("\n");
      return `  [${v.impact}] ${v.id}: ${v.help} (${v.helpUrl})\n${nodes}`;
    })
    .join("\n");
}

export function screenshotPath(name) {
  return join(SCREENSHOTS, `${name}.png`);
}

// The latest month open for reporting (the one that ended most recently, in Vietnam time), as
// a period id: the entry form the officer of province 79 opens.
export function latestOpenMonth(now = new Date()) {
  const vn = new Date(now.getTime() + 7 * 3600 * 1000);
  const y = vn.getUTCFullYear();
  const m = vn.getUTCMonth(); // 0-based: this month - 1 is the previous month, 1-based
  return m === 0 ? `${y - 1}12` : `${y}${String(m).padStart(2, "0")}`;
}
