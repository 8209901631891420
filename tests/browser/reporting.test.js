// The reporting workflow in a browser without JavaScript: a province officer's entry form keeps
// what was typed and shows a refused value beside its field (aria-invalid, aria-describedby)
// with an error summary linking to it, then saves a draft (303 back to the form); the working
// group's return needs a comment, refused beside the field. Runs against `up --demo` with the
// indicators service and the gateway's indicator read model (it fails before they exist).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import AxeBuilder from "@axe-core/playwright";

import {
  AXE_TAGS,
  BASE,
  describeViolations,
  latestOpenMonth,
  launch,
  mint,
  newContext,
  screenshotPath,
  signIn,
  t,
} from "./support.js";

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/** axe-core on the entry form as a refused value leaves it, in a context with JavaScript. */
async function axeOfRefusedForm(token, lang, path) {
  const context = await newContext(browser, { lang, javaScriptEnabled: true });
  try {
    const page = await context.newPage();
    await signIn(page, token);
    await page.goto(`${BASE}${path}`);
    await page.fill("#v-TRAINED_HH", "abc");
    await Promise.all([page.waitForNavigation(), page.click('main form button[name="action"][value="save"]')]);
    assert.equal(await page.locator("#v-TRAINED_HH").getAttribute("aria-invalid"), "true");
    const axe = await new AxeBuilder({ page }).withTags(AXE_TAGS).analyze();
    assert.equal(axe.violations.length, 0, describeViolations(axe.violations));
  } finally {
    await context.close();
  }
}

describe("entry form, JavaScript off", () => {
  for (const lang of ["vi", "en"]) {
    test(`${lang}: a refused value is shown beside its field, kept, and listed at the top`, async () => {
      const { token } = await mint(["--role", "province", "--province", "79"]);
      const context = await newContext(browser, { lang, javaScriptEnabled: false });
      try {
        const page = await context.newPage();
        await signIn(page, token);
        const path = `/reports/79/${latestOpenMonth()}`;
        const opened = await page.goto(`${BASE}${path}`);
        assert.equal(opened.status(), 200);
        await page.fill("#v-TRAINED_HH", "abc");
        await page.fill("#v-TRAINING_SESSIONS", "3");
        const [refused] = await Promise.all([
          page.waitForNavigation(),
          page.click('main form button[name="action"][value="save"]'),
        ]);
        assert.equal(refused.status(), 422);
        const field = page.locator("#v-TRAINED_HH");
        assert.equal(await field.getAttribute("aria-invalid"), "true");
        assert.equal(await field.inputValue(), "abc", "what was typed is kept");
        assert.match((await field.getAttribute("aria-describedby")) ?? "", /\bv-TRAINED_HH-error\b/);
        const beside = (await page.locator("#v-TRAINED_HH-error").textContent()) ?? "";
        assert.ok(beside.includes(t(lang, "value-not-number")), `beside the field: ${beside}`);
        const summary = page.locator(".error-summary");
        assert.equal(await summary.locator("h2").textContent(), t(lang, "error-summary-title"));
        assert.equal(await summary.locator('a[href="#v-TRAINED_HH"]').count(), 1, "the summary links to the field");
        await page.screenshot({ path: screenshotPath(`report-refused-${lang}-1280`), fullPage: true });
        // axe runs as a script in the page, which this context forbids: the same refused form
        // is checked in a context with JavaScript on (the markup is the server's either way).
        await axeOfRefusedForm(token, lang, path);
        // Corrected, it saves: 303 back to the form, which says so.
        await page.fill("#v-TRAINED_HH", "12");
        const [saved] = await Promise.all([
          page.waitForNavigation(),
          page.click('main form button[name="action"][value="save"]'),
        ]);
        assert.equal(saved.status(), 200);
        assert.equal(new URL(page.url()).pathname, path);
        assert.match(new URL(page.url()).search, /done=saved/);
        assert.equal(await page.locator("#v-TRAINED_HH").inputValue(), "12");
        assert.equal(await page.locator("[aria-invalid]").count(), 0);
      } finally {
        await context.close();
      }
    });
  }

  test("a province officer is refused the review queue, in their language", async () => {
    const { token } = await mint(["--role", "province", "--province", "79"]);
    const context = await newContext(browser, { lang: "en", javaScriptEnabled: false });
    try {
      const page = await context.newPage();
      await signIn(page, token);
      const response = await page.goto(`${BASE}/review`);
      assert.equal(response.status(), 403);
      assert.equal((await page.locator("main h1").textContent())?.trim(), t("en", "error-403-title"));
    } finally {
      await context.close();
    }
  });
});
