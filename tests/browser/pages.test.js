// Every page, at a phone's width and a desktop's, in both languages: it renders the demo's
// figures, does not scroll sideways, has no WCAG 2.0/2.1 A/AA violation axe can find, keeps its
// figures without JavaScript, and weighs at most 100 KB with its assets on a cold cache. A
// full-page screenshot of each goes to AGRIPORTAL_SCREENSHOTS; summary.json there has the
// weights and violation counts.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import AxeBuilder from "@axe-core/playwright";

import {
  AXE_TAGS,
  BASE,
  SCREENSHOTS,
  VIEWPORTS,
  WEIGHT_BUDGET,
  brokenFigures,
  describeViolations,
  horizontalOverflow,
  integerIn,
  latestOpenMonth,
  launch,
  loadCounting,
  mint,
  newContext,
  screenshotPath,
  signIn,
  t,
} from "./support.js";

const HCMC = "Thành phố Hồ Chí Minh";

async function text(page, selector) {
  return (await page.locator(selector).first().textContent())?.trim() ?? "";
}

async function tableRows(page, selector) {
  return page.locator(`${selector} tbody tr`).count();
}

// Each page: where it is, and what shows that it rendered the demo's figures (checked with and
// without JavaScript, so nothing here may rely on the page's script).
const PAGES = [
  {
    slug: "home",
    path: "/",
    async figures(page, lang) {
      const households = integerIn(await text(page, '.cards [data-live="households.onboarded"]'));
      assert.ok(households > 0, `households card shows ${households}`);
      const progress = Number(await page.locator("progress#progress").getAttribute("value"));
      assert.ok(progress > 0, `progress value ${progress}`);
      assert.equal(await tableRows(page, `[aria-label="${t(lang, "by-partner-caption")}"] table`), 2, "a row per partner");
      const regions = integerIn(await text(page, `[aria-label="${t(lang, "by-region-caption")}"] tfoot td`));
      // Not compared with the card: the live script may have refreshed the card since.
      assert.ok(regions > 0, `the regions' total households ${regions}`);
      return `households ${households}`;
    },
  },
  {
    slug: "dashboard",
    path: "/dashboard",
    async figures(page, lang) {
      assert.equal(await page.locator("figure.chart svg").count(), 1, "the chart is drawn");
      const points = await page.locator(".table-wrap.tall tbody td").allTextContents();
      assert.ok(points.length > 0, "the chart's table has rows");
      assert.ok(points.some((p) => integerIn(p) > 0), `the chart's figures: ${points.slice(0, 5)}`);
      const households = integerIn(await text(page, `[aria-label="${t(lang, "by-region-caption")}"] tfoot td`));
      assert.ok(households > 0, `nationwide households ${households}`);
      assert.equal(await tableRows(page, `[aria-label="${t(lang, "provinces-caption")}"] table`), 34, "34 provinces");
      return `households ${households}, ${points.length} chart points`;
    },
  },
  {
    slug: "dashboard-orders-month-voso",
    path: "/dashboard?metric=orders&granularity=month&partner=voso",
    async figures(page, lang) {
      assert.equal(await page.locator("#f-metric").inputValue(), "orders");
      assert.equal(await page.locator("#f-granularity").inputValue(), "month");
      assert.equal(await page.locator("#f-partner").inputValue(), "voso");
      const caption = await text(page, "figure.chart figcaption");
      assert.ok(caption.includes(t(lang, "metric-orders")), `caption names the metric: ${caption}`);
      const points = await page.locator(".table-wrap.tall tbody td").allTextContents();
      assert.ok(points.some((p) => integerIn(p) > 0), `Vỏ Sò's orders by month: ${points}`);
      return `${points.length} months of Vỏ Sò orders`;
    },
  },
  {
    slug: "province-79",
    path: "/provinces/79",
    async figures(page) {
      assert.equal(await text(page, "main h1"), HCMC);
      const households = integerIn(await text(page, ".cards .figure"));
      assert.ok(households > 0, `households ${households}`);
      assert.equal(await page.locator("figure.chart svg").count(), 1, "the province's chart is drawn");
      return `households ${households}`;
    },
  },
  {
    slug: "embed",
    path: "/embed",
    async figures(page, lang) {
      const table = `[aria-label="${t(lang, "embed-all-caption")}"] table`;
      assert.equal(await tableRows(page, table), 34, "a snippet per province");
      const snippet = await text(page, `${table} code`);
      assert.match(snippet, /^<iframe src="http[^"]+\/embed\/province\/\d\d\?lang=/);
      return "34 snippets";
    },
  },
  {
    slug: "embed-chosen-79",
    path: "/embed?province=79",
    async figures(page) {
      assert.equal(await text(page, "main h2"), HCMC);
      assert.match(await page.locator("textarea#snippet").inputValue(), /^<iframe src="http[^"]+\/embed\/province\/79\?lang=/);
      // The preview is loading="lazy": brought into view, it loads (without JavaScript, at once).
      await page.locator("main iframe").scrollIntoViewIfNeeded();
      const preview = page.frameLocator('main iframe[src^="/embed/province/79"]');
      const households = integerIn(await preview.locator(".cards .figure").first().textContent());
      assert.ok(households > 0, `households in the preview ${households}`);
      return `snippet and preview, households ${households}`;
    },
  },
  {
    slug: "embed-province-79",
    path: "/embed/province/79",
    async figures(page) {
      assert.equal(await text(page, "h1"), HCMC);
      const households = integerIn(await text(page, ".cards .figure"));
      assert.ok(households > 0, `households ${households}`);
      assert.match((await page.locator('a[target="_blank"]').getAttribute("href")) ?? "", /\/provinces\/79\?lang=/);
      return `households ${households}`;
    },
  },
  {
    slug: "signin",
    path: "/signin",
    async figures(page) {
      assert.ok(await page.locator("textarea#token").isVisible(), "the token field");
      assert.match((await page.locator('input[name="csrf"]').getAttribute("value")) ?? "", /^[0-9a-f]{64}$/);
      return "form";
    },
  },
  {
    slug: "account",
    path: "/account",
    signedIn: true,
    async figures(page, lang) {
      assert.equal(new URL(page.url()).pathname, "/account", "still signed in");
      const role = await text(page, "main tbody tr td");
      assert.equal(role, t(lang, "role-admin"));
      return role;
    },
  },
  {
    slug: "indicators",
    path: "/indicators",
    async figures(page, lang) {
      const table = `[aria-label="${t(lang, "indicators-caption")}"] table`;
      const rows = await tableRows(page, table);
      assert.ok(rows >= 18, `the catalogue has ${rows} rows`);
      // Q&A indicators have no source yet: words, never a 0.
      const qa = page.locator(`${table} tbody tr`, { has: page.locator('a[href^="/indicators/QA_"]') });
      assert.ok((await qa.count()) > 0, "Q&A indicators are listed");
      for (const value of await qa.locator("td:nth-child(3)").allTextContents()) {
        assert.equal(value.trim(), t(lang, "figure-no-source"));
      }
      return `${rows} indicators`;
    },
  },
  {
    slug: "indicator-hh-onboarded",
    path: "/indicators/HH_ONBOARDED",
    async figures(page, lang) {
      assert.equal(await page.locator('figure.chart svg[role="img"]').count(), 1, "the chart is drawn");
      assert.equal(await tableRows(page, `[aria-label="${t(lang, "provinces-caption")}"] table`), 34, "34 provinces");
      const national = integerIn(await text(page, `[aria-label="${t(lang, "indicator-national")}"] tbody td`));
      assert.ok(national > 0, `national households onboarded ${national}`);
      assert.ok((await page.locator('a[href^="/indicators/HH_ONBOARDED/provinces.csv"]').count()) === 1, "CSV beside the table");
      return `national ${national}`;
    },
  },
  {
    slug: "indicator-communes-79",
    path: "/indicators/HH_ONBOARDED/communes?province=79",
    async figures(page, lang) {
      const caption = await text(page, "main table caption");
      assert.ok(caption.includes(HCMC), `the caption names the province: ${caption}`);
      const rows = await page.locator("main table tbody tr").count();
      // Every commune of Hồ Chí Minh City from the reference, and the "no commune given" line.
      assert.ok(rows > 100, `${rows} rows`);
      const last = await text(page, "main table tbody tr:last-child th");
      assert.equal(last, t(lang, "communes-unassigned"));
      let total = 0;
      for (const value of await page.locator("main table tbody td").allTextContents()) {
        total += integerIn(value);
      }
      assert.ok(total > 0, `households in the communes and unassigned: ${total}`);
      assert.equal(await page.locator('a[href^="/indicators/HH_ONBOARDED/communes.csv?province=79"]').count(), 1, "CSV beside the table");
      return `${rows} rows, ${total} households`;
    },
  },
  {
    slug: "indicator-qa",
    path: "/indicators/QA_MEDIAN_HOURS",
    async figures(page, lang) {
      const national = await text(page, `[aria-label="${t(lang, "indicator-national")}"] tbody td`);
      assert.equal(national, t(lang, "figure-no-source"));
      return national;
    },
  },
  {
    slug: "reports",
    path: "/reports",
    signedIn: "province",
    async figures(page, lang) {
      assert.ok((await text(page, "main h1")).startsWith(t(lang, "reports-title")));
      const start = await page.locator(`main a[href="/reports/79/${latestOpenMonth()}"]`).count();
      const listed = await page.locator(`main a[href^="/reports/79/"]`).count();
      assert.ok(start + listed > 0, "the open period can be started or is listed");
      return `${listed} report link(s)`;
    },
  },
  {
    slug: "report-79",
    path: `/reports/79/${latestOpenMonth()}`,
    signedIn: "province",
    async figures(page, lang) {
      assert.ok((await text(page, "main h1")).includes(HCMC));
      const state = await text(page, `[aria-label="${t(lang, "report-state-caption")}"] tbody td`);
      assert.ok(state.length > 0, "the state in words");
      assert.ok(await page.locator("#v-TRAINED_HH").isVisible(), "a field per province-reported indicator");
      assert.equal(await page.locator('label[for="v-TRAINED_HH"]').count(), 1, "labelled");
      return state;
    },
  },
  {
    slug: "review",
    path: "/review",
    signedIn: "admin",
    async figures(page, lang) {
      assert.equal(await text(page, "main h1"), t(lang, "review-title"));
      return "queue";
    },
  },
  {
    slug: "chase",
    path: "/chase",
    signedIn: "admin",
    async figures(page, lang) {
      assert.equal(await tableRows(page, `[aria-label="${t(lang, "chase-caption")}"] table`), 34, "34 provinces");
      return "34 provinces";
    },
  },
  {
    slug: "not-found",
    path: "/nope",
    status: 404,
    async figures(page, lang) {
      assert.equal(await text(page, "main h1"), t(lang, "error-404-title"));
      return "404";
    },
  },
];

const summary = [];
let browser;
let session;
let provinceSession;

// The session a page is looked at with: the working group's for `signedIn: true` or "admin",
// province 79's officer's for "province".
function sessionFor(spec) {
  if (spec.signedIn === "province") return provinceSession;
  return spec.signedIn ? session : undefined;
}

before(async () => {
  browser = await launch();
  // One admin session for every look at /account (signing in through the form).
  const { token } = await mint(["--role", "admin"]);
  const context = await newContext(browser);
  const page = await context.newPage();
  await signIn(page, token);
  assert.equal(new URL(page.url()).pathname, "/account", "admin sign-in for the account page");
  session = (await context.cookies()).find((c) => c.name === "ap_session")?.value;
  assert.ok(session, "a session cookie");
  await context.close();
  // And one for province 79's officer (the reports and the entry form).
  const officer = await mint(["--role", "province", "--province", "79"]);
  const context79 = await newContext(browser);
  const page79 = await context79.newPage();
  await signIn(page79, officer.token);
  provinceSession = (await context79.cookies()).find((c) => c.name === "ap_session")?.value;
  assert.ok(provinceSession, "a province session cookie");
  await context79.close();
});

after(async () => {
  await browser?.close();
  writeFileSync(join(SCREENSHOTS, "summary.json"), `${JSON.stringify(summary, null, 2)}\n`);
  const lines = summary.map(
    (s) =>
      `${s.path.padEnd(58)} ${s.lang} ${String(s.width).padStart(4)}px  ${(s.wire / 1000).toFixed(1).padStart(5)} KB on the wire (${(s.body / 1000).toFixed(1)} KB decoded, ${s.requests} requests)  axe: ${s.violations} violation(s)${s.rules.length ? ` [${s.rules.join(", ")}]` : ""}, ${s.passed} rules passed${s.brokenFigures ? `; ${s.brokenFigures} figure(s) wrapped inside a number` : ""}`,
  );
  process.stderr.write(`\npages (summary.json in ${SCREENSHOTS}):\n${lines.join("\n")}\n`);
});

for (const spec of PAGES) {
  for (const lang of ["vi", "en"]) {
    for (const viewport of VIEWPORTS) {
      describe(`${spec.path} ${lang} ${viewport.width}x${viewport.height}`, () => {
        let context;
        let page;
        let loaded;
        let overflow;
        let broken;
        let axe;
        const name = `${spec.slug}-${lang}-${viewport.width}`;

        before(async () => {
          // A new context: a cold cache, so the tally counts the assets too.
          context = await newContext(browser, { lang, viewport, session: sessionFor(spec) });
          page = await context.newPage();
          loaded = await loadCounting(page, spec.path);
          overflow = await horizontalOverflow(page);
          broken = await brokenFigures(page);
          await page.screenshot({ path: screenshotPath(name), fullPage: true });
          axe = await new AxeBuilder({ page }).withTags(AXE_TAGS).analyze();
          summary.push({
            path: spec.path,
            lang,
            width: viewport.width,
            wire: loaded.weight.wire,
            body: loaded.weight.body,
            requests: loaded.weight.items.length,
            violations: axe.violations.length,
            rules: axe.violations.map((v) => v.id),
            passed: axe.passes.length,
            incomplete: axe.incomplete.map((v) => `${v.id} (${v.nodes.length})`),
            brokenFigures: broken.length,
            screenshot: `${name}.png`,
          });
        });

        after(async () => {
          await context?.close();
        });

        test("renders with the demo's figures", async (t2) => {
          assert.equal(loaded.response.status(), spec.status ?? 200);
          assert.equal(await page.locator("html").getAttribute("lang"), lang);
          t2.diagnostic(await spec.figures(page, lang));
        });

        test("no horizontal page scroll", () => {
          assert.ok(
            overflow.scrollWidth <= overflow.innerWidth,
            `scrollWidth ${overflow.scrollWidth} > innerWidth ${overflow.innerWidth}; sticking out:\n${overflow.wide.join("\n")}`,
          );
        });

        test("no figure wraps inside a number", () => {
          assert.equal(broken.length, 0, `figures split across lines:\n${broken.join("\n")}`);
        });

        test("axe (wcag2a, wcag2aa, wcag21a, wcag21aa): no violations", () => {
          assert.equal(
            axe.violations.length,
            0,
            `${axe.violations.length} violation(s) on ${spec.path} (${lang}, ${viewport.width}px):\n${describeViolations(axe.violations)}`,
          );
        });

        test(`weighs at most ${WEIGHT_BUDGET / 1000} KB with its assets, cold cache`, (t2) => {
          const { wire, body, items } = loaded.weight;
          const list = items.map((i) => `${i.url} ${i.wire} B`).join(", ");
          t2.diagnostic(`${wire} B on the wire, ${body} B decoded: ${list}`);
          assert.ok(items.length >= 2, `the page and its stylesheet at least: ${list}`);
          // Bytes on the wire (request.sizes()), and the bodies too (response.body()), which
          // count an asset a frame of the page takes from the memory cache once more.
          assert.ok(wire <= WEIGHT_BUDGET, `${wire} B on the wire > ${WEIGHT_BUDGET} B: ${list}`);
          assert.ok(body <= WEIGHT_BUDGET, `${body} B of bodies > ${WEIGHT_BUDGET} B: ${list}`);
        });

        test("keeps its figures without JavaScript", async () => {
          const noJs = await newContext(browser, {
            lang,
            viewport,
            javaScriptEnabled: false,
            session: sessionFor(spec),
          });
          try {
            const p = await noJs.newPage();
            const response = await p.goto(`${BASE}${spec.path}`);
            assert.equal(response.status(), spec.status ?? 200);
            await spec.figures(p, lang);
          } finally {
            await noJs.close();
          }
        });
      });
    }
  }
}

// The narrowest phones still in use: every page readable from 320 px wide, with no sideways
// scroll of the page (wide tables scroll inside their own region).
describe("every page at 320 px", () => {
  for (const spec of PAGES) {
    for (const lang of ["vi", "en"]) {
      test(`${spec.path} ${lang} does not scroll sideways`, async () => {
        const context = await newContext(browser, {
          lang,
          viewport: { width: 320, height: 640 },
          session: sessionFor(spec),
        });
        try {
          const page = await context.newPage();
          await page.goto(`${BASE}${spec.path}`);
          const overflow = await horizontalOverflow(page);
          assert.ok(
            overflow.scrollWidth <= overflow.innerWidth,
            `${spec.path} at 320 px is ${overflow.scrollWidth} px wide: ${overflow.wide.join(" | ")}`,
          );
        } finally {
          await context.close();
        }
      });
    }
  }
});
