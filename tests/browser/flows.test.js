// What a reader and an official do: switch language, sign in (as the working group and as a
// province), sign out, come back after the session ended; what the portal refuses (a form
// without its CSRF token, being framed except for the widget); the live figures' pause button;
// old province codes.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, describe, test } from "node:test";

import { BASE, integerIn, launch, mint, newContext, revoke, screenshotPath, signIn, t } from "./support.js";

const HCMC = "Thành phố Hồ Chí Minh";

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/** A new page in its own context; closed by the test's `after`. */
async function freshPage(options) {
  const context = await newContext(browser, options);
  return { context, page: await context.newPage() };
}

async function htmlLang(page) {
  return page.locator("html").getAttribute("lang");
}

async function notice(page) {
  const box = page.locator('main .notice[role="status"]');
  return (await box.count()) ? (await box.textContent()).trim() : "";
}

/** Whether the navigation offers "sign in" (not signed in) or "account" (signed in). */
async function navState(page) {
  if (await page.locator('nav.main a[href="/account"]').count()) {
    return "signed in";
  }
  if (await page.locator('nav.main a[href="/signin"]').count()) {
    return "signed out";
  }
  return "neither";
}

describe("language", () => {
  test("the switch on a Vietnamese page opens the English page, and the choice persists via the cookie", async () => {
    const { context, page } = await freshPage({ lang: null });
    try {
      await page.goto(`${BASE}/`);
      assert.equal(await htmlLang(page), "vi", "Vietnamese by default for a Vietnamese browser");
      const link = page.locator('header a[hreflang="en"]');
      assert.equal((await link.textContent()).trim(), t("vi", "lang-other"));
      await Promise.all([page.waitForURL(/lang=en/), link.click()]);
      assert.equal(await htmlLang(page), "en");
      assert.equal((await page.locator("main h1").textContent()).trim(), t("en", "home-title"));
      const cookie = (await context.cookies()).find((c) => c.name === "ap_lang");
      assert.equal(cookie?.value, "en", "the choice is remembered in ap_lang");
      // The next page, reached by a plain link without ?lang=, is English too.
      await Promise.all([page.waitForURL(`${BASE}/dashboard`), page.click('nav.main a[href="/dashboard"]')]);
      assert.equal(await htmlLang(page), "en");
      assert.equal((await page.locator("main h1").textContent()).trim(), t("en", "dashboard-title"));
    } finally {
      await context.close();
    }
  });

  test("the switch keeps the page's filters", async () => {
    const { context, page } = await freshPage({ lang: null });
    try {
      await page.goto(`${BASE}/dashboard?metric=orders&granularity=month&partner=voso`);
      await Promise.all([page.waitForURL(/lang=en/), page.click('header a[hreflang="en"]')]);
      const url = new URL(page.url());
      assert.equal(url.pathname, "/dashboard");
      assert.equal(url.searchParams.get("metric"), "orders");
      assert.equal(url.searchParams.get("partner"), "voso");
      assert.equal(await htmlLang(page), "en");
      assert.equal(await page.locator("#f-partner").inputValue(), "voso");
    } finally {
      await context.close();
    }
  });
});

describe("sign-in", () => {
  test("an admin token signs in: the account page shows the working group's role", async () => {
    const { token } = await mint(["--role", "admin"]);
    const { context, page } = await freshPage({ lang: "en" });
    try {
      const response = await signIn(page, token);
      assert.equal(response.status(), 200);
      assert.equal(new URL(page.url()).pathname, "/account");
      const rows = await page.locator("main tbody tr").allTextContents();
      assert.ok(rows[0].includes(t("en", "role-admin")), `role row: ${rows[0]}`);
      assert.ok(!rows.some((r) => r.includes(t("en", "account-province"))), "no province for the working group");
      assert.equal(await navState(page), "signed in");
      const session = (await context.cookies()).find((c) => c.name === "ap_session");
      assert.ok(session?.httpOnly, "the session cookie is HttpOnly");
    } finally {
      await context.close();
    }
  });

  test("a province token signs in: the account page shows the role and the province's name", async () => {
    const { token } = await mint(["--role", "province", "--province", "79"]);
    const { context, page } = await freshPage({ lang: "vi" });
    try {
      await signIn(page, token);
      assert.equal(new URL(page.url()).pathname, "/account");
      const cells = await page.locator("main tbody td").allTextContents();
      assert.equal(cells[0].trim(), t("vi", "role-province"));
      assert.equal(cells[1].trim(), HCMC);
      await page.screenshot({ path: screenshotPath("account-province-vi-1280"), fullPage: true });
    } finally {
      await context.close();
    }
  });

  test("a partner's token is refused: sign-in is for officials", async () => {
    const { token } = await mint(["--partner", "postmart"]);
    const { context, page } = await freshPage({ lang: "en" });
    try {
      const response = await signIn(page, token);
      assert.equal(response.status(), 403);
      assert.equal(new URL(page.url()).pathname, "/signin");
      assert.ok((await page.locator('[role="alert"]').textContent()).includes(t("en", "signin-failed", { reason: "" }).trim()));
      assert.equal(await navState(page), "signed out");
    } finally {
      await context.close();
    }
  });

  test("a token minted with --ttl-days 0 is already expired: sign-in refuses it", async () => {
    // `token mint --ttl-days 0` is accepted, but the token expires as it is made, so it cannot
    // open a session that expires later; the expired session is simulated by revocation below.
    const { token } = await mint(["--role", "admin", "--ttl-days", "0"]);
    const { context, page } = await freshPage({ lang: "en" });
    try {
      const response = await signIn(page, token);
      assert.equal(response.status(), 401);
      const alert = (await page.locator('[role="alert"]').textContent()).trim();
      assert.ok(alert.startsWith(t("en", "signin-failed", { reason: "" }).trim()), alert);
      assert.equal(await navState(page), "signed out");
    } finally {
      await context.close();
    }
  });

  test("sign-out ends the session and says so", async () => {
    const { token } = await mint(["--role", "admin"]);
    const { context, page } = await freshPage({ lang: "vi" });
    try {
      await signIn(page, token);
      assert.equal(await navState(page), "signed in");
      await Promise.all([page.waitForURL(/signed_out=1/), page.click('form[action="/signout"] button')]);
      assert.equal(new URL(page.url()).pathname, "/");
      assert.equal(await notice(page), t("vi", "signed-out"));
      assert.equal(await navState(page), "signed out");
      assert.equal((await context.cookies()).find((c) => c.name === "ap_session"), undefined, "cookie cleared");
      await page.goto(`${BASE}/account`);
      assert.equal(new URL(page.url()).pathname, "/signin", "the account page asks to sign in again");
    } finally {
      await context.close();
    }
  });

  test("a session whose token is revoked: the next page says the session expired, and it is signed out", async () => {
    const { token, id } = await mint(["--role", "admin"]);
    const { context, page } = await freshPage({ lang: "en" });
    try {
      await signIn(page, token);
      assert.equal(new URL(page.url()).pathname, "/account");
      await revoke(id);
      // Running services re-read the revocation list every few seconds.
      const deadline = Date.now() + 20_000;
      let said = "";
      while (Date.now() < deadline) {
        await page.goto(`${BASE}/dashboard`);
        said = await notice(page);
        if (said) {
          break;
        }
        await page.waitForTimeout(500);
      }
      assert.equal(said, t("en", "session-expired"));
      await page.screenshot({ path: screenshotPath("session-expired-en-1280"), fullPage: true });
      assert.equal(await navState(page), "signed out");
      assert.equal((await context.cookies()).find((c) => c.name === "ap_session"), undefined, "cookie cleared");
      await page.goto(`${BASE}/account`);
      assert.equal(new URL(page.url()).pathname, "/signin");
      assert.equal(await notice(page), "", "the notice is said once");
    } finally {
      await context.close();
    }
  });
});

describe("CSRF", () => {
  test("POST /signin with a wrong or a missing csrf field is refused with 403 and says why", async () => {
    const { token } = await mint(["--role", "admin"]);
    const { context, page } = await freshPage({ lang: "en" });
    try {
      await page.goto(`${BASE}/signin`); // sets the ap_csrf cookie
      const form = { token, csrf: "0".repeat(64) };
      for (const [what, fields] of [
        ["a wrong csrf", form],
        ["no csrf", { token }],
      ]) {
        const response = await page.request.post(`${BASE}/signin`, { form: fields, maxRedirects: 0 });
        assert.equal(response.status(), 403, what);
        assert.ok((await response.text()).includes(t("en", "csrf-refused")), `${what}: the refusal message`);
      }
      // The right token from another origin is refused too.
      const csrf = await page.locator('input[name="csrf"]').getAttribute("value");
      const foreign = await page.request.post(`${BASE}/signin`, {
        form: { token, csrf },
        headers: { origin: "http://elsewhere.example" },
        maxRedirects: 0,
      });
      assert.equal(foreign.status(), 403, "a cross-origin POST");
      assert.equal((await context.cookies()).find((c) => c.name === "ap_session"), undefined, "no session opened");
    } finally {
      await context.close();
    }
  });

  test("the sign-in form with its hidden csrf field tampered is refused", async () => {
    const { token } = await mint(["--role", "admin"]);
    const { context, page } = await freshPage({ lang: "vi" });
    try {
      await page.goto(`${BASE}/signin`);
      await page.locator('input[name="csrf"]').evaluate((input) => {
        input.value = "f".repeat(64);
      });
      await page.fill("#token", token);
      const [response] = await Promise.all([page.waitForNavigation(), page.click('main form button[type="submit"]')]);
      assert.equal(response.status(), 403);
      assert.equal((await page.locator('[role="alert"]').textContent()).trim(), t("vi", "csrf-refused"));
      assert.equal(await navState(page), "signed out");
    } finally {
      await context.close();
    }
  });

  test("the sign-out form with its csrf field tampered is refused and the session stays", async () => {
    const { token } = await mint(["--role", "admin"]);
    const { context, page } = await freshPage({ lang: "en" });
    try {
      await signIn(page, token);
      await page.locator('form[action="/signout"] input[name="csrf"]').evaluate((input) => {
        input.value = "tampered";
      });
      const [response] = await Promise.all([page.waitForNavigation(), page.click('form[action="/signout"] button')]);
      assert.equal(response.status(), 403);
      assert.ok((await page.locator("main").textContent()).includes(t("en", "csrf-refused")));
      await page.goto(`${BASE}/account`);
      assert.equal(new URL(page.url()).pathname, "/account", "still signed in");
    } finally {
      await context.close();
    }
  });
});

describe("framing by another origin", () => {
  let server;
  let other;
  const snippets = {};

  before(async () => {
    // The snippet a provincial department copies from /embed, in each language.
    for (const lang of ["vi", "en"]) {
      const { context, page } = await freshPage({ lang });
      await page.goto(`${BASE}/embed?province=79`);
      snippets[lang] = await page.locator("textarea#snippet").inputValue();
      await context.close();
      assert.match(snippets[lang], new RegExp(`^<iframe src="${BASE}/embed/province/79\\?lang=${lang}" `));
    }
    // That department's site: another origin (another port), pasting the snippet; and one
    // framing the dashboard, which must be refused.
    server = createServer((request, response) => {
      const lang = request.url.endsWith("en") ? "en" : "vi";
      const frame = request.url.startsWith("/dashboard")
        ? `<iframe id="portal" src="${BASE}/dashboard" title="Cổng số liệu" width="320" height="260"></iframe>`
        : snippets[lang].replace("<iframe ", '<iframe id="portal" ');
      response.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      response.end(
        `<!doctype html><html lang="${lang}"><head><meta charset="utf-8"><title>Sở Công Thương</title></head>` +
          `<body><h1>Sở Công Thương</h1>${frame}</body></html>`,
      );
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    other = `http://127.0.0.1:${server.address().port}`;
    assert.notEqual(new URL(other).origin, new URL(BASE).origin);
  });

  after(async () => {
    await new Promise((resolve) => server?.close(resolve));
  });

  for (const lang of ["vi", "en"]) {
    test(`the province widget renders in another origin's page, pasted as /embed gives it (${lang})`, async () => {
      const { context, page } = await freshPage({ lang: null });
      try {
        const framed = page.waitForResponse((r) => r.url().startsWith(`${BASE}/embed/province/79`));
        await page.goto(`${other}/widget-${lang}`);
        const response = await framed;
        assert.equal(response.status(), 200);
        assert.match(response.headers()["content-security-policy"] ?? "", /frame-ancestors \*/);
        const frame = page.frameLocator("#portal");
        await frame.locator("h1").waitFor({ timeout: 10_000 });
        assert.equal((await frame.locator("html").getAttribute("lang")), lang);
        assert.equal((await frame.locator("h1").textContent()).trim(), HCMC);
        const households = integerIn(await frame.locator(".cards .figure").first().textContent());
        assert.ok(households > 0, `households in the frame: ${households}`);
        await page.screenshot({ path: screenshotPath(`framed-widget-${lang}-1280`) });
      } finally {
        await context.close();
      }
    });

    test(`the widget fits the snippet's own frame without scrolling inside it (${lang})`, async () => {
      const { context, page } = await freshPage({ lang: null });
      try {
        await page.goto(`${other}/widget-${lang}`);
        const frame = await (await page.locator("#portal").elementHandle()).contentFrame();
        await frame.locator("h1").waitFor({ timeout: 10_000 });
        const size = await frame.evaluate(() => {
          const more = document.querySelector('a[target="_blank"]').getBoundingClientRect();
          return {
            width: window.innerWidth,
            height: window.innerHeight,
            scrollWidth: document.documentElement.scrollWidth,
            scrollHeight: document.documentElement.scrollHeight,
            moreBottom: Math.ceil(more.bottom),
          };
        });
        const snippet = snippets[lang].match(/width="(\d+)" height="(\d+)"/);
        const what = `the snippet's ${snippet[1]}×${snippet[2]} frame shows ${size.width}×${size.height} of ${size.scrollWidth}×${size.scrollHeight}; the "more on the portal" link ends at ${size.moreBottom}px`;
        assert.ok(size.scrollWidth <= size.width, what);
        assert.ok(size.scrollHeight <= size.height, what);
        assert.ok(size.moreBottom <= size.height, what);
      } finally {
        await context.close();
      }
    });
  }

  test("/dashboard in another origin's iframe is refused (frame-ancestors 'none')", async () => {
    const { context, page } = await freshPage({ lang: "vi" });
    try {
      const framed = page.waitForResponse((r) => r.url() === `${BASE}/dashboard`);
      await page.goto(`${other}/dashboard-frame`);
      const response = await framed;
      assert.match(response.headers()["content-security-policy"] ?? "", /frame-ancestors 'none'/);
      assert.equal(response.headers()["x-frame-options"], "DENY");
      const frame = await (await page.locator("#portal").elementHandle()).contentFrame();
      // The parent's `load` waited for the frame. Chromium replaces a refused frame with its
      // own error page: nothing of the portal shows.
      assert.ok(frame, "the iframe element has a frame");
      assert.match(frame.url(), /^chrome-error:/, `the frame shows Chromium's refusal, not ${frame.url()}`);
      let portalNav = 0;
      try {
        portalNav = await frame.locator("nav.main").count();
      } catch {
        portalNav = 0; // an error page that cannot even be read
      }
      assert.equal(portalNav, 0, "the dashboard's page did not render in the frame");
    } finally {
      await context.close();
    }
  });
});

describe("live figures (JavaScript on)", () => {
  test("the pause button toggles aria-pressed and stops the fetching; resume fetches again", async () => {
    const { context, page } = await freshPage({ lang: "en" });
    try {
      await page.clock.install();
      let fetches = 0;
      page.on("request", (r) => {
        if (new URL(r.url()).pathname === "/api/v1/national") {
          fetches += 1;
        }
      });
      await page.goto(`${BASE}/`);
      const box = page.locator("[data-live-control]");
      await box.waitFor({ state: "visible" });
      const button = box.locator("button");
      assert.equal(await button.getAttribute("aria-pressed"), "false");
      assert.equal((await button.textContent()).trim(), t("en", "live-pause"));
      // Every 5 s, the figures are fetched.
      const first = page.waitForResponse((r) => new URL(r.url()).pathname === "/api/v1/national");
      await page.clock.runFor(5_000);
      assert.equal((await first).status(), 200);
      await page.waitForLoadState("networkidle");
      assert.ok(fetches >= 1, `fetched ${fetches} times in 5 s`);
      const households = integerIn(await page.locator('[data-live="households.onboarded"]').textContent());
      assert.ok(households > 0, `after a refresh the card shows ${households}`);

      await button.click();
      assert.equal(await button.getAttribute("aria-pressed"), "true");
      assert.equal((await button.textContent()).trim(), t("en", "live-resume"));
      const paused = fetches;
      await page.clock.runFor(30_000);
      await page.waitForTimeout(300);
      assert.equal(fetches, paused, "no fetch while paused (30 s)");

      const again = page.waitForResponse((r) => new URL(r.url()).pathname === "/api/v1/national");
      await button.click();
      assert.equal(await button.getAttribute("aria-pressed"), "false");
      assert.equal((await button.textContent()).trim(), t("en", "live-pause"));
      await again;
      assert.ok(fetches > paused, "resume fetches at once");
    } finally {
      await context.close();
    }
  });
});

describe("live figures: a refresh keeps the page consistent", () => {
  // The figures the script fetches, made different from the page's own (more households, an
  // hour later), so that whatever the refresh leaves stale shows.
  async function refreshedPage(lang) {
    const { context, page } = await freshPage({ lang });
    await page.clock.install();
    let served;
    await page.route(`${BASE}/api/v1/national`, async (route) => {
      const response = await route.fetch();
      const body = await response.json();
      body.households.onboarded += 12_345;
      body.as_of = new Date(Date.parse(body.as_of) + 3_600_000).toISOString();
      served = body;
      await route.fulfill({ response, json: body });
    });
    await page.goto(`${BASE}/`);
    const before = {
      updated: (await page.locator("main p.muted").first().textContent()).trim(),
    };
    const refreshed = page.waitForResponse((r) => new URL(r.url()).pathname === "/api/v1/national");
    await page.clock.runFor(5_000);
    await refreshed;
    await page.waitForFunction(
      (n) => document.querySelector('[data-live="households.onboarded"]').textContent.replace(/\D/g, "") === String(n),
      served.households.onboarded,
    );
    return { context, page, served, before };
  }

  test("the progress text agrees with the progress bar and the households card after a refresh", async () => {
    const { context, page, served } = await refreshedPage("en");
    try {
      const card = integerIn(await page.locator('[data-live="households.onboarded"]').textContent());
      const bar = Number(await page.locator("progress#progress").evaluate((p) => p.value));
      const text = (await page.locator(".progress p").textContent()).trim();
      assert.equal(card, served.households.onboarded);
      assert.equal(bar, served.households.onboarded);
      assert.equal(integerIn(text), served.households.onboarded, `the progress text still says "${text}" next to a card and bar of ${card}`);
    } finally {
      await context.close();
    }
  });

  test("the 'updated at' line follows the figures a refresh shows", async () => {
    const { context, page, served, before } = await refreshedPage("en");
    try {
      const updated = (await page.locator("main p.muted").first().textContent()).trim();
      assert.notEqual(
        updated,
        before.updated,
        `after a refresh to figures as of ${served.as_of} (an hour later) the page still says "${updated}"`,
      );
    } finally {
      await context.close();
    }
  });

  test("refreshed figures are formatted as the server formats them", async () => {
    for (const lang of ["vi", "en"]) {
      const { context, page } = await refreshedPage(lang);
      try {
        const shapes = {
          vi: { plain: /^\d{1,3}(\.\d{3})*$/, tonnes: /^\d{1,3}(\.\d{3})*,\d$/, money: /^\d{1,3}(\.\d{3})*\u00a0đ$/ },
          en: { plain: /^\d{1,3}(,\d{3})*$/, tonnes: /^\d{1,3}(,\d{3})*\.\d$/, money: /^\d{1,3}(,\d{3})*\u00a0₫$/ },
        }[lang];
        for (const el of await page.locator("[data-live]").all()) {
          const kind = (await el.getAttribute("data-live-format")) || "plain";
          const shown = (await el.textContent()).trim();
          assert.match(shown, shapes[kind], `${lang} ${await el.getAttribute("data-live")}`);
        }
      } finally {
        await context.close();
      }
    }
  });
});

describe("keyboard", () => {
  test("the first Tab reaches the skip link, which shows and moves focus to the main content", async () => {
    const { context, page } = await freshPage({ lang: "vi" });
    try {
      await page.goto(`${BASE}/dashboard`);
      await page.keyboard.press("Tab");
      const focused = await page.evaluate(() => ({
        cls: document.activeElement.className,
        text: document.activeElement.textContent.trim(),
        left: document.activeElement.getBoundingClientRect().left,
      }));
      assert.equal(focused.cls, "skip");
      assert.equal(focused.text, t("vi", "skip-to-content"));
      assert.ok(focused.left >= 0, "visible when focused");
      await page.keyboard.press("Enter");
      assert.equal(await page.evaluate(() => document.activeElement.id), "main");
    } finally {
      await context.close();
    }
  });
});

describe("old province codes", () => {
  test("/provinces/77 (Bà Rịa - Vũng Tàu before 2025) redirects 308 to Hồ Chí Minh City", async () => {
    const { context, page } = await freshPage({ lang: "vi" });
    try {
      const raw = await page.request.get(`${BASE}/provinces/77`, { maxRedirects: 0 });
      assert.equal(raw.status(), 308);
      assert.equal(raw.headers().location, "/provinces/79");
      await page.goto(`${BASE}/provinces/77`);
      assert.equal(new URL(page.url()).pathname, "/provinces/79");
      assert.equal((await page.locator("main h1").textContent()).trim(), HCMC);
    } finally {
      await context.close();
    }
  });
});
