// Drives the dashboard in headless Chromium, as an operator would: finds an instance by
// filtering, takes it out of service, cancels another one (with the confirmation step),
// optionally takes a third out of service and back (BACK_ID), and saves a screenshot.
// Usage: node dashboard.mjs BASE_URL APP OUT_ID CANCEL_ID SCREENSHOT [BACK_ID]
// With DASHBOARD_USER and DASHBOARD_PASSWORD it signs in with HTTP Basic; with
// EXPECT_REFUSED=1 it expects the server to refuse the action and reads the page's message.
// Prints one JSON line of what it saw; exits non-zero on any failure.
import { chromium } from "playwright-core";

const [base, app, outId, cancelId, screenshot, backId] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const seen = {};
try {
  const user = process.env.DASHBOARD_USER;
  const context = await browser.newContext({
    viewport: { width: 1400, height: 1000 },
    ...(user ? { httpCredentials: { username: user, password: process.env.DASHBOARD_PASSWORD || "" } } : {}),
  });
  const page = await context.newPage();
  const refused = process.env.EXPECT_REFUSED === "1";
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text()); });
  // Answers the page did not expect (the actions' own answers are checked by the page).
  page.on("response", (r) => { if (r.status() >= 400 && !refused) errors.push(`${r.status()} ${r.url()}`); });
  await page.goto(`${base}/`);
  await page.waitForSelector("body[data-loaded=true]", { timeout: 15000 });
  seen.title = await page.title();
  // Registry data is text, never markup: an instance's metadata may say anything.
  seen.injected = await page.evaluate(() =>
    document.querySelectorAll("#instances-table img, #instances-table script").length + (document.body.dataset.pwned ? 1 : 0));
  seen.metadata = await page.textContent("#instances-table");
  seen.instances = await page.textContent("#instances");

  const row = (id) => page.locator(`#instances-table tr[data-app="${app}"][data-id="${id}"]`);
  await page.fill("#filter", outId);
  await row(outId).waitFor({ timeout: 10000 });
  seen.shown = await page.textContent("#shown");
  seen.before = await row(outId).locator(".status").textContent();
  await row(outId).getByRole("button", { name: "Take out of service" }).click();
  if (refused) {
    await page.waitForSelector("#message.error", { timeout: 15000 });
    seen.message = await page.textContent("#message");
    seen.after = await row(outId).locator(".status").textContent();
    seen.errors = errors;
    console.log(JSON.stringify(seen));
    process.exit(0);
  }
  const statusIs = (id, want) => page.waitForFunction(
    ([a, i, w]) => document.querySelector(`#instances-table tr[data-app="${a}"][data-id="${i}"] .status`)?.textContent === w,
    [app, id, want], { timeout: 15000 });
  await statusIs(outId, "OUT_OF_SERVICE");
  seen.after = await row(outId).locator(".status").textContent();
  seen.message = await page.textContent("#message");

  if (backId) {
    await page.fill("#filter", backId);
    await row(backId).getByRole("button", { name: "Take out of service" }).click();
    await statusIs(backId, "OUT_OF_SERVICE");
    await row(backId).getByRole("button", { name: "Back in service" }).click();
    await statusIs(backId, "UP");
    seen.back = await row(backId).locator(".status").textContent();
  }

  await page.fill("#filter", cancelId);
  await row(cancelId).getByRole("button", { name: "Cancel" }).click();
  await row(cancelId).getByRole("button", { name: "Confirm cancel" }).click();
  await row(cancelId).waitFor({ state: "detached", timeout: 15000 });
  seen.cancelled = true;

  await page.fill("#filter", "");
  await page.waitForTimeout(200);
  await page.screenshot({ path: screenshot, fullPage: true });
  seen.errors = errors;
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
